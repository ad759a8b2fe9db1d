//! Command-line arguments, and the [`Config`] they resolve into before anything runs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::CacheLimits;

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `Access count: N`, as udp-server2.py.
    Count,
    /// `Hello Client!!`, as udp-server1.py.
    Hello,
    /// The message itself (for an envelope, a reply with the same body).
    Echo,
    /// Nothing, like `nc -ul`: counts what arrives and, per source, the probes' sequence
    /// numbers (lost, reordered, duplicated); answers only `udptalk sink report?`, with what
    /// arrived from the asker.
    Sink,
}

/// How the server shows what it does on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The tutorial's lines, for people.
    Human,
    /// JSON Lines: one object per event (docs/output.schema.json), for jq and scripts.
    Json,
}

/// How the server reads datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// JSON objects with a `v` member are envelopes, anything else is plain text; answer in kind.
    Auto,
    /// Every datagram is plain text, as the tutorial's servers read it.
    Plain,
    /// Every datagram must be a JSON envelope; anything else gets an error envelope.
    Json,
}

/// `--version`: the crate's version and the git revision it was built from (`unknown`
/// outside a git checkout), e.g. `0.1.0 (rev 2bd6683)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("UDPTALK_GIT_REV"),
    ")"
);

/// udptalk-server: the tutorial's UDP server, which answers every datagram.
///
/// By default it is udp-server2.py: it binds 127.0.0.1:50000, counts accesses and answers
/// `Access count: N`. With `--mode hello --once` it is udp-server1.py.
///
/// The first line on stderr is `listening on udp ADDR`, with the address really bound (so
/// `--bind 127.0.0.1:0` picks a free port and tells it); on [::] it adds `(IPv4 too)`, or
/// `(IPv6 only)` with --ipv6-only. Per datagram it prints the tutorial's lines on stdout;
/// bytes that are not UTF-8, control and format characters are shown escaped (\xff, \x1b,
/// \u{202e}), here and in every message that quotes a peer.
/// A JSON request that repeats an id already answered (a resend) gets the same answer and is
/// not counted again (docs/PROTOCOL.md).
///
/// So that no forged datagram can start an endless exchange with another server (a loop), it
/// never answers: a datagram that is a server's answer (`Hello Client!!`, `Access count: N`);
/// anything from a well-known source port (0-1023: echo, DNS and the like answer whatever they
/// get); a source that sends back our last answer to it for the third time within a second.
/// These are counted as `loops`.
///
/// A datagram sent to a broadcast or multicast address is not answered (one datagram would
/// draw an answer from every server on the link): it is counted as `group-ignored`. With
/// --answer-group, or for the groups it joined with --join, the server answers it once (from
/// the receiving interface's own address). It gets only the multicast groups it joined
/// (IP_MULTICAST_ALL off).
///
/// Per-datagram lines never delay an answer: if stdout does not keep up (a slow pipe, a paused
/// terminal), lines are dropped and counted (`lines dropped N`). Ctrl-C or SIGTERM prints a
/// summary on stderr (received = counted + duplicates + malformed + rate-limited + busy +
/// loops + group-ignored; and, apart, the datagrams the kernel dropped for a full receive
/// buffer) and exits 0 within a second.
///
/// Exit codes: 0 stopped normally (signal, --idle, --once); 1 could not serve (e.g. the address
/// is in use); 2 bad usage.
#[derive(Debug, Parser)]
#[command(name = "udptalk-server", version = VERSION, verbatim_doc_comment)]
pub struct Args {
    /// Address to listen on: IPv4 or IPv6, port 0 for any free port (e.g. [::1]:0); a
    /// link-local one with its interface, by name or index ([fe80::1%eth0]:0)
    #[arg(long, value_name = "ADDR", default_value = proto::DEFAULT_ADDR, value_parser = parse_addr)]
    pub bind: SocketAddr,

