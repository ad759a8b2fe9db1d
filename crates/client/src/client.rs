//! One connected socket and the exchange of one message with the server, resends included.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use proto::{Envelope, ErrorCode, Id, RECV_BUFFER, RETRY_WINDOW};

use crate::{Backoff, Config, Encoding, Error};

/// How one message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered; `text` is the reply (or the envelope's body) cut to `--buffer`,
    /// `len` its length before the cut.
    Reply {
        /// What is shown.
        text: Vec<u8>,
        /// The full length.
        len: usize,
    },
    /// The server answered with an error envelope.
    ServerError {
        /// The error's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// Nothing came back after every attempt.
    NoReply {
        /// Where the message went.
        peer: SocketAddr,
        /// How long the client waited in all.
        after: Duration,
        /// How many datagrams were sent.
        attempts: u32,
    },
}

/// One message's exchange: how it ended, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// How it ended.
    pub outcome: Outcome,
    /// Datagrams sent for it: 1, or more when it was resent.
    pub attempts: u32,
    /// Time from the send to the answer, when the message was sent once (Karn's rule: the
    /// answer to a resent message cannot be matched to one attempt, so it has no RTT).
    pub rtt: Option<Duration>,
    /// Answers to earlier requests (duplicated or late), and answers with ids never asked for,
    /// dropped while waiting.
    pub dropped: u64,
}

/// A client connected to one of the server's addresses.
pub struct Client {
    socket: UdpSocket,
    config: Config,
    backoff: Backoff,
    /// Index in `config.servers` of the address in use.
    current: usize,
    buf: Vec<u8>,
    /// The id of the next JSON request: random at first, like TCP's initial sequence number,
    /// so that an off-path sender cannot guess which ids are outstanding.
    next_id: Id,
    warned_fragmentation: bool,
}

impl Client {
    /// Opens a socket connected to the first of the server's addresses.
    pub fn connect(config: &Config) -> Result<Client, Error> {
        let first = *config.servers.first().ok_or_else(|| Error::BadServer {
            given: String::new(),
            reason: "no address".to_owned(),
        })?;
        let first_id = rand::random_range(1..=proto::MAX_ID);
        Ok(Client {
            socket: connected_socket(first)?,
            backoff: Backoff {
                timeout: config.timeout,
                retries: config.retries,
            },
            config: config.clone(),
            current: 0,
            buf: vec![0; RECV_BUFFER],
            next_id: Id::new(first_id).unwrap_or(Id::MIN),
            warned_fragmentation: false,
        })
    }

    /// The address in use.
    pub fn peer(&self) -> SocketAddr {
        self.config.servers[self.current]
    }

    /// The largest datagram that can go to every address of the server.
    pub fn max_payload(&self) -> usize {
        self.config
            .servers
            .iter()
            .map(|addr| proto::max_payload(addr.ip()))
            .min()
            .unwrap_or(proto::MAX_PAYLOAD_V4)
    }

    /// Refuses a message that cannot be sent as it is: longer than one datagram, or, in JSON
    /// mode, not UTF-8 (a JSON string is text; changing the bytes would lose them silently).
    pub fn check_message(&self, message: &[u8]) -> Result<(), Error> {
        if self.config.encoding == Encoding::Json
            && let Err(e) = std::str::from_utf8(message)
        {
            return Err(Error::NotText {
                valid_up_to: e.valid_up_to(),
            });
        }
        let max = self.max_payload();
        let len = self.encode(message, self.next_id).len();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        Ok(())
    }

    fn encode(&self, message: &[u8], id: Id) -> Vec<u8> {
        match self.config.encoding {
            Encoding::Plain => message.to_vec(),
            Encoding::Json => Envelope::Request {
                id,
                // `check_message` refuses bytes that are not UTF-8 before anything is sent.
                body: String::from_utf8_lossy(message).into_owned(),
                // One request at a time: the one being sent is the lowest still awaited.
                ack: Some(id),
            }
            .encode_to_vec(),
        }
    }

