//! Command-line arguments, and the [`Config`] they resolve into before anything is sent.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::Error;

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
/// Exit codes (the most serious outcome seen: 4, then 3, 6, 5):
///   0  every message was answered
///   5  a reply was longer than --buffer and was cut (and reported)
///   6  the server answered with an error envelope
///   3  a message got no reply after every attempt, or --deadline passed
///   4  no server is listening (the run ends at once)
///   2  bad usage, or a message over the UDP payload limit (what was sent is said)
///   1  anything else (e.g. --encoding json and the reply is not an envelope)
///   130, 143, 129  stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP, after the summary
#[derive(Debug, Parser)]
#[command(name = "udptalk-client", version, verbatim_doc_comment)]
pub struct Args {
    /// Messages to send, one datagram each ("" sends an empty one); none: read standard input
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<OsString>,

    /// Server address, HOST:PORT; a host name with several addresses tries the next one when
    /// nothing listens on the first
    #[arg(long, value_name = "ADDR", default_value = proto::DEFAULT_ADDR)]
    pub server: String,

    /// How long to wait for a reply before giving up or resending, e.g. 2s or 500ms (at most
    /// 365 days)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// plain: the datagram is the message; json: an envelope with an id
    #[arg(long, value_enum, default_value_t = Encoding::Plain)]
    pub encoding: Encoding,

    /// Resends of an unanswered message, each after a doubling wait (capped at 8 timeouts,
    /// plus up to 25% jitter). Default: 2 with --encoding json (the id lets the server answer a
    /// resend without counting it again), 0 with plain (a resend could be counted twice)
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Bound on the whole run, e.g. 10s (at most 365 days); when it passes, even while waiting
    /// for a line of input, the client prints the summary and exits with code 3
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<Duration>,

    /// Longest reply kept, in bytes (1-65535; the tutorial used 1024); a longer one is cut to
    /// this and reported, never cut silently
    #[arg(long, value_name = "BYTES", default_value_t = 65_535,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub buffer: u16,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
        }
    }

    /// Resolves `args.server` (an IP address and port, or a host name and port).
    pub fn from_args(args: &Args) -> Result<Config, Error> {
        let bad = |reason: String| Error::BadServer {
            given: args.server.clone(),
            reason,
        };
        let servers: Vec<SocketAddr> = match args.server.parse::<SocketAddr>() {
            Ok(addr) => vec![addr],
            Err(_) => {
                if !args.server.contains(':') {
                    return Err(bad("it has no port".to_owned()));
                }
                args.server
                    .to_socket_addrs()
                    .map_err(|e| bad(format!("cannot resolve it ({e})")))?
                    .collect()
            }
        };
        if servers.is_empty() {
            return Err(bad("the name has no address".to_owned()));
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
        })
    }
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