    /// On an IPv6 address, serve IPv6 alone: without it `[::]` serves IPv4 too (IPV6_V6ONLY is
    /// set either way, whatever the system's default)
    #[arg(long)]
    pub ipv6_only: bool,

    /// What to answer: `Access count: N`, `Hello Client!!`, the message itself, or nothing (sink)
    #[arg(long, value_enum, default_value_t = Mode::Count)]
    pub mode: Mode,

    /// Exit after the first datagram (with --mode hello: udp-server1.py)
    #[arg(long)]
    pub once: bool,

    /// Exit after this long without a datagram, e.g. 30s or 500ms
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle: Option<Duration>,

    /// How to read datagrams: auto answers each in the encoding it came in
    #[arg(long, value_enum, default_value_t = Encoding::Auto)]
    pub encoding: Encoding,

    /// Longest message kept, in bytes (1-65535; the tutorial used 4096). Longer datagrams are
    /// cut to this and reported with their real length, never cut silently; an envelope
    /// longer than this is refused with `too_large`
    #[arg(long, value_name = "BYTES", default_value_t = 65_535,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub buffer: u16,

    /// Datagrams per second accepted from each source IP, e.g. 1000/s (bursts up to twice
    /// that); 0 turns it off. Default: off on loopback binds, 1000/s on any other (wildcards
    /// included). Datagrams over the limit are dropped unanswered and counted
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<u32>,

    /// Print no per-datagram lines (the summary is still printed at exit)
    #[arg(long, short)]
    pub quiet: bool,

    /// stdout as the tutorial's lines (human) or as JSON Lines (json: `listening`, one
    /// `datagram` object per datagram, `summary`, `exit`; docs/output.schema.json). Errors and
    /// log lines stay text on stderr, as does the `listening on udp ADDR` line
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Output::Human)]
    pub output: Output,

    /// Threads serving the address, each with its own socket (SO_REUSEPORT, Linux only; 1-64).
    /// A peer always reaches the same worker; access numbers and the summary cover them all
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,

    /// Write every datagram received and sent to FILE, a pcap capture (LINKTYPE_RAW, made-up
    /// IPv4/IPv6 and UDP headers with the real addresses and ports) that `tshark -r FILE` and
    /// Wireshark open; no root needed. The file is replaced; written at exit at the latest
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Show every datagram received and sent on stdout as offset, hex and ASCII lines (like
    /// `tcpdump -X`), beside the tutorial's lines (also with --quiet)
    #[arg(long)]
    pub hexdump: bool,

    /// Answer datagrams sent to a broadcast or multicast address (ignored and counted as
    /// group-ignored without it), once, from the receiving interface's own address
    #[arg(long)]
    pub answer_group: bool,

    /// Join multicast GROUP on interface IFNAME (a name or an index) and answer datagrams
    /// sent to it, e.g. 239.1.2.3%eth0 or ff12::1%eth0; repeatable. Needs a wildcard --bind
    /// (0.0.0.0, [::]) or the group's own address
    #[arg(long, value_name = "GROUP%IFNAME", value_parser = parse_join)]
    pub join: Vec<Join>,

    /// Ask the kernel for a receive buffer of BYTES (SO_RCVBUF; default 2 MiB, capped by the
    /// sysctl net.core.rmem_max). Datagrams that find it full are dropped by the kernel and
    /// counted in the summary
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub recv_buffer: Option<usize>,

    /// Print each socket system call on stderr as it is made (socket, bind, recvfrom,
    /// sendto, recvmmsg, close...), with UTC timestamps to the microsecond: the tutorial's
    /// figure, from the real run
    #[arg(long)]
    pub trace: bool,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Everything the server needs, checked and parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind.
    pub bind: SocketAddr,
    /// On an IPv6 address, serve IPv6 alone (`IPV6_V6ONLY`); otherwise `[::]` serves IPv4 too.
    pub ipv6_only: bool,
    /// What to answer.
    pub mode: Mode,
    /// Stop after the first datagram.
    pub once: bool,
    /// Stop after this long without a datagram.
    pub idle: Option<Duration>,
    /// How to read datagrams.
    pub encoding: Encoding,
    /// Longest message kept, in bytes.
    pub buffer: usize,
    /// No per-datagram lines on stdout.
    pub quiet: bool,
    /// The tutorial's lines or JSON Lines on stdout.
    pub output: Output,
    /// The per-source rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// Threads serving the address, each with its own socket.
    pub workers: usize,
    /// The reply cache's caps (not a flag: the defaults are sized for any real load; tests
    /// shrink them to reach `busy`).
    pub cache: CacheLimits,
    /// Where to write the capture of every datagram (`--pcap`).
    pub pcap: Option<PathBuf>,
    /// Show every datagram as a hex dump on stdout (`--hexdump`).
    pub hexdump: bool,
    /// Print each socket system call on stderr (`--trace`).
    pub trace: bool,
    /// Answer datagrams sent to any broadcast or multicast address (`--answer-group`).
    pub answer_group: bool,
    /// Multicast groups to join, and answer (`--join`).
    pub joins: Vec<Join>,
    /// The receive buffer to ask for (`--recv-buffer`); `None`: the default,
    /// [`RECEIVE_BUFFER_BYTES`](crate::RECEIVE_BUFFER_BYTES).
    pub recv_buffer: Option<usize>,
}

