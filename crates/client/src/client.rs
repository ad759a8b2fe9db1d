//! One connected socket and the exchange of one message with the server.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use proto::{Envelope, ErrorCode, Id, RECV_BUFFER};

use crate::{Config, Encoding, Error};

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
    /// Nothing came back within the timeout.
    NoReply {
        /// Where the message went.
        peer: SocketAddr,
        /// The timeout.
        after: Duration,
    },
}

/// A client connected to one of the server's addresses.
pub struct Client {
    socket: UdpSocket,
    config: Config,
    /// Index in `config.servers` of the address in use.
    current: usize,
    buf: Vec<u8>,
    next_id: Id,
}

impl Client {
    /// Opens a socket connected to the first of the server's addresses.
    pub fn connect(config: &Config) -> Result<Client, Error> {
        let first = *config.servers.first().ok_or_else(|| Error::BadServer {
            given: String::new(),
            reason: "no address".to_owned(),
        })?;
        Ok(Client {
            socket: connected_socket(first)?,
            config: config.clone(),
            current: 0,
            buf: vec![0; RECV_BUFFER],
            next_id: Id::MIN,
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

    /// Refuses a message that does not fit in one datagram.
    pub fn check_size(&self, message: &[u8]) -> Result<(), Error> {
        let max = self.max_payload();
        let len = self.datagram_len(message);
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        Ok(())
    }

    /// The length of the datagram that carries `message`.
    fn datagram_len(&self, message: &[u8]) -> usize {
        match self.config.encoding {
            Encoding::Plain => message.len(),
            Encoding::Json => self.encode(message, self.next_id).len(),
        }
    }

    fn encode(&self, message: &[u8], id: Id) -> Vec<u8> {
        match self.config.encoding {
            Encoding::Plain => message.to_vec(),
            Encoding::Json => Envelope::Request {
                id,
                // A JSON string is Unicode: bytes that are not UTF-8 travel as U+FFFD.
                body: String::from_utf8_lossy(message).into_owned(),
            }
            .encode_to_vec(),
        }
    }

    /// Sends `message`, calls `sent` once it is on its way, and waits at most the timeout for
    /// the answer. When the address in use refuses (nothing listens), the message goes to the
    /// server's next address; when every address refused, the run ends with [`Error::Refused`].
    pub fn exchange(
        &mut self,
        message: &[u8],
        mut sent: impl FnMut() -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        self.check_size(message)?;
        let id = self.next_id;
        self.next_id = id.next();
        let datagram = self.encode(message, id);
        let mut told = false;
        for _ in 0..self.config.servers.len() {
            self.discard_late_replies();
            match self.send_and_wait(&datagram, id, &mut || {
                if told {
                    return Ok(());
                }
                told = true;
                sent()
            }) {
                Err(Error::Refused { peer }) => {
                    log::info!("nothing listens on {peer}");
                    self.current += 1;
                    match self.config.servers.get(self.current) {
                        Some(&next) => self.socket = connected_socket(next)?,
                        None => {
                            self.current -= 1;
                            return Err(Error::Refused { peer });
                        }
                    }
                }
                other => return other,
            }
        }
        Err(Error::Refused { peer: self.peer() })
    }

    fn send_and_wait(
        &mut self,
        datagram: &[u8],
        id: Id,
        sent: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        let peer = self.peer();
        match self.socket.send(datagram) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(Error::Refused { peer });
            }
            Err(source) => {
                return Err(Error::Socket {
                    doing: "sending",
                    source,
                });
            }
        }
        sent()?;
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Ok(Outcome::NoReply {
                    peer,
                    after: self.config.timeout,
                });
            };
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|source| Error::Socket {
                    doing: "setting the receive timeout",
                    source,
                })?;
            match self.socket.recv(&mut self.buf) {
                Ok(len) => {
                    if let Some(outcome) = self.read_answer(len, id)? {
                        return Ok(outcome);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Refused { peer });
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

    /// The answer in `self.buf[..len]`, or `None` for a datagram that answers another request.
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
                        "dropped a {} envelope with id {:?}; waiting for id {id}",
                        other.kind(),
                        other.id()
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

    /// Drops datagrams that arrived after their request timed out, so that a late answer is
    /// never taken for the answer to the next message.
    fn discard_late_replies(&mut self) {
        if self.socket.set_nonblocking(true).is_err() {
            return;
        }
        while let Ok(len) = self.socket.recv(&mut self.buf) {
            log::warn!("discarded a late reply of {len} bytes to an earlier message");
        }
        let _ = self.socket.set_nonblocking(false);
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
