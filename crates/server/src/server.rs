//! The receive loop: one socket, one buffer, one access counter.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::text::{HELLO_CLIENT, Printable, access_count_reply, canonical_peer};
use proto::{Datagram, Envelope, RECV_BUFFER};

use crate::sys::ServerSocket;
use crate::{Config, Encoding, Error, Mode};

/// Longest wait in one receive, so that a stop request is seen within this long. Signals are
/// never relied on to interrupt a receive (EINTR is not guaranteed with SA_RESTART handlers).
const POLL: Duration = Duration::from_millis(250);

/// What the server saw, kept so that `received = counted + malformed` always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams counted as accesses and answered (plain text, and valid envelope requests).
    pub counted: u64,
    /// Envelope attempts refused (answered with an error envelope) or ignored (replies and
    /// errors sent to the server, which are never answered, so two servers cannot ping-pong).
    pub malformed: u64,
    /// Counted datagrams longer than `--buffer`, cut and reported.
    pub truncated: u64,
    /// Answers the system would not send.
    pub send_failures: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, counted {}, malformed {}, truncated {}",
            self.received, self.counted, self.malformed, self.truncated
        )?;
        if self.send_failures > 0 {
            write!(f, ", send failures {}", self.send_failures)?;
        }
        Ok(())
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    socket: ServerSocket,
    /// Receives always use [`RECV_BUFFER`] bytes, so the kernel never cuts a datagram; the cut
    /// to `--buffer` is made (and reported) by [`Responder::answer`].
    buf: Vec<u8>,
    responder: Responder,
}

/// Decides what each datagram gets, counts it and shows it: everything but the socket.
struct Responder {
    config: Config,
    summary: Summary,
    /// The per-datagram lines, written to stdout in one piece.
    lines: String,
    stdout_open: bool,
}

impl Server {
    /// Binds the socket `config.bind` names.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let socket =
            ServerSocket::bind(config.bind).map_err(|e| Error::from_bind(config.bind, e))?;
        let local = socket.local_addr().ok();
        if local.is_some_and(|addr| !addr.ip().is_loopback()) {
            log::warn!(
                "bound to {}, which is reachable from the network, not only from this machine",
                config.bind
            );
        }
        Ok(Server {
            socket,
            buf: vec![0; RECV_BUFFER],
            responder: Responder {
                config,
                summary: Summary::default(),
                lines: String::new(),
                stdout_open: true,
            },
        })
    }

    /// The address really bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or(self.responder.config.bind)
    }

    /// Serves until `stop` is set, `--idle` passes without a datagram, or, with `--once`, the
    /// first datagram has been handled.
    ///
    /// The counting rule: an envelope attempt that fails a check gets an error envelope and is
    /// not counted; everything else (plain text, valid UTF-8 or not, empty, longer than
    /// `--buffer`, and valid requests) is counted and answered.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Summary, Error> {
        let mut last_datagram = Instant::now();
        let config = self.responder.config.clone();
        loop {
            if stop.load(Ordering::Relaxed) {
                log::info!("stop requested");
                break;
            }
            let wait = match config.idle {
                Some(idle) => match idle.checked_sub(last_datagram.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(POLL),
                    _ => {
                        log::info!(
                            "no datagram for {}: exiting",
                            humantime::format_duration(idle)
                        );
                        break;
                    }
                },
                None => POLL,
            };
            self.socket
                .set_read_timeout(wait)
                .map_err(|source| Error::Socket {
                    doing: "setting the receive timeout",
                    source,
                })?;
            match self.socket.recv(&mut self.buf) {
                Ok(meta) => {
                    last_datagram = Instant::now();
                    let peer = canonical_peer(meta.peer);
                    if let Some(answer) = self.responder.answer(&self.buf[..meta.len], peer)
                        && let Err(e) = self.socket.send(&answer, meta.peer, meta.local)
                    {
                        self.responder.summary.send_failures += 1;
                        log::warn!("could not answer {peer}: {e}");
                    }
                    if config.once {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // An ICMP error for an earlier answer can surface here on some systems; it says
                // nothing about the datagrams still to come.
                Err(e) => log::debug!("receive error, ignored: {e}"),
            }
        }
        Ok(self.responder.summary)
    }
}