/// An interface, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// By name (`eth0`).
    Name(String),
    /// By index (`2`, as `ip link` numbers them).
    Index(u32),
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Name(name) => f.write_str(name),
            Interface::Index(index) => write!(f, "{index}"),
        }
    }
}

/// `--join GROUP%IFNAME`: a multicast group to join on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The group's address (multicast).
    pub group: IpAddr,
    /// The interface to join it on.
    pub interface: Interface,
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%{}", self.group, self.interface)
    }
}

/// Parses `--join`: `239.1.2.3%eth0`, `ff12::1%eth0`, `ff02::1:3%2`.
pub fn parse_join(text: &str) -> Result<Join, String> {
    let Some((group, interface)) = text.rsplit_once('%') else {
        return Err(format!(
            "`{text}` names no interface; write GROUP%IFNAME, e.g. 239.1.2.3%eth0 or \
             ff12::1%eth0 (`ip link` lists the interfaces)"
        ));
    };
    let group: IpAddr = group
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            format!("`{group}` is not an IP address; write a multicast group, e.g. 239.1.2.3%eth0")
        })?;
    if !group.is_multicast() {
        return Err(format!(
            "{group} is not a multicast address (224.0.0.0/4 or ff00::/8); --join takes a \
             group, e.g. 239.1.2.3%eth0 (for broadcasts, use --answer-group)"
        ));
    }
    let interface = if interface.is_empty() {
        return Err(format!(
            "`{text}` names no interface after %; write e.g. {group}%eth0 (`ip link` lists them)"
        ));
    } else if let Ok(index) = interface.parse::<u32>() {
        Interface::Index(index)
    } else {
        Interface::Name(interface.to_owned())
    };
    Ok(Join { group, interface })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_names_a_multicast_group_and_an_interface() {
        assert_eq!(
            parse_join("239.1.2.3%eth0"),
            Ok(Join {
                group: "239.1.2.3".parse().unwrap(),
                interface: Interface::Name("eth0".to_owned()),
            })
        );
        let v6 = parse_join("ff02::1:3%2").unwrap();
        assert_eq!(
            (v6.to_string(), v6.interface),
            ("ff02::1:3%2".to_owned(), Interface::Index(2))
        );
        for (bad, says) in [
            ("239.1.2.3", "names no interface"),
            ("239.1.2.3%", "names no interface"),
            ("10.1.2.3%eth0", "not a multicast address"),
            ("group%eth0", "not an IP address"),
        ] {
            let error = parse_join(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_scoped_bind_address_names_its_interface() {
        assert_eq!(
            scoped_by_name("[fe80::1%eth0]:7"),
            Some(("fe80::1".parse().unwrap(), "eth0", 7))
        );
        assert_eq!(scoped_by_name("[fe80::1]:7"), None);
        assert_eq!(scoped_by_name("fe80::1%eth0"), None);
        assert_eq!(
            parse_addr("[fe80::1%3]:7").map(|a| a.to_string()),
            Ok("[fe80::1%3]:7".to_owned())
        );
        let lo = parse_addr("[fe80::1%lo]:7");
        if cfg!(target_os = "linux") {
            assert!(lo.is_ok_and(|a| matches!(a, SocketAddr::V6(v6) if v6.scope_id() > 0)));
        }
        let missing = parse_addr("[fe80::1%no-such-if0]:7").unwrap_err();
        assert!(missing.contains("ip link"), "{missing}");
    }
}

/// Parses `--recv-buffer`: a number of bytes, at least 1 KiB.
fn parse_bytes(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1024..=i32::MAX as usize).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "{text} bytes is out of range; write between 1024 and 2147483647, e.g. 8388608"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a number of bytes; write e.g. 8388608 (8 MiB)"
        )),
    }
}

