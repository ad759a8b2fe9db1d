//! Command-line arguments, and the [`Config`] they resolve into before anything is sent.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::options::{self, SocketOptions};
use crate::probes::{Payload, min_size};
use crate::{BenchConfig, Capture, Error, PingConfig, sys};

/// The longest `--timeout` or `--deadline` accepted: a year. Longer ones are refused at once,
/// rather than overflow the clock when added to the present (`Instant + Duration` panics).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How messages are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// The datagram is the message, as the tutorial sends it.
    Plain,
    /// Each message travels in a JSON envelope with an id; the reply must carry the same id.
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

/// udptalk-client: the tutorial's UDP client, which never waits forever.
///
/// With MESSAGEs it is udp-client1.py: it sends each in turn and prints `Sent a message.` and
/// `Server message: REPLY`. Without, it is udp-client2.py: it sends each line of standard input
/// (without its line ending; an empty line is an empty datagram) and prints the bare reply,
/// prompting `Please input any message: ` on a terminal. It exits as soon as the last reply is in.
///
/// The socket is connected to the server, so datagrams from any other address are ignored.
///
/// With --encoding json each message carries an id, unanswered ones are resent (--retries), and
/// a duplicated or stray answer is dropped, never printed. A summary goes to stderr at exit when
/// anything was resent, lost or interrupted, or with -v. Ctrl-C (SIGINT), SIGTERM and SIGHUP
/// stop the run: the message in flight counts as interrupted, the summary is printed, and the
/// exit code is 128 + the signal's number.
///
/// To a multicast group, or a broadcast address with --broadcast, the socket is not connected:
/// each message is sent once and every reply from any address within --timeout is printed,
/// `Reply from ADDR: TEXT` (exit 0 if any came, 3 if none).
///
/// Exit codes (the most serious outcome seen: 4 and 7, then 3, 6, 5):
///   0  every message was answered
///   5  a reply was longer than --buffer and was cut (and reported)
///   6  the server answered with an error envelope
///   3  a message got no reply after every attempt, or --deadline passed
///   4  no server is listening: the server's host answered "port unreachable" (the run ends)
///   7  a host on the way (a firewall or router) refused the datagram with an ICMP error, named
///      with its address (the run ends)
///   2  bad usage, a message over the UDP payload limit (what was sent is said), or over the
///      path MTU with --dont-fragment
///   1  anything else (e.g. --encoding json and the reply is not an envelope)
///   130, 143, 129  stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP, after the summary
///
/// `ping` and `bench` measure the server instead (see `udptalk-client ping --help`). To send
/// the word `ping` or `bench` as a message, put `--` before it: `udptalk-client -- ping`.
#[derive(Debug, Parser)]
#[command(name = "udptalk-client", version = VERSION, verbatim_doc_comment)]
pub struct Args {
    /// Measure instead of talking: `ping` or `bench`
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Messages to send, one datagram each ("" sends an empty one); none: read standard input
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<OsString>,

    /// Server address, HOST:PORT; a host name with several addresses tries the next one when
    /// nothing listens on the first
    #[arg(long, value_name = "ADDR", default_value = proto::DEFAULT_ADDR, global = true)]
    pub server: String,

