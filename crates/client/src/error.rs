//! The client's one error type, worded for the user, and its exit codes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// What ends a run early, or (for [`Error::NoReply`]) what is reported for one message.
#[derive(Debug)]
pub enum Error {
    /// Occurs when `--server` names no address udptalk can use.
    BadServer {
        /// What was given.
        given: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Occurs when a message given on the command line is over the UDP payload limit.
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// The largest payload towards the server.
        max: usize,
    },
    /// Occurs when a message for a JSON envelope is not UTF-8 text.
    NotText {
        /// Offset of the first byte that is not UTF-8.
        valid_up_to: usize,
    },
    /// Occurs when a line of input is over the UDP payload limit.
    LineTooLarge {
        /// The line's number, from 1.
        number: u64,
        /// The largest payload towards the server.
        max: usize,
    },
    /// Occurs when every address of the server answered ICMP port unreachable: nothing listens.
    Refused {
        /// The (last) address tried.
        peer: SocketAddr,
    },
    /// Occurs when a message got no answer after every attempt.
    NoReply {
        /// The address the message went to.
        peer: SocketAddr,
        /// How long the client waited in all.
        after: Duration,
        /// How many datagrams were sent.
        attempts: u32,
    },
    /// Occurs when `--deadline` passes before the run is over.
    Deadline {
        /// The deadline.
        after: Duration,
    },
    /// Occurs when a JSON-mode client gets a reply that is not an envelope.
    NotEnvelope {
        /// The server.
        peer: SocketAddr,
        /// What is wrong with it.
        detail: String,
    },
    /// Occurs when the socket fails in a way that says nothing about the server.
    Socket {
        /// What was being done.
        doing: &'static str,
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

impl Error {
    /// The exit code for this error: 2 usage, 4 nothing listens, 3 no reply, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadServer { .. }
            | Error::MessageTooLarge { .. }
            | Error::NotText { .. }
            | Error::LineTooLarge { .. } => 2,
            Error::Refused { .. } => 4,
            Error::NoReply { .. } | Error::Deadline { .. } => 3,
            Error::NotEnvelope { .. }
            | Error::Socket { .. }
            | Error::Stdin { .. }
            | Error::Stdout { .. } => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadServer { given, reason } => write!(
                f,
                "cannot use --server {given}: {reason}; write HOST:PORT, e.g. 127.0.0.1:50000, \
                 [::1]:50000 or localhost:50000"
            ),
            Error::MessageTooLarge { len, max } => write!(
                f,
                "a message of {len} bytes is over the UDP payload limit of {max} bytes towards \
                 this server; nothing was sent: split it into shorter messages"
            ),
            Error::NotText { valid_up_to } => write!(
                f,
                "a message is not UTF-8 text (first bad byte at offset {valid_up_to}), and a JSON \
                 envelope carries text; nothing more was sent: send it with --encoding plain"
            ),
            Error::LineTooLarge { number, max } => write!(
                f,
                "input line {number} is over the UDP payload limit of {max} bytes towards this \
                 server; it was not sent: split it into shorter lines"
            ),
            Error::Refused { peer } => write!(
                f,
                "no server is listening on {peer} (it answered \"port unreachable\"); start one \
                 (cargo run -p server) or check --server"
            ),
            Error::NoReply {
                peer,
                after,
                attempts,
            } => {
                let after = humantime::format_duration(*after);
                if *attempts > 1 {
                    write!(
                        f,
                        "no reply from {peer} to {attempts} attempts over {after}: the server \
                         is not answering or the path loses datagrams; check that it runs, or \
                         raise --timeout or --retries"
                    )
                } else {
                    write!(
                        f,
                        "no reply from {peer} within {after}: the request or its answer was \
                         lost, or the server is not answering; check that it runs, or raise \
                         --timeout (or --retries, which plain text risks counting twice)"
                    )
                }
            }
            Error::Deadline { after } => write!(
                f,
                "the --deadline of {} passed before every message was answered; raise it if \
                 the server is slow",
                humantime::format_duration(*after)
            ),
            Error::NotEnvelope { peer, detail } => write!(
                f,
                "the reply from {peer} is not a JSON envelope ({detail}); the server speaks \
                 plain text: drop --encoding json"
            ),
            Error::Socket { doing, source } => write!(f, "socket error while {doing}: {source}"),
            Error::Stdin { source } => write!(f, "cannot read standard input: {source}"),
            Error::Stdout { source } => write!(f, "cannot write standard output: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Socket { source, .. } | Error::Stdin { source } | Error::Stdout { source } => {
                Some(source)
            }
            _ => None,
        }
    }
}