/// A token bucket's refill rate and depth, per source IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Datagrams per second, sustained.
    pub per_second: u32,
    /// Datagrams at once, after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// The limit on servers reachable from the network unless `--rate-limit` says otherwise:
    /// generous for any real client, a wall for a flood from one source.
    pub const NETWORK_DEFAULT: RateLimit = RateLimit::per_second(1_000);

    /// `per_second`, with bursts of twice that.
    pub const fn per_second(per_second: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst: per_second.saturating_mul(2),
        }
    }

    /// The limit for a server on `bind` given `--rate-limit` (`Some(0)` turns it off).
    pub fn for_bind(bind: SocketAddr, flag: Option<u32>) -> Option<RateLimit> {
        match flag {
            Some(0) => None,
            Some(n) => Some(RateLimit::per_second(n)),
            None if bind.ip().to_canonical().is_loopback() => None,
            None => Some(RateLimit::NETWORK_DEFAULT),
        }
    }
}

impl Config {
    /// The tutorial's server (`udp-server2.py`) on `bind`.
    pub fn new(bind: SocketAddr) -> Config {
        Config {
            bind,
            ipv6_only: false,
            mode: Mode::Count,
            once: false,
            idle: None,
            encoding: Encoding::Auto,
            buffer: proto::MAX_BUFFER,
            quiet: false,
            output: Output::Human,
            rate_limit: RateLimit::for_bind(bind, None),
            workers: 1,
            cache: CacheLimits::default(),
            pcap: None,
            hexdump: false,
            trace: false,
            answer_group: false,
            joins: Vec::new(),
            recv_buffer: None,
        }
    }
}