    /// How long to wait for a reply before giving up or resending (ping, bench: before it
    /// counts lost), e.g. 2s or 500ms (at most 365 days)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration,
          global = true)]
    pub timeout: Duration,

    /// plain: the datagram is the message; json: an envelope with an id
    #[arg(long, value_enum, default_value_t = Encoding::Plain, global = true)]
    pub encoding: Encoding,

    /// Resends of an unanswered message, each after a doubling wait (capped at 8 timeouts,
    /// plus up to 25% jitter). Default: 2 with --encoding json (the id lets the server answer a
    /// resend without counting it again), 0 with plain (a resend could be counted twice)
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Bound on the whole run, e.g. 10s (at most 365 days); when it passes, even while waiting
    /// for a line of input, the client prints the summary and exits with code 3 (ping and
    /// bench print their statistics, and exit 0 if anything answered)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub deadline: Option<Duration>,

    /// Longest reply kept, in bytes (1-65535; the tutorial used 1024); a longer one is cut to
    /// this and reported, never cut silently
    #[arg(long, value_name = "BYTES", default_value_t = 65_535,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub buffer: u16,

    /// human: the tutorial's lines and reports for people; json: JSON Lines on stdout, one
    /// object per event (each message's `exchange`, ping's `ping_reply`s, bench's result, the
    /// `summary`, and `exit` last; docs/output.schema.json). Errors stay text on stderr
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Output::Human,
          global = true)]
    pub output: Output,
    /// Write every datagram sent and received to FILE, a pcap capture (LINKTYPE_RAW, made-up
    /// IPv4/IPv6 and UDP headers with the real addresses and ports) that `tshark -r FILE` and
    /// Wireshark open; no root needed. The file is replaced
    #[arg(long, value_name = "FILE", global = true)]
    pub pcap: Option<PathBuf>,

    /// Show every datagram sent and received on stdout as offset, hex and ASCII lines (like
    /// `tcpdump -X`), beside the usual lines
    #[arg(long, global = true)]
    pub hexdump: bool,

    /// Print each socket system call on stderr as it is made (socket, bind, connect, send,
    /// recv, sendmmsg, recvmmsg, close...), with UTC timestamps to the microsecond: the
    /// tutorial's figure, from the real run
    #[arg(long, global = true)]
    pub trace: bool,

    /// Send from this local address (and port), bound before connecting, like `nc -s`/`-p`
    /// or `iperf3 -B`: 192.0.2.1, 192.0.2.1:4000, [2001:db8::1]:4000
    #[arg(long, value_name = "ADDR[:PORT]", global = true)]
    pub source: Option<String>,

    /// Send and receive through this interface only (SO_BINDTODEVICE, like `ping -I`); needs
    /// CAP_NET_RAW on older kernels. `ip link` lists the interfaces
    #[arg(long, value_name = "IFNAME", global = true)]
    pub interface: Option<String>,

    /// The TTL (IPv4) or hop limit (IPv6) of datagrams to a unicast address, 1-255
    #[arg(long, visible_alias = "hop-limit", value_name = "N", global = true,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,

    /// The TOS byte (IPv4) or traffic class (IPv6), 0-255: DSCP << 2 | ECN, e.g. 184 for EF
    #[arg(long, value_name = "N", global = true)]
    pub tos: Option<u8>,

    /// Never fragment (IP_PMTUDISC_DO, IPV6_DONTFRAG, like `ping -M do`): a datagram over the
    /// path MTU is refused with the MTU learned, exit 2
    #[arg(long, global = true)]
    pub dont_fragment: bool,

    /// Allow sending to a broadcast address (SO_BROADCAST); replies are collected from any
    /// address for --timeout, one line each: `Reply from ADDR: TEXT`
    #[arg(long, global = true)]
    pub broadcast: bool,

    /// The TTL or hop limit of datagrams to a multicast group (default 1: this link only)
    #[arg(long, value_name = "N", global = true)]
    pub multicast_ttl: Option<u8>,

    /// The interface datagrams to a multicast group leave by (default: the route's)
    #[arg(long, value_name = "IFNAME", global = true)]
    pub multicast_if: Option<String>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The measuring subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Like ping(8), over UDP: one probe per --interval, a line per reply, statistics at the end
    ///
    /// Each probe carries its sequence number (`seq 1.........`, padded to --size). A reply is
    /// matched to its probe by that number when the server echoes it, by id with --encoding
    /// json, and otherwise to the oldest probe awaited, so any UDP server can be pinged. A probe
    /// unanswered after --timeout counts lost; its reply, if it comes later, is shown `(late)`.
    /// Ctrl-C (or --deadline, or --count) ends it with the statistics: exit 0 if any reply came,
    /// 3 if none.
    #[command(verbatim_doc_comment)]
    Ping(PingArgs),
    /// Load the server and measure it: closed loop (--window in flight), or open loop (--rate)
    ///
    /// Closed loop, like sockperf ping-pong: --window requests in flight (1 = ping-pong), each
    /// answer's slot refilled at once, for --duration (after --warmup, not measured). Open loop,
    /// like iperf3 -u -b: --rate probes per second whatever comes back; against a
    /// `udptalk-server --mode sink`, the server's own count of what arrived is asked for at the
    /// end. A request unanswered after --timeout counts lost; at the end outstanding requests are
    /// awaited (at most --timeout), so sent = received + lost.
    /// Reports replies/s, RTT percentiles (HdrHistogram), lost, duplicated, reordered, and the
    /// highest `Access count: N` seen. Exit 0 if any reply (or the sink's report) came, 3 if none.
    #[command(verbatim_doc_comment)]
    Bench(BenchArgs),
}