impl Responder {
    /// Decodes, counts and shows `datagram` from `peer`, and returns the answer to send, if any.
    fn answer(&mut self, datagram: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        self.summary.received += 1;
        let limit = self.config.buffer;
        let len = datagram.len();
        let decoded = match self.config.encoding {
            Encoding::Plain => Datagram::Plain,
            Encoding::Auto => proto::classify(datagram, limit),
            Encoding::Json => Datagram::Envelope(Envelope::decode(datagram, limit)),
        };
        self.lines.clear();
        let answer: Option<Vec<u8>> = match decoded {
            Datagram::Plain => {
                let kept = &datagram[..len.min(limit)];
                let count = self.count();
                self.show_message(count, peer, kept, len);
                Some(match self.config.mode {
                    Mode::Count => access_count_reply(count).into_bytes(),
                    Mode::Hello => HELLO_CLIENT.as_bytes().to_vec(),
                    Mode::Echo => kept.to_vec(),
                })
            }
            Datagram::Envelope(Ok(Envelope::Request { id, body, .. })) => {
                let count = self.count();
                self.show_message(count, peer, body.as_bytes(), body.len());
                let body = match self.config.mode {
                    Mode::Count => access_count_reply(count),
                    Mode::Hello => HELLO_CLIENT.to_owned(),
                    Mode::Echo => body,
                };
                Some(Envelope::Reply { id, body }.encode_to_vec())
            }
            Datagram::Envelope(Ok(other)) => {
                self.summary.malformed += 1;
                self.show_refusal(
                    peer,
                    format_args!(
                        "Ignored: a {} envelope (a server answers only requests).",
                        other.kind()
                    ),
                );
                None
            }
            Datagram::Envelope(Err(rejection)) => {
                self.summary.malformed += 1;
                let answer = rejection.to_envelope();
                if let Envelope::Error { code, message, .. } = &answer {
                    self.show_refusal(peer, format_args!("Rejected: {code}: {message}"));
                }
                Some(answer.encode_to_vec())
            }
        };
        self.flush_lines();
        answer
    }

    /// Counts one access and returns its number.
    fn count(&mut self) -> u64 {
        self.summary.counted += 1;
        self.summary.counted
    }

    /// The tutorial's lines for a counted message; `len` is its length before any cut.
    fn show_message(&mut self, count: u64, peer: SocketAddr, kept: &[u8], len: usize) {
        let truncated = len > kept.len();
        if truncated {
            self.summary.truncated += 1;
            log::debug!(
                "datagram from {peer} cut: {len} bytes, buffer {}",
                self.config.buffer
            );
        }
        if self.config.quiet {
            return;
        }
        // Writing into a String cannot fail.
        let lines = &mut self.lines;
        if self.config.mode == Mode::Count {
            let _ = writeln!(lines, "New access.(access count: {count})");
        }
        let _ = writeln!(lines, "Message received from {peer}.");
        let _ = writeln!(lines, "The message is [ {} ].", Printable(kept));
        if truncated {
            let _ = writeln!(
                lines,
                "truncated: {len} bytes, buffer {}",
                self.config.buffer
            );
        }
        if self.config.mode == Mode::Count {
            lines.push('\n');
        }
    }

    /// The lines for an envelope attempt that was refused or ignored.
    fn show_refusal(&mut self, peer: SocketAddr, what: fmt::Arguments<'_>) {
        log::debug!("{peer}: {what}");
        if self.config.quiet {
            return;
        }
        let _ = writeln!(self.lines, "Message received from {peer}.");
        let _ = writeln!(self.lines, "{what}");
        if self.config.mode == Mode::Count {
            self.lines.push('\n');
        }
    }

    /// Writes the datagram's lines in one piece. If stdout is gone (a closed pipe), the server
    /// keeps serving and says so once.
    fn flush_lines(&mut self) {
        if self.lines.is_empty() || !self.stdout_open {
            return;
        }
        let mut stdout = io::stdout().lock();
        if let Err(e) = stdout
            .write_all(self.lines.as_bytes())
            .and_then(|()| stdout.flush())
        {
            self.stdout_open = false;
            log::warn!("stdout is closed ({e}); serving on without per-datagram lines");
        }
    }
}