impl Args {
    /// The combinations of flags that cannot work, said as what to do instead (clap checks
    /// each flag alone).
    pub fn check(&self) -> Result<(), String> {
        if self.ipv6_only
            && let SocketAddr::V6(v6) = self.bind
            && v6.ip().to_ipv4_mapped().is_some()
        {
            return Err(format!(
                "--ipv6-only and --bind {} contradict: an IPv4-mapped address serves IPv4 \
                 alone; drop --ipv6-only, or bind an IPv6 address (e.g. [::]:{})",
                self.bind,
                self.bind.port()
            ));
        }
        if self.ipv6_only && self.bind.is_ipv4() {
            return Err(format!(
                "--ipv6-only applies to an IPv6 address, and --bind {} is IPv4; bind an IPv6 \
                 address (e.g. [::]:{}) or drop --ipv6-only",
                self.bind,
                self.bind.port()
            ));
        }
        if self.workers > 1 && self.once {
            return Err(format!(
                "--once takes exactly one datagram, which one worker does; drop --workers {} \
                 or --once",
                self.workers
            ));
        }
        check_joins(self.bind, self.ipv6_only, &self.join)?;
        if self.workers > 1 && !cfg!(target_os = "linux") {
            return Err(
                "--workers above 1 needs Linux (SO_REUSEPORT spreading peers across sockets); \
                 leave it at 1 here"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// What `--join` needs: a socket that receives the group's datagrams (bound to a wildcard
/// address or to the group itself) of the group's family.
pub fn check_joins(bind: SocketAddr, ipv6_only: bool, joins: &[Join]) -> Result<(), String> {
    let ip = bind.ip();
    for join in joins {
        let wildcard = ip.to_canonical().is_unspecified();
        if !wildcard && ip.to_canonical() != join.group {
            return Err(format!(
                "--join {join}: a socket bound to {ip} gets no datagram sent to {}; bind a \
                 wildcard address (--bind 0.0.0.0:{port} or [::]:{port}) or the group itself",
                join.group,
                port = bind.port()
            ));
        }
        match (join.group, bind) {
            (IpAddr::V6(_), SocketAddr::V4(_)) => {
                return Err(format!(
                    "--join {join}: an IPv6 group needs an IPv6 socket, and --bind {bind} is \
                     IPv4; bind [::]:{}",
                    bind.port()
                ));
            }
            (IpAddr::V4(_), SocketAddr::V6(v6))
                if ipv6_only || v6.ip().to_ipv4_mapped().is_none() && !wildcard =>
            {
                return Err(format!(
                    "--join {join}: an IPv4 group needs a socket that serves IPv4; bind \
                     0.0.0.0:{} or [::] without --ipv6-only",
                    bind.port()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

impl From<&Args> for Config {
    fn from(args: &Args) -> Config {
        Config {
            bind: args.bind,
            ipv6_only: args.ipv6_only,
            mode: args.mode,
            once: args.once,
            idle: args.idle,
            encoding: args.encoding,
            buffer: usize::from(args.buffer),
            quiet: args.quiet,
            output: args.output,
            rate_limit: RateLimit::for_bind(args.bind, args.rate_limit),
            workers: usize::from(args.workers),
            cache: CacheLimits::default(),
            pcap: args.pcap.clone(),
            hexdump: args.hexdump,
            trace: args.trace,
            answer_group: args.answer_group,
            joins: args.join.clone(),
            recv_buffer: args.recv_buffer,
        }
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    // A link-local address with its interface by name: `[fe80::1%eth0]:0`.
    if let Some((ip, name, port)) = scoped_by_name(text) {
        let index = crate::sys::interface_index(name).map_err(|e| {
            format!("`{text}`: no interface {name} ({e}); `ip link` lists them, by name and index")
        })?;
        return Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
            ip, port, 0, index,
        )));
    }
    Err(format!(
        "`{text}` is not an IP address with a port; write e.g. 127.0.0.1:50000 or [::1]:0 \
         (a link-local one with its interface: [fe80::1%eth0]:0)"
    ))
}

/// `[fe80::1%eth0]:50000` split into the address, the interface's name and the port.
fn scoped_by_name(text: &str) -> Option<(std::net::Ipv6Addr, &str, u16)> {
    let (inside, port) = text.strip_prefix('[')?.rsplit_once("]:")?;
    let (ip, name) = inside.split_once('%')?;
    Some((ip.parse().ok()?, name, port.parse().ok()?))
}

/// The longest duration any option takes: 365 days. Longer ones could not be added to a
/// clock reading on every platform; no wait of a UDP tool needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the duration must be more than zero".to_owned()),
        Ok(d) if d > MAX_DURATION => Err(format!(
            "{text} is longer than the longest duration accepted, 365 days; write a shorter one"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; write a duration such as 30s, 500ms or 2m")),
    }
}

fn parse_rate(text: &str) -> Result<u32, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate; write datagrams per second, e.g. 1000/s (0 turns the limit off)"))
}
