//! The receive loop: one socket, one buffer, one access counter.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::RECV_BUFFER;
use proto::text::canonical_peer;

use crate::responder::Responder;
use crate::sys::ServerSocket;
use crate::{Config, Error};

/// Longest wait in one receive, so that a stop request is seen within this long. Signals are
/// never relied on to interrupt a receive (EINTR is not guaranteed with SA_RESTART handlers).
const POLL: Duration = Duration::from_millis(250);

/// How many distinct peers are counted exactly; past this the summary shows `≥65,536`, so
/// that a flood of spoofed sources cannot grow the tally's memory (about 3 MiB at the cap).
pub const PEER_TALLY_CAP: usize = 65_536;

/// What the server saw. The books always balance:
/// `received = counted + duplicates + malformed + rate_limited + busy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams received.
    pub received: u64,
    /// Accesses counted and answered: plain datagrams, and envelope requests seen for the first
    /// time.
    pub counted: u64,
    /// Envelope requests seen before (a resend, or a copy the network made): answered from the
    /// reply cache, or, when their sender has moved past them, recognised as done; never
    /// counted again.
    pub duplicates: u64,
    /// Envelope attempts refused (answered with an error envelope) or ignored (replies and
    /// errors sent to the server, which are never answered, so two servers cannot ping-pong).
    pub malformed: u64,
    /// Datagrams dropped unanswered because their source was over `--rate-limit`.
    pub rate_limited: u64,
    /// Envelope requests answered `busy` because the reply cache was full of live entries.
    pub busy: u64,
    /// Counted datagrams longer than `--buffer`, cut and reported.
    pub truncated: u64,
    /// Distinct peers (address and port), exact up to [`PEER_TALLY_CAP`].
    pub peers: u64,
    /// Answers not sent because they would have broken a source's anti-amplification budget.
    pub amplification_dropped: u64,
    /// Answers the system would not send.
    pub send_failures: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, counted {}, duplicates {}, malformed {}, rate-limited {}, busy {}, \
             truncated {}, peers ",
            self.received,
            self.counted,
            self.duplicates,
            self.malformed,
            self.rate_limited,
            self.busy,
            self.truncated,
        )?;
        if self.peers >= PEER_TALLY_CAP as u64 {
            write!(f, "≥65,536")?;
        } else {
            write!(f, "{}", self.peers)?;
        }
        if self.amplification_dropped > 0 {
            write!(f, ", amplification-dropped {}", self.amplification_dropped)?;
        }
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
    /// to `--buffer` is made (and reported) by the responder.
    buf: Vec<u8>,
    responder: Responder,
}

impl Server {
    /// Binds the socket `config.bind` names.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let socket =
            ServerSocket::bind(config.bind).map_err(|e| Error::from_bind(config.bind, e))?;
        Ok(Server {
            socket,
            buf: vec![0; RECV_BUFFER],
            responder: Responder::new(config),
        })
    }

    /// The configuration it serves by.
    pub fn config(&self) -> &Config {
        self.responder.config()
    }

    /// The address really bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or(self.responder.config().bind)
    }

    /// Serves until `stop` is set, `--idle` passes without a datagram, or, with `--once`, the
    /// first datagram has been handled.
    ///
    /// The counting rule: an envelope attempt that fails a check gets an error envelope and is
    /// not counted; everything else (plain text, valid UTF-8 or not, empty, longer than
    /// `--buffer`, and valid requests) is counted and answered.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Summary, Error> {
        let mut last_datagram = Instant::now();
        let config = self.responder.config().clone();
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
                    let peer = canonical_peer(meta.peer);
                    let now = Instant::now();
                    if let Some(answer) = self.responder.answer(&self.buf[..meta.len], peer, now)
                        && let Err(e) = self.socket.send(&answer, meta.peer, meta.local)
                    {
                        self.responder.send_failed();
                        log::warn!("could not answer {peer}: {e}");
                    }
                    last_datagram = now;
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
        Ok(self.responder.into_summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_tally_saturates_in_the_summary() {
        let mut summary = Summary {
            peers: 65_535,
            ..Summary::default()
        };
        assert!(summary.to_string().ends_with("peers 65535"));
        summary.peers = PEER_TALLY_CAP as u64;
        assert!(summary.to_string().ends_with("peers ≥65,536"));
    }
}