/// `ping`'s own flags (the shared ones, --server, --encoding, --timeout, --deadline, -v, are
/// the client's).
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Stop after N probes (default: until Ctrl-C or --deadline)
    #[arg(long, short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Time between probes: 1s, 200ms, or seconds as a number (0.2)
    #[arg(long, short = 'i', value_name = "DURATION", default_value = "1s",
          value_parser = parse_interval)]
    pub interval: Duration,

    /// Bytes on the wire per probe, at least (and by default) 14: `seq ` and ten digits. With
    /// --encoding json the whole envelope: at least (and by default) 93
    #[arg(long, short = 's', value_name = "BYTES")]
    pub size: Option<usize>,
}

/// `bench`'s own flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How long to measure, after the warm-up: e.g. 5s, 500ms
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop after N requests (measured ones) even before --duration
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Requests in flight, closed loop (1 = ping-pong, as sockperf's); 1-4096
    #[arg(long, short = 'w', value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub window: u16,

    /// Bytes on the wire per request, at least (and by default) 14; with --encoding json the
    /// whole envelope, at least (and by default) 93
    #[arg(long, short = 's', value_name = "BYTES")]
    pub size: Option<usize>,

    /// Send exactly these bytes every time, given in hex (e.g. sockperf's
    /// 000000000000000100030000000e to drive `sockperf server`); replies are matched in order
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub payload_hex: Option<HexPayload>,

    /// Open loop: send N requests per second (e.g. 1000 or 1000/s) whatever comes back
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// With --rate: spread each send time at random by up to this much (e.g. 100us)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "rate")]
    pub jitter: Option<Duration>,

    /// Run this long before measuring, not counted (sockets, caches and CPU frequency settle);
    /// 0 for none
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration_or_zero)]
    pub warmup: Duration,
}

/// The bytes of `--payload-hex` (a type of its own: clap would take `Vec<u8>` for many values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexPayload(pub Vec<u8>);

/// How the client shows what happens on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people.
    Human,
    /// JSON Lines: one object per event (docs/output.schema.json).
    Json,
}

/// Everything the client needs, checked and resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's addresses, in the order the resolver gave them.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for each reply before the first resend.
    pub timeout: Duration,
    /// Resends of an unanswered message.
    pub retries: u32,
    /// How messages are put on the wire.
    pub encoding: Encoding,
    /// Longest reply kept, in bytes.
    pub buffer: usize,
    /// Bound on the whole run, from its start.
    pub deadline: Option<Duration>,
    /// The tutorial's lines or JSON Lines on stdout.
    pub output: Output,
    /// Copies of the datagrams (`--pcap`, `--hexdump`).
    pub capture: Capture,
    /// Print each socket system call on stderr (`--trace`).
    pub trace: bool,
    /// `--source`, `--interface`, `--ttl`, `--tos`, `--dont-fragment`, `--broadcast`, ...
    pub options: SocketOptions,
}

impl Config {
    /// A plain-text client of `server` with the default timeout and buffer.
    pub fn new(server: SocketAddr) -> Config {
        Config {
            servers: vec![server],
            timeout: Duration::from_secs(2),
            retries: 0,
            encoding: Encoding::Plain,
            buffer: proto::MAX_BUFFER,
            deadline: None,
            output: Output::Human,
            capture: Capture::default(),
            trace: false,
            options: SocketOptions::default(),
        }
    }

