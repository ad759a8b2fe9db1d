//! The client's one error type: what ends a run before its input is done, worded for the user.
//! (A message that gets no answer does not end the run: it is an [`crate::Outcome`].)

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use proto::DecodeError;
use proto::text::Printable;

use crate::Encoding;
use crate::icmp::{Meaning, PathError};

/// What ends a run early.
#[derive(Debug)]
pub enum Error {
    /// Occurs when `--server` names no address udptalk can use.
    BadServer {
        /// What was given.
        given: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Occurs when a message or a line of input does not fit in one datagram to the server.
    TooLarge {
        /// Which message.
        which: Which,
        /// Its length in bytes.
        len: usize,
        /// Its length once escaped for a JSON envelope, when that differs.
        escaped: Option<usize>,
        /// The longest message a datagram to the server can carry (in JSON mode, the payload
        /// limit less the envelope around the body).
        limit: usize,
        /// How it would have been sent.
        encoding: Encoding,
    },
    /// Occurs when a message for a JSON envelope is not UTF-8 text.
    NotText {
        /// Which message.
        which: Which,
        /// Offset of the first byte that is not UTF-8.
        valid_up_to: usize,
    },
    /// Occurs when a command-line message is not valid Unicode on a system that passes
    /// arguments as Unicode (Windows).
    ArgNotUnicode {
        /// The message's number, from 1.
        number: usize,
    },
    /// Occurs when `ping` or `bench` is given flags that cannot work together or a size that
    /// cannot carry a probe.
    Usage {
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// Occurs when every address of the server answered ICMP port unreachable: nothing listens.
    Refused {
        /// The (last) address tried.
        peer: SocketAddr,
    },
    /// Occurs when a host on the way to the server (a firewall or router), not the server,
    /// refused the datagram with an ICMP error (port, host or network unreachable, TTL
    /// exceeded), or anyone, the server's host included, answered "administratively
    /// prohibited" (a firewall's `reject`).
    PathRefused {
        /// The server.
        peer: SocketAddr,
        /// The ICMP error, with who sent it.
        error: PathError,
    },
    /// Occurs with `--dont-fragment` when a datagram is over the path MTU.
    TooBigForPath {
        /// The server.
        peer: SocketAddr,
        /// The datagram's length.
        len: usize,
        /// The path MTU the kernel learned.
        mtu: u32,
        /// The longest UDP payload that fits it.
        max: usize,
        /// The error, with who said it (`None`: only the kernel's cached MTU is known).
        error: Option<PathError>,
    },
    /// Occurs when a broadcast address is given without `--broadcast`.
    BroadcastRefused {
        /// The address.
        peer: SocketAddr,
    },
    /// Occurs when `--source` cannot be bound.
    Source {
        /// The address asked for.
        source_addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when `--interface` or `--multicast-if` names no interface the socket can use.
    Interface {
        /// Which flag.
        flag: &'static str,
        /// The name given.
        name: String,
        /// What the system said; `None` when there is no such interface.
        source: Option<io::Error>,
    },
    /// Occurs when a socket option asked for cannot be set.
    Option {
        /// Which flag.
        flag: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when a JSON-mode client gets a reply that is no envelope at all (not a JSON object
    /// with a `v` member): the server speaks plain text.
    NotEnvelope {
        /// The server.
        peer: SocketAddr,
        /// What is wrong with it.
        detail: String,
    },
    /// Occurs when a JSON-mode client gets an envelope it cannot read: another version, or a
    /// malformed one.
    UnreadableEnvelope {
        /// The server.
        peer: SocketAddr,
        /// What is wrong with it.
        error: DecodeError,
    },
    /// Occurs when the socket fails in a way that says nothing about the server.
    Socket {
        /// What was being done.
        doing: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when the `--pcap` file cannot be created or written (a folder that does not exist,
    /// no permission, a full disk).
    Capture {
        /// The file asked for.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when standard input cannot be read.
    Stdin {
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when standard output cannot be written (e.g. a closed pipe).
    Stdout {
        /// What the system said.
        source: io::Error,
    },
}

/// Which message an error is about: the command line's are all checked before any is sent,
/// the lines of input one at a time as they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The `number`th MESSAGE argument, from 1.
    Message(usize),
    /// The `number`th line of input, from 1.
    Line(u64),
}

impl Which {
    /// What was sent before a refusal of this message: the truth for the user.
    fn sent_before(self) -> String {
        match self {
            Which::Message(_) | Which::Line(1) => "nothing was sent".to_owned(),
            Which::Line(2) => "line 1 was sent, this line and the rest were not".to_owned(),
            Which::Line(n) => format!(
                "lines 1-{} were sent, this line and the rest were not",
                n - 1
            ),
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Which::Message(_) => "messages",
            Which::Line(_) => "lines",
        }
    }
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Which::Message(number) => write!(f, "message {number}"),
            Which::Line(number) => write!(f, "input line {number}"),
        }
    }
}

/// `65507` as `65,507`, as people read sizes.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadServer { given, reason } => write!(
                f,
                "cannot use --server {given}: {reason}; write HOST:PORT, e.g. 127.0.0.1:50000, \
                 [::1]:50000 or localhost:50000"
            ),
            Error::TooLarge {
                which,
                len,
                escaped,
                limit,
                encoding,
            } => {
                write!(f, "{which} is {} bytes", thousands(*len))?;
                if let Some(escaped) = escaped {
                    write!(f, ", {} once escaped as JSON", thousands(*escaped))?;
                }
                match encoding {
                    Encoding::Plain => write!(
                        f,
                        ", over the UDP payload limit of {} bytes towards this server",
                        thousands(*limit)
                    )?,
                    Encoding::Json => write!(
                        f,
                        ", over the {} bytes a JSON envelope can carry towards this server",
                        thousands(*limit)
                    )?,
                }
                write!(
                    f,
                    "; {}: split it into shorter {}",
                    which.sent_before(),
                    which.plural()
                )
            }
            Error::NotText { which, valid_up_to } => write!(
                f,
                "{which} is not UTF-8 text (first bad byte at offset {valid_up_to}), and a JSON \
                 envelope carries text; {}: send it with --encoding plain",
                which.sent_before()
            ),
            Error::ArgNotUnicode { number } => write!(
                f,
                "message {number} is not valid Unicode, and this system passes command-line \
                 arguments as Unicode; nothing was sent: send it on standard input instead"
            ),
            Error::Usage { reason } => write!(f, "{reason}"),
            Error::Refused { peer } => write!(
                f,
                "no server is listening on {peer} (it answered \"port unreachable\"); start one \
                 (cargo run -p server) or check --server"
            ),
            Error::PathRefused { peer, error } => {
                let who = error.who();
                let own = error
                    .offender
                    .is_some_and(|ip| ip.to_canonical() == peer.ip().to_canonical());
                match error.meaning() {
                    Meaning::TimeExceeded => write!(
                        f,
                        "the datagram to {peer} ran out of hops at {who}, a router on the way: \
                         {error}; raise --ttl (--hop-limit) or drop it, or look for a routing \
                         loop (`tracepath {}`)",
                        peer.ip()
                    ),
                    Meaning::Unreachable => write!(
                        f,
                        "the datagram to {peer} cannot be delivered: {who} says {error}; check \
                         the address and the routes (`ip route get {}`), or try another path \
                         (--source, --interface)",
                        peer.ip()
                    ),
                    _ if own => write!(
                        f,
                        "the datagram to {peer} was refused by the server's host itself, {who}, \
                         not by udptalk: {error} (its firewall); ask whoever runs it to let UDP \
                         to port {} through",
                        peer.port()
                    ),
                    _ => write!(
                        f,
                        "the datagram to {peer} was refused by {who}, a host on the way (a \
                         firewall or router), not the server: {error}; ask whoever runs that \
                         host to let UDP to port {} through, or try another path (--source, \
                         --interface)",
                        peer.port()
                    ),
                }
            }
            Error::TooBigForPath {
                peer,
                len,
                mtu,
                max,
                error,
            } => {
                write!(
                    f,
                    "a datagram of {} bytes to {peer} does not fit the path MTU {mtu}",
                    thousands(*len)
                )?;
                if let Some(error) = error {
                    write!(f, "{}", error.said_by())?;
                }
                write!(
                    f,
                    ", and --dont-fragment forbids fragmenting it; keep messages ≤ {} bytes or \
                     drop --dont-fragment",
                    thousands(*max)
                )
            }
            Error::BroadcastRefused { peer } => write!(
                f,
                "{} is a broadcast address, and sending to it needs --broadcast (every host on \
                 the link gets the datagram); nothing was sent: add --broadcast, or give the \
                 server's own address",
                peer.ip()
            ),
            Error::Source {
                source_addr,
                source,
            } => {
                write!(f, "cannot send from --source {source_addr}: {source}; ")?;
                match source.kind() {
                    io::ErrorKind::AddrNotAvailable => write!(
                        f,
                        "{} is not an address of this host: `ip addr` lists them",
                        source_addr.ip()
                    ),
                    io::ErrorKind::AddrInUse => write!(
                        f,
                        "port {} is in use: give another port, or none (any)",
                        source_addr.port()
                    ),
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "ports below 1024 need root or CAP_NET_BIND_SERVICE: give a higher one"
                    ),
                    _ => write!(f, "check the address, or drop --source"),
                }
            }
            Error::Interface { flag, name, source } => {
                match source {
                    Some(source) if source.kind() == io::ErrorKind::PermissionDenied => write!(
                        f,
                        "{flag} {name}: {source} (this kernel lets only root or CAP_NET_RAW bind \
                         a socket to an interface)"
                    )?,
                    Some(source) => write!(f, "{flag} {name}: {source}")?,
                    None => write!(
                        f,
                        "{flag} {name}: there is no interface named {name}{} on this host",
                        if *flag == "--multicast-if" {
                            " with an address of the server's family"
                        } else {
                            ""
                        }
                    )?,
                }
                write!(
                    f,
                    "; `ip link` lists the interfaces: give one of their names"
                )
            }
            Error::Option { flag, source } => write!(
                f,
                "cannot set {flag} on the socket: {source}; drop {flag}, or check its value"
            ),
            Error::NotEnvelope { peer, detail } => write!(
                f,
                "the reply from {peer} is not a JSON envelope ({}); the server speaks plain \
                 text: drop --encoding json",
                Printable(detail.as_bytes())
            ),
            Error::UnreadableEnvelope {
                peer,
                error: DecodeError::BadVersion { found },
            } => write!(
                f,
                "the server at {peer} answered an envelope of version {}, and this client \
                 reads version {}; update one side so that both speak the same version",
                Printable(found.as_bytes()),
                proto::ENVELOPE_VERSION
            ),
            Error::UnreadableEnvelope { peer, error } => write!(
                f,
                "the server at {peer} answered an envelope this client cannot read ({}: {}); \
                 the server or something on the path is broken: update or fix one side, or \
                 drop --encoding json",
                error.code(),
                Printable(error.to_string().as_bytes())
            ),
            Error::Socket { doing, source } => write!(
                f,
                "socket error while {doing}: {source}; check the network settings, or try \
                 again"
            ),
            Error::Capture { path, source } => write!(
                f,
                "cannot write the capture file {}: {source}; nothing was sent: check that its \
                 folder exists and is writable, or give another --pcap FILE",
                path.display()
            ),
            Error::Stdin { source } => write!(
                f,
                "cannot read standard input: {source}; give the messages as arguments instead"
            ),
            Error::Stdout { source } => write!(
                f,
                "cannot write standard output: {source}; check where it goes (a closed pipe?)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Socket { source, .. }
            | Error::Source { source, .. }
            | Error::Option { source, .. }
            | Error::Capture { source, .. }
            | Error::Stdin { source }
            | Error::Stdout { source } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_thousands_separators() {
        let shown: Vec<String> = [0, 999, 1_000, 65_507, 1_234_567]
            .into_iter()
            .map(thousands)
            .collect();
        assert_eq!(shown, ["0", "999", "1,000", "65,507", "1,234,567"]);
    }

    #[test]
    fn a_refusal_on_the_way_names_who_refused_and_what_to_try() {
        use crate::icmp::Origin;
        let peer = SocketAddr::from(([198, 51, 100, 2], 7000));
        let refusal = |offender: [u8; 4], icmp_type, code| Error::PathRefused {
            peer,
            error: PathError {
                offender: Some(std::net::IpAddr::from(offender)),
                origin: Origin::Icmp,
                icmp_type,
                code,
                info: 0,
            },
        };
        let firewall = refusal([192, 0, 2, 1], 3, 3).to_string();
        assert!(
            firewall.contains("refused by 192.0.2.1, a host on the way (a firewall or router), not the server: ICMP port unreachable"),
            "{firewall}"
        );
        let own = refusal([198, 51, 100, 2], 3, 13).to_string();
        assert!(
            own.contains("the server's host itself, 198.51.100.2"),
            "{own}"
        );
        let hops = refusal([192, 0, 2, 1], 11, 0).to_string();
        assert!(
            hops.contains("at 192.0.2.1") && hops.contains("--ttl"),
            "{hops}"
        );
        let too_big = Error::TooBigForPath {
            peer,
            len: 1400,
            mtu: 1280,
            max: 1252,
            error: None,
        }
        .to_string();
        assert!(
            too_big.contains("does not fit the path MTU 1280")
                && too_big.contains("keep messages ≤ 1,252 bytes or drop --dont-fragment"),
            "{too_big}"
        );
    }

    #[test]
    fn a_refused_line_says_what_was_sent() {
        let too_large = |which| Error::TooLarge {
            which,
            len: 70_000,
            escaped: None,
            limit: 65_460,
            encoding: Encoding::Json,
        };
        assert_eq!(
            too_large(Which::Line(3)).to_string(),
            "input line 3 is 70,000 bytes, over the 65,460 bytes a JSON envelope can carry \
             towards this server; lines 1-2 were sent, this line and the rest were not: split \
             it into shorter lines"
        );
        assert!(
            too_large(Which::Line(2))
                .to_string()
                .contains("; line 1 was sent, this line")
        );
        assert!(
            too_large(Which::Message(2))
                .to_string()
                .contains("; nothing was sent: split it into shorter messages")
        );
    }
}
