//! The receive loop: one socket, one receive buffer, one answer buffer, the [`Core`] that
//! decides and the [`Sink`] that shows.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::RECV_BUFFER;
use proto::text::canonical_peer;

use crate::core::{Answer, Core};
use crate::sink::Sink;
use crate::sys::ServerSocket;
use crate::{Config, Error, Summary};

/// Longest wait in one receive, so that a stop request is seen within this long. Signals are
/// never relied on to interrupt a receive (EINTR is not guaranteed with SA_RESTART handlers).
const POLL: Duration = Duration::from_millis(250);

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    socket: ServerSocket,
    config: Config,
    /// Receives always use [`RECV_BUFFER`] bytes, so the kernel never cuts a datagram; the cut
    /// to `--buffer` is made (and reported) by the core.
    buf: Vec<u8>,
    answer: Vec<u8>,
    core: Core,
    sink: Option<Box<dyn Sink + Send>>,
}

impl Server {
    /// Binds the socket `config.bind` names.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let socket =
            ServerSocket::bind(config.bind).map_err(|e| Error::from_bind(config.bind, e))?;
        socket
            .set_read_timeout(POLL)
            .map_err(|source| Error::Socket {
                doing: "setting the receive timeout",
                source,
            })?;
        Ok(Server {
            socket,
            core: Core::new(&config),
            config,
            buf: vec![0; RECV_BUFFER],
            answer: Vec::with_capacity(RECV_BUFFER),
            sink: None,
        })
    }

    /// Shows every datagram's event on `sink` (by default, nothing is shown).
    pub fn with_sink(mut self, sink: Box<dyn Sink + Send>) -> Server {
        self.sink = Some(sink);
        self
    }

    /// The configuration it serves by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address really bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap_or(self.config.bind)
    }

    /// Serves until `stop` is set, `--idle` passes without a datagram, or, with `--once`, the
    /// first datagram has been handled.
    ///
    /// Each datagram is decided by the [`Core`], its answer sent at once, and only then shown:
    /// output never delays an answer.
    pub fn run(mut self, stop: &AtomicBool) -> Result<Summary, Error> {
        let mut last_datagram = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                log::info!("stop requested");
                break;
            }
            if let Some(idle) = self.config.idle
                && last_datagram.elapsed() >= idle
            {
                log::info!(
                    "no datagram for {}: exiting",
                    humantime::format_duration(idle)
                );
                break;
            }
            let meta = match self.socket.recv(&mut self.buf) {
                Ok(meta) => meta,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // An ICMP error for an earlier answer can surface here on some systems; it says
                // nothing about the datagrams still to come.
                Err(e) => {
                    log::debug!("receive error, ignored: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            last_datagram = now;
            let peer = canonical_peer(meta.peer);
            let handled = self
                .core
                .handle(&self.buf[..meta.len], peer, now, &mut self.answer);
            match handled.answer {
                Answer::Send => {
                    if let Err(e) = self.socket.send(&self.answer, meta.peer, meta.local) {
                        self.core.send_failed();
                        log::warn!("could not answer {peer}: {e}");
                    }
                }
                Answer::OverBudget => log::debug!(
                    "{peer}: answer of {} bytes dropped: over 3× what the source sent",
                    self.answer.len()
                ),
                Answer::None => {}
            }
            if let Some(report) = self.core.take_rate_report(now) {
                log::warn!("{report}");
            }
            log::debug!("{peer}: {}", handled.event);
            if let Some(sink) = &mut self.sink {
                sink.event(peer, &handled.event);
            }
            if self.config.once {
                break;
            }
        }
        Ok(self.core.into_summary())
    }
}