    /// Resolves `args.server` (an IP address and port, or a host name and port).
    pub fn from_args(args: &Args) -> Result<Config, Error> {
        let mut servers = resolve_server(&args.server)?;
        let options = SocketOptions::from_args(args)?;
        if let Some(source) = options.source {
            // A name with addresses of both families (localhost): the source's family only.
            let family = servers.clone();
            servers.retain(|addr| addr.is_ipv4() == source.is_ipv4());
            if servers.is_empty() {
                return Err(Error::Usage {
                    reason: format!(
                        "--source {source} is an {} address and --server {} has none of that \
                         family ({}); give a source of the server's family",
                        options::family_name(source.ip()),
                        args.server,
                        family
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        check_broadcast(&servers, &options)?;
        let retries = args.retries.unwrap_or(match args.encoding {
            Encoding::Json => 2,
            Encoding::Plain => 0,
        });
        if args.encoding == Encoding::Plain && retries > 0 {
            log::warn!(
                "--retries with plain text: a message resent after its answer was lost is \
                 counted twice by the server; --encoding json avoids that"
            );
        }
        Ok(Config {
            servers,
            timeout: args.timeout,
            retries,
            encoding: args.encoding,
            buffer: usize::from(args.buffer),
            deadline: args.deadline,
            output: args.output,
            capture: Capture::from_args(args),
            trace: args.trace,
            options,
        })
    }
}

impl SocketOptions {
    /// The socket options of `args`, `--source` read (an interface name in a scope resolved).
    pub fn from_args(args: &Args) -> Result<SocketOptions, Error> {
        let source = args
            .source
            .as_deref()
            .map(|text| {
                options::parse_source(text, sys::interface_index).map_err(|reason| Error::Usage {
                    reason: format!("cannot use --source {text}: {reason}"),
                })
            })
            .transpose()?;
        Ok(SocketOptions {
            source,
            interface: args.interface.clone(),
            ttl: args.ttl,
            tos: args.tos,
            dont_fragment: args.dont_fragment,
            broadcast: args.broadcast,
            multicast_ttl: args.multicast_ttl,
            multicast_if: args.multicast_if.clone(),
        })
    }
}

/// `ping` and `bench` measure one server over a connected socket: a group or broadcast
/// address, whose answers come from other addresses, is refused.
fn check_one_host(server: SocketAddr, options: &SocketOptions, what: &str) -> Result<(), Error> {
    if options.collects(server) {
        return Err(Error::Usage {
            reason: format!(
                "{what} measures one server, and {} is a group or broadcast address (answers \
                 would come from other addresses); give the server's own address, or talk to \
                 the group without `{what}`",
                server.ip()
            ),
        });
    }
    Ok(())
}

/// Refuses the limited broadcast address without `--broadcast`, before anything is sent (a
/// subnet's broadcast address is refused by the kernel when connecting, with the same words).
fn check_broadcast(servers: &[SocketAddr], options: &SocketOptions) -> Result<(), Error> {
    match servers.iter().find(|addr| options::is_broadcast(addr.ip())) {
        Some(peer) if !options.broadcast => Err(Error::BroadcastRefused { peer: *peer }),
        _ => Ok(()),
    }
}

impl PingConfig {
    /// `ping`'s configuration from the shared flags and its own.
    pub fn from_args(args: &Args, ping: &PingArgs) -> Result<PingConfig, Error> {
        let server = first_server(&args.server)?;
        let options = SocketOptions::from_args(args)?;
        check_broadcast(&[server], &options)?;
        check_one_host(server, &options, "ping")?;
        let size = ping.size.unwrap_or(min_size(args.encoding));
        check_size(size, args.encoding, server)?;
        Ok(PingConfig {
            server,
            encoding: args.encoding,
            timeout: args.timeout,
            interval: ping.interval,
            count: ping.count,
            size,
            output: args.output,
            capture: Capture::from_args(args),
            trace: args.trace,
            options,
        })
    }
}

impl BenchConfig {
    /// `bench`'s configuration from the shared flags and its own.
    pub fn from_args(args: &Args, bench: &BenchArgs) -> Result<BenchConfig, Error> {
        let server = first_server(&args.server)?;
        let options = SocketOptions::from_args(args)?;
        check_broadcast(&[server], &options)?;
        check_one_host(server, &options, "bench")?;
        let payload = match (&bench.payload_hex, bench.size) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage {
                    reason: "--payload-hex sets the bytes sent, and so their size: drop --size"
                        .to_owned(),
                });
            }
            (Some(_), None) if args.encoding == Encoding::Json => {
                return Err(Error::Usage {
                    reason: "--payload-hex sends its bytes as they are, which --encoding json \
                             would wrap in an envelope: drop one of them"
                        .to_owned(),
                });
            }
            (Some(HexPayload(bytes)), None) => {
                let max = proto::max_payload(server.ip());
                if bytes.len() > max {
                    return Err(Error::Usage {
                        reason: format!(
                            "--payload-hex is {} bytes, over the UDP payload limit of {max} \
                             bytes towards {server}: give a shorter one",
                            bytes.len()
                        ),
                    });
                }
                Payload::Fixed(bytes.clone())
            }
            (None, size) => {
                let size = size.unwrap_or(min_size(args.encoding));
                check_size(size, args.encoding, server)?;
                Payload::Probe { size }
            }
        };
        Ok(BenchConfig {
            server,
            encoding: args.encoding,
            payload,
            timeout: args.timeout,
            duration: bench.duration,
            count: bench.count,
            window: usize::from(bench.window),
            rate: bench.rate,
            jitter: bench.jitter,
            warmup: bench.warmup,
            capture: Capture::from_args(args),
            trace: args.trace,
            options,
        })
    }
}

impl Capture {
    /// `--pcap` and `--hexdump`.
    fn from_args(args: &Args) -> Capture {
        Capture {
            pcap: args.pcap.clone(),
            hexdump: args.hexdump,
        }
    }
}

/// The first address of `server`: `ping` and `bench` measure one address.
fn first_server(server: &str) -> Result<SocketAddr, Error> {
    let servers = resolve_server(server)?;
    servers.first().copied().ok_or_else(|| Error::BadServer {
        given: server.to_owned(),
        reason: "the name has no address".to_owned(),
    })
}

/// Refuses a `--size` that cannot carry a probe's sequence number, or over one datagram.
fn check_size(size: usize, encoding: Encoding, server: SocketAddr) -> Result<(), Error> {
    let min = min_size(encoding);
    let max = proto::max_payload(server.ip());
    let json = if encoding == Encoding::Json {
        " with --encoding json (the envelope included)"
    } else {
        ""
    };
    if size < min {
        return Err(Error::Usage {
            reason: format!(
                "--size {size} cannot carry a probe's sequence number{json}: the minimum is \
                 {min} bytes"
            ),
        });
    }
    if size > max {
        return Err(Error::Usage {
            reason: format!(
                "--size {size} is over the UDP payload limit of {max} bytes towards {server}: \
                 give at most {max}"
            ),
        });
    }
    Ok(())
}

/// The addresses of `server` (an IP address and port, or a host name and port), each one a
/// datagram can go to.
pub fn resolve_server(server: &str) -> Result<Vec<SocketAddr>, Error> {
    let bad = |reason: String| Error::BadServer {
        given: server.to_owned(),
        reason,
    };
    if let Some(scoped) = options::split_scoped(server, false) {
        let addr = scoped
            .and_then(|(addr, scope, port)| {
                options::scoped(addr, &scope, port, sys::interface_index)
            })
            .map_err(bad)?;
        return check_servers(server, vec![addr]);
    }
    let servers: Vec<SocketAddr> = match server.parse::<SocketAddr>() {
        Ok(addr) => vec![addr],
        Err(_) => {
            if let Ok(ip) = server.trim().parse::<std::net::IpAddr>() {
                let example = match ip {
                    std::net::IpAddr::V4(_) => format!("{ip}:50000"),
                    std::net::IpAddr::V6(_) => format!("[{ip}]:50000"),
                };
                let brackets = if ip.is_ipv6() {
                    "; an IPv6 address goes in brackets before its port"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "it has no port{brackets}: write {}, e.g. {example}",
                    example.replace("50000", "PORT")
                )));
            }
            if !server.contains(':') {
                return Err(bad("it has no port".to_owned()));
            }
            server
                .to_socket_addrs()
                .map_err(|e| bad(format!("cannot resolve it ({e})")))?
                .collect()
        }
    };
    check_servers(server, servers)
}