    /// Sends `message`, calls `sent` once it is on its way, and waits for the answer, resending
    /// on the [`Backoff`] schedule (never later than [`RETRY_WINDOW`] after the first send).
    /// When the address in use refuses (nothing listens), the message goes to the server's
    /// next address; when every address refused, the run ends with [`Error::Refused`].
    pub fn exchange(
        &mut self,
        message: &[u8],
        mut sent: impl FnMut() -> Result<(), Error>,
    ) -> Result<Exchange, Error> {
        self.check_message(message)?;
        let id = self.next_id;
        self.next_id = id.next();
        let datagram = self.encode(message, id);
        self.warn_if_fragmenting(datagram.len());
        if self.config.encoding == Encoding::Plain {
            self.discard_late_replies();
        }
        let mut exchange = Exchange {
            outcome: Outcome::NoReply {
                peer: self.peer(),
                after: Duration::ZERO,
                attempts: 0,
            },
            attempts: 0,
            rtt: None,
            dropped: 0,
        };
        let first_send = Instant::now();
        let mut refusals = 0;
        let mut attempt = 0;
        // `Sent a message.` once per message, however many datagrams carry it.
        let mut told = false;
        while attempt < self.backoff.attempts() {
            if attempt > 0 && first_send.elapsed() >= RETRY_WINDOW {
                log::debug!(
                    "id {id}: no resend after the {}s retry window",
                    RETRY_WINDOW.as_secs()
                );
                break;
            }
            let peer = self.peer();
            let sent_at = Instant::now();
            if let Err(refused) = self.send(&datagram) {
                self.next_address(refused, &mut refusals)?;
                continue;
            }
            exchange.attempts += 1;
            if !told {
                told = true;
                sent()?;
            }
            let wait = self
                .backoff
                .wait(attempt, rand::random_range(0.0..=Backoff::MAX_JITTER));
            log::debug!(
                "id {id}: attempt {} of {} to {peer}, waiting {}",
                attempt + 1,
                self.backoff.attempts(),
                humantime::format_duration(wait)
            );
            match self.wait_answer(id, sent_at + wait, &mut exchange.dropped) {
                Ok(Some(Outcome::ServerError {
                    code: ErrorCode::Busy,
                    ..
                })) if attempt + 1 < self.backoff.attempts() => {
                    // Busy is the server asking to be asked again later: the backoff does that.
                    log::info!("id {id}: the server is busy; resending after the backoff");
                    std::thread::sleep((sent_at + wait).saturating_duration_since(Instant::now()));
                }
                Ok(Some(outcome)) => {
                    if exchange.attempts == 1 {
                        exchange.rtt = Some(sent_at.elapsed());
                    }
                    exchange.outcome = outcome;
                    return Ok(exchange);
                }
                Ok(None) => {}
                Err(refused @ Error::Refused { .. }) => {
                    self.next_address(refused, &mut refusals)?;
                    exchange.attempts -= 1;
                    continue;
                }
                Err(other) => return Err(other),
            }
            attempt += 1;
        }
        exchange.outcome = Outcome::NoReply {
            peer: self.peer(),
            // The schedule's waits (without jitter): `2s` for one attempt with --timeout 2s.
            after: (0..exchange.attempts).map(|a| self.backoff.base(a)).sum(),
            attempts: exchange.attempts,
        };
        Ok(exchange)
    }

    /// Moves to the server's next address after `refused`; fails when every address refused.
    fn next_address(&mut self, refused: Error, refusals: &mut usize) -> Result<(), Error> {
        *refusals += 1;
        if *refusals >= self.config.servers.len() {
            return Err(refused);
        }
        log::info!("{refused}; trying the server's next address");
        self.current = (self.current + 1) % self.config.servers.len();
        self.socket = connected_socket(self.peer())?;
        Ok(())
    }

    fn send(&self, datagram: &[u8]) -> Result<(), Error> {
        match self.socket.send(datagram) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err(Error::Refused { peer: self.peer() })
            }
            Err(source) => Err(Error::Socket {
                doing: "sending",
                source,
            }),
        }
    }

    /// Waits until `until` for the answer to `id`; `None` when none came.
    fn wait_answer(
        &mut self,
        id: Id,
        until: Instant,
        dropped: &mut u64,
    ) -> Result<Option<Outcome>, Error> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|source| Error::Socket {
                    doing: "setting the receive timeout",
                    source,
                })?;
            match self.socket.recv(&mut self.buf) {
                Ok(len) => match self.read_answer(len, id)? {
                    Some(outcome) => return Ok(Some(outcome)),
                    None => *dropped += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Refused { peer: self.peer() });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(source) => {
                    return Err(Error::Socket {
                        doing: "receiving",
                        source,
                    });
                }
            }
        }
    }

    /// The answer in `self.buf[..len]`, or `None` for a datagram that answers no outstanding
    /// request (a duplicate, a late answer to an earlier request, or an id never asked for).
    fn read_answer(&self, len: usize, id: Id) -> Result<Option<Outcome>, Error> {
        let datagram = &self.buf[..len];
        let keep = |text: &[u8]| Outcome::Reply {
            text: text[..text.len().min(self.config.buffer)].to_vec(),
            len: text.len(),
        };
        match self.config.encoding {
            Encoding::Plain => Ok(Some(keep(datagram))),
            Encoding::Json => match Envelope::decode(datagram, RECV_BUFFER) {
                Ok(Envelope::Reply { id: got, body }) if got == id => {
                    Ok(Some(keep(body.as_bytes())))
                }
                Ok(Envelope::Error {
                    id: got,
                    code,
                    message,
                }) if got.is_none_or(|got| got == id) => {
                    Ok(Some(Outcome::ServerError { code, message }))
                }
                Ok(other) => {
                    log::debug!(
                        "dropped a {} envelope with id {}; waiting for id {id}",
                        other.kind(),
                        other.id().map_or("null".to_owned(), |id| id.to_string())
                    );
                    Ok(None)
                }
                Err(rejection) => Err(Error::NotEnvelope {
                    peer: self.peer(),
                    detail: rejection.error.to_string(),
                }),
            },
        }
    }

    /// Drops datagrams that arrived after their request timed out, so that in plain mode (no
    /// ids) a late answer is never taken for the answer to the next message.
    fn discard_late_replies(&mut self) {
        if self.socket.set_nonblocking(true).is_err() {
            return;
        }
        while let Ok(len) = self.socket.recv(&mut self.buf) {
            log::warn!("discarded a late reply of {len} bytes to an earlier message");
        }
        let _ = self.socket.set_nonblocking(false);
    }

    /// Warns once that datagrams this long may be fragmented on the way (RFC 8085 §3.2): one
    /// lost fragment loses the whole datagram.
    fn warn_if_fragmenting(&mut self, len: usize) {
        let peer = self.peer();
        if !self.warned_fragmentation && proto::may_fragment(peer.ip(), len) {
            self.warned_fragmentation = true;
            log::warn!(
                "a datagram of {len} bytes to {peer} may be fragmented on the way (over {} \
                 bytes); losing any fragment loses it all: keep messages shorter if you can",
                if peer.ip().to_canonical().is_ipv4() {
                    proto::UNFRAGMENTED_V4
                } else {
                    proto::UNFRAGMENTED_V6
                }
            );
        }
    }
}

/// A socket of `peer`'s family on an ephemeral port, connected to `peer`.
fn connected_socket(peer: SocketAddr) -> Result<UdpSocket, Error> {
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|source| Error::Socket {
        doing: "binding",
        source,
    })?;
    socket.connect(peer).map_err(|source| Error::Socket {
        doing: "connecting",
        source,
    })?;
    Ok(socket)
}