/// Refuses addresses no datagram can go to, and link-local ones without their interface.
fn check_servers(server: &str, servers: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Error> {
    let bad = |reason: String| Error::BadServer {
        given: server.to_owned(),
        reason,
    };
    if servers.is_empty() {
        return Err(bad("the name has no address".to_owned()));
    }
    if let Some(SocketAddr::V6(unscoped)) = servers.iter().find(|addr| {
        matches!(addr, SocketAddr::V6(v6) if v6.scope_id() == 0 && options::needs_scope(*v6.ip()))
    }) {
        return Err(bad(format!(
            "{} is a link-local address, which means nothing without its interface: write \
             [{}%IFNAME]:{} (e.g. %eth0; `ip link` lists the interfaces)",
            unscoped.ip(),
            unscoped.ip(),
            unscoped.port()
        )));
    }
    if let Some(unspecified) = servers.iter().find(|addr| addr.ip().is_unspecified()) {
        return Err(bad(format!(
            "{} is not an address a datagram can go to",
            unspecified.ip()
        )));
    }
    if let Some(zero) = servers.iter().find(|addr| addr.port() == 0) {
        return Err(bad(format!("port 0 of {} cannot be sent to", zero.ip())));
    }
    Ok(servers)
}

/// A duration as [`parse_duration`] reads it, or zero (`0`, `0s`).
fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim().trim_end_matches('s').trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// `--interval`: a duration (`200ms`), or seconds as a number (`0.2`, as ping(8) takes it).
fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_DURATION)
            .ok_or_else(|| format!("{text} seconds is out of range; write e.g. 1 or 0.2")),
        Ok(_) => Err(format!(
            "{text} is not a time between probes; write a positive number of seconds (0.2) or \
             a duration (200ms)"
        )),
        Err(_) => parse_duration(text),
    }
}

/// `--rate`: requests per second, `1000` or `1000/s`, more than zero and at most 10 million.
fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e7 => Ok(rate),
        _ => Err(format!(
            "{text} is not a rate; write requests per second, more than 0 and at most \
             10000000, e.g. 1000/s"
        )),
    }
}

/// `--payload-hex`: bytes written as pairs of hex digits, e.g. `00ff10`.
fn parse_hex(text: &str) -> Result<HexPayload, String> {
    let digits = text.trim();
    let bad = |why: String| {
        format!(
            "{why}; write the payload as pairs of hex digits, e.g. 000000000000000100030000000e"
        )
    };
    if digits.is_empty() {
        return Err(bad("the payload is empty".to_owned()));
    }
    if digits.len() % 2 != 0 {
        return Err(bad(format!("{} hex digits is an odd number", digits.len())));
    }
    if let Some((at, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "`{}` at offset {at} is not a hex digit",
            c.escape_default()
        )));
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| bad("not hex".to_owned()))
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(HexPayload)
}

/// A duration from 1ns to [`MAX_DURATION`], written as humantime reads it: `2s`, `500ms`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let max_days = MAX_DURATION.as_secs() / (24 * 60 * 60);
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the duration must be more than zero".to_owned()),
        Ok(d) if d > MAX_DURATION => Err(format!(
            "{text} is over the longest duration accepted, {max_days} days; write a shorter \
             one such as 2s or 10m"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{e}; write a duration of at most {max_days} days, such as 2s or 500ms"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_intervals_and_rates_read_as_one_sentence() {
        for refused in [parse_interval("0"), parse_interval("-1")] {
            let message = refused.err().unwrap_or_default();
            assert!(
                message.contains("200ms") && !message.contains("  "),
                "{message}"
            );
        }
        for text in ["0", "-5", "20000000/s", "fast"] {
            let message = parse_rate(text).err().unwrap_or_default();
            assert!(
                message.contains("1000/s") && !message.contains("  "),
                "{message}"
            );
        }
    }

    #[test]
    fn hex_payloads_are_read_or_refused_with_the_reason() {
        assert_eq!(parse_hex("00ff0A"), Ok(HexPayload(vec![0, 255, 10])));
        for (text, why) in [("0", "odd"), ("zz", "`z` at offset 0"), ("", "empty")] {
            let refused = parse_hex(text);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(why)),
                "{text}: {refused:?}"
            );
        }
    }

    #[test]
    fn intervals_and_rates_read_as_people_write_them() {
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("-1").is_err());
        assert_eq!(parse_rate("1000/s"), Ok(1000.0));
        assert_eq!(parse_rate("250"), Ok(250.0));
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn durations_are_refused_past_the_maximum() {
        assert_eq!(parse_duration("365days"), Ok(MAX_DURATION));
        for text in [
            "366days",
            "18446744073709551615s",
            "99999999999999999999999s",
        ] {
            let refused = parse_duration(text);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains("365 days")),
                "{text}: {refused:?}"
            );
        }
    }
}
