//! One connected socket and the exchange of one message with the server, resends included.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::{Datagram, Envelope, ErrorCode, Id, RECV_BUFFER, RETRY_WINDOW};

use crate::icmp::{Meaning, PathError};
use crate::sys::{self, Socket};
use crate::{Backoff, Config, Encoding, Error, Interruption, Key, Reply, Stop, Which, Window};

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
        /// The whole reply's length in characters, when it was cut and is UTF-8 (what the
        /// report of the cut says).
        whole_chars: Option<usize>,
    },
    /// The server answered with an error envelope.
    ServerError {
        /// The error's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// Nothing came back after every attempt.
    NoReply(NoReply),
    /// The wait for the answer was cut short: the message was sent, and is neither answered
    /// nor lost.
    Interrupted(Interruption),
}

/// A message that got no answer after every attempt: reported, and the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply {
    /// Where the message went.
    pub peer: SocketAddr,
    /// How long the client waited in all.
    pub after: Duration,
    /// How many datagrams were sent.
    pub attempts: u32,
}

impl fmt::Display for NoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NoReply {
            peer,
            after,
            attempts,
        } = self;
        let after = humantime::format_duration(*after);
        if *attempts > 1 {
            write!(
                f,
                "no reply from {peer} to {attempts} attempts over {after}: the server is not \
                 answering or the path loses datagrams (a firewall that drops them, or a refusal \
                 the kernel's ICMP rate limit held back, looks the same); check that it runs, or \
                 raise --timeout or --retries"
            )
        } else {
            write!(
                f,
                "no reply from {peer} within {after}: the request or its answer was lost, or \
                 the server is not answering (a firewall that drops datagrams, or a refusal the \
                 kernel's ICMP rate limit held back, looks the same); check that it runs, or \
                 raise --timeout (or --retries, which plain text risks counting twice)"
            )
        }
    }
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

/// A message checked and encoded by [`Client::prepare`], ready for [`Client::exchange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its sequence number in the client's [`Window`].
    seq: u64,
    id: Id,
    datagram: Vec<u8>,
}

impl Outgoing {
    /// Its id (on the wire only with `--encoding json`).
    pub fn id(&self) -> Id {
        self.id
    }

    /// Its datagram's length on the wire.
    pub fn wire_len(&self) -> usize {
        self.datagram.len()
    }
}

/// A client connected to one of the server's addresses.
pub struct Client {
    socket: Socket,
    config: Config,
    backoff: Backoff,
    /// Index in `config.servers` of the address in use.
    current: usize,
    buf: Vec<u8>,
    /// The message in flight (one at a time: the tutorial's exchange), its id, Karn's rule and
    /// the books of duplicated and late answers. Ids start at a random point, like TCP's
    /// initial sequence number, so that an off-path sender cannot guess which are outstanding.
    window: Window,
    /// The sequence number the next [`Client::prepare`] gives: messages are prepared and then
    /// sent in the same order, so it runs ahead of the window's.
    next_prepared: u64,
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
        let mut socket = Socket::connect(first, &config.options, config.trace)?;
        socket.set_tap(config.capture.start()?);
        Ok(Client {
            socket,
            backoff: Backoff {
                timeout: config.timeout,
                retries: config.retries,
            },
            config: config.clone(),
            current: 0,
            buf: vec![0; RECV_BUFFER],
            window: Window::new(1, config.timeout, 0, Id::new(first_id).unwrap_or(Id::MIN)),
            next_prepared: 0,
            warned_fragmentation: false,
        })
    }

    /// The address in use.
    pub fn peer(&self) -> SocketAddr {
        self.config.servers[self.current]
    }

    /// How messages are put on the wire.
    pub fn encoding(&self) -> Encoding {
        self.config.encoding
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

    /// Checks and encodes `message`, giving it the next id. Refuses a message that cannot be
    /// sent as it is: longer than one datagram carries, or, in JSON mode, not UTF-8 (a JSON
    /// string is text; changing the bytes would lose them silently).
    pub fn prepare(&mut self, message: &[u8], which: Which) -> Result<Outgoing, Error> {
        let seq = self.next_prepared;
        let id = self.window.id_of(seq);
        let datagram = match self.config.encoding {
            Encoding::Plain => message.to_vec(),
            Encoding::Json => {
                let body = std::str::from_utf8(message).map_err(|e| Error::NotText {
                    which,
                    valid_up_to: e.valid_up_to(),
                })?;
                request(id, body)
            }
        };
        if datagram.len() > self.max_payload() {
            let body = datagram.len() - self.overhead(id);
            return Err(Error::TooLarge {
                which,
                len: message.len(),
                escaped: (body != message.len()).then_some(body),
                limit: self.limit(id),
                encoding: self.config.encoding,
            });
        }
        if self.config.encoding == Encoding::Plain && proto::text::is_server_reply(message) {
            log::warn!(
                "`{}` is what a server answers, so a udptalk server will not answer it (that \
                 is how two servers would loop; docs/PROTOCOL.md, \"Loops\"): send another text",
                proto::text::Printable(message)
            );
        }
        self.next_prepared += 1;
        Ok(Outgoing { seq, id, datagram })
    }

    /// The refusal of a message of `len` bytes, too long to be read whole (a line of input).
    pub fn too_large(&self, len: usize, which: Which) -> Error {
        Error::TooLarge {
            which,
            len,
            escaped: None,
            limit: self.limit(self.window.id_of(self.next_prepared)),
            encoding: self.config.encoding,
        }
    }

    /// The bytes a datagram with id `id` spends around the message: none in plain text, the
    /// envelope's members in JSON.
    fn overhead(&self, id: Id) -> usize {
        match self.config.encoding {
            Encoding::Plain => 0,
            Encoding::Json => request(id, "").len(),
        }
    }

    /// The longest message the datagram with id `id` carries.
    fn limit(&self, id: Id) -> usize {
        self.max_payload().saturating_sub(self.overhead(id))
    }

    /// Sends `outgoing`, calls `sent` once it is on its way, and waits for the answer, resending
    /// on the [`Backoff`] schedule (never later than [`RETRY_WINDOW`] after the first send),
    /// until `stop` says to stop. When the address in use refuses (nothing listens), the
    /// message goes to the server's next address; when every address refused, the run ends
    /// with [`Error::Refused`].
    pub fn exchange(
        &mut self,
        outgoing: &Outgoing,
        mut sent: impl FnMut() -> Result<(), Error>,
        stop: &Stop,
    ) -> Result<Exchange, Error> {
        let Outgoing { seq, id, datagram } = outgoing;
        let (seq, id) = (*seq, *id);
        // What the log calls this message: its id where the wire carries one; plain text has
        // none, so it is the message's number in the run.
        let which = MessageName {
            id: (self.config.encoding == Encoding::Json).then_some(id),
            seq,
        };
        self.warn_if_fragmenting(datagram.len());
        let mut refusals = 0;
        if self.config.encoding == Encoding::Plain {
            self.discard_late_replies(&mut refusals)?;
        }
        // Whether the datagram was already resent once because it was over the path MTU.
        let mut resent_for_mtu = false;
        let mut exchange = Exchange {
            outcome: Outcome::NoReply(NoReply {
                peer: self.peer(),
                after: Duration::ZERO,
                attempts: 0,
            }),
            attempts: 0,
            rtt: None,
            dropped: 0,
        };
        let first_send = Instant::now();
        let mut attempt = 0;
        // `Sent a message.` once per message, however many datagrams carry it.
        let mut told = false;
        // Whether the window has the message: from its first send that was not refused.
        let mut in_window = false;
        while attempt < self.backoff.attempts() {
            if attempt > 0 {
                if first_send.elapsed() >= RETRY_WINDOW {
                    log::debug!(
                        "{which}: no resend after the {}s retry window",
                        RETRY_WINDOW.as_secs()
                    );
                    break;
                }
                if let Some(interruption) = stop.check() {
                    exchange.outcome = Outcome::Interrupted(interruption);
                    return Ok(exchange);
                }
            }
            let peer = self.peer();
            let sent_at = Instant::now();
            if let Err(e) = self.socket.send(datagram) {
                self.refusal_or_error(
                    e,
                    "sending",
                    &mut refusals,
                    datagram.len(),
                    &mut resent_for_mtu,
                )?;
                continue;
            }
            exchange.attempts += 1;
            if !in_window {
                in_window = true;
                let sent_seq = self.window.send(sent_at);
                debug_assert_eq!(sent_seq, seq, "messages are sent in the order prepared");
            } else if exchange.attempts == 1 {
                // Every earlier send was refused, so none of them can be answered: this one
                // still gives an RTT.
                self.window.retime(seq, sent_at);
            } else {
                self.window.resend(seq, sent_at);
            }
            if !told {
                told = true;
                sent()?;
            }
            let wait = self
                .backoff
                .wait(attempt, rand::random_range(0.0..=Backoff::MAX_JITTER));
            log::debug!(
                "{which}: attempt {} of {} to {peer}, waiting {}",
                attempt + 1,
                self.backoff.attempts(),
                humantime::format_duration(wait)
            );
            // `None`: further than the clock reaches, which no deadline can be either.
            let until = sent_at.checked_add(wait);
            match self.wait_answer(id, until, &mut exchange.dropped, stop) {
                Ok(Some(Outcome::ServerError {
                    code: ErrorCode::Busy,
                    ..
                })) if attempt + 1 < self.backoff.attempts() => {
                    // Busy is the server asking to be asked again later: the backoff does that.
                    log::info!("id {id}: the server is busy; resending after the backoff");
                    if let Err(interruption) = stop.sleep_until(until) {
                        exchange.outcome = Outcome::Interrupted(interruption);
                        return Ok(exchange);
                    }
                }
                Ok(Some(outcome)) => {
                    let answered =
                        matches!(outcome, Outcome::Reply { .. } | Outcome::ServerError { .. });
                    if answered {
                        // Karn's rule is the window's: no RTT when the message was resent.
                        if let Reply::Matched { rtt, .. } =
                            self.window.reply(Key::Seq(seq), Instant::now())
                        {
                            exchange.rtt = rtt;
                        }
                    }
                    exchange.outcome = outcome;
                    return Ok(exchange);
                }
                Ok(None) => {}
                Err(Failure::Io(e)) => {
                    let lost = self.refusal_or_error(
                        e,
                        "receiving",
                        &mut refusals,
                        datagram.len(),
                        &mut resent_for_mtu,
                    )?;
                    // A refused datagram is not counted; one lost on the way (over the path
                    // MTU) was sent, and is resent at once.
                    if !lost {
                        exchange.attempts -= 1;
                    }
                    continue;
                }
                Err(Failure::Other(e)) => return Err(e),
            }
            attempt += 1;
        }
        self.window.give_up(seq);
        exchange.outcome = Outcome::NoReply(NoReply {
            peer: self.peer(),
            // The schedule's waits (without jitter): `2s` for one attempt with --timeout 2s.
            after: (0..exchange.attempts)
                .map(|a| self.backoff.base(a))
                .fold(Duration::ZERO, Duration::saturating_add),
            attempts: exchange.attempts,
        });
        Ok(exchange)
    }

    /// After a send or receive failed with `e`, reads who said so from the error queue:
    /// - the server's own "port unreachable" (nothing listens): moves to the server's next
    ///   address, failing with [`Error::Refused`] when every address refused;
    /// - a refusal by a host on the way: fails with [`Error::PathRefused`];
    /// - over the path MTU: with `--dont-fragment` fails with [`Error::TooBigForPath`]; without,
    ///   warns and returns `Ok(true)` once (the datagram was lost: the caller resends it, and the
    ///   kernel fragments it now that it knows the path MTU);
    /// - anything else: fails with the socket error.
    ///
    /// `Ok(false)`: the datagram was refused, not lost.
    fn refusal_or_error(
        &mut self,
        e: std::io::Error,
        doing: &'static str,
        refusals: &mut usize,
        len: usize,
        resent_for_mtu: &mut bool,
    ) -> Result<bool, Error> {
        let peer = self.peer();
        match path_failure(
            &mut self.socket,
            e,
            doing,
            len,
            self.config.options.dont_fragment,
        ) {
            PathFailure::Refused => {}
            PathFailure::TooBig { mtu, error } if !*resent_for_mtu => {
                *resent_for_mtu = true;
                let said = error.map_or(String::new(), |error| error.said_by());
                log::warn!(
                    "a datagram of {} bytes to {peer} was lost: it is over the path MTU {mtu}{said}; \
                     resending it at once, fragmented by this host (losing any fragment loses \
                     it all): keep messages ≤ {} bytes, or add --dont-fragment to be told instead",
                    crate::error::thousands(len),
                    crate::error::thousands(max_payload_for(peer, mtu))
                );
                return Ok(true);
            }
            PathFailure::TooBig { .. } => {
                return Err(Error::Socket {
                    doing,
                    source: std::io::Error::other(
                        "the datagram was still over the path MTU when resent",
                    ),
                });
            }
            PathFailure::Error(error) => return Err(error),
        }
        let refused = Error::Refused { peer };
        *refusals += 1;
        if *refusals >= self.config.servers.len() {
            return Err(refused);
        }
        log::info!("{refused}; trying the server's next address");
        self.current = (self.current + 1) % self.config.servers.len();
        let tap = self.socket.take_tap();
        self.socket = Socket::connect(self.peer(), &self.config.options, self.config.trace)?;
        self.socket.set_tap(tap);
        Ok(false)
    }

    /// Waits until `until` (`None`: until interrupted) for the answer to `id`; `None` when none
    /// came, [`Outcome::Interrupted`] when `stop` says to stop.
    fn wait_answer(
        &mut self,
        id: Id,
        until: Option<Instant>,
        dropped: &mut u64,
        stop: &Stop,
    ) -> Result<Option<Outcome>, Failure> {
        loop {
            let slice = match stop.slice(until) {
                Ok(slice) if slice.is_zero() => return Ok(None),
                Ok(slice) => slice,
                Err(interruption) => return Ok(Some(Outcome::Interrupted(interruption))),
            };
            match self.socket.recv(&mut self.buf, slice) {
                Ok(Some(len)) => match self.read_answer(len, id).map_err(Failure::Other)? {
                    Some(outcome) => return Ok(Some(outcome)),
                    None => *dropped += 1,
                },
                Ok(None) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    /// The answer in `self.buf[..len]`, or `None` for a datagram that answers no outstanding
    /// request (a duplicate, a late answer to an earlier request, or an id never asked for).
    fn read_answer(&mut self, len: usize, id: Id) -> Result<Option<Outcome>, Error> {
        let datagram = &self.buf[..len];
        let keep = |text: &[u8]| {
            let kept = &text[..text.len().min(self.config.buffer)];
            // Counted only for a cut reply: the whole is gone once this returns.
            let whole_chars = (kept.len() < text.len())
                .then(|| std::str::from_utf8(text).ok().map(|t| t.chars().count()))
                .flatten();
            Outcome::Reply {
                text: kept.to_vec(),
                len: text.len(),
                whole_chars,
            }
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
                    // Not ours: the window tells a duplicate or late answer from a stray one.
                    if let Some(got) = other.id() {
                        self.window.reply(Key::Id(got), Instant::now());
                    }
                    log::debug!(
                        "dropped a {} envelope with id {}; waiting for id {id}",
                        other.kind(),
                        other.id().map_or("null".to_owned(), |id| id.to_string())
                    );
                    Ok(None)
                }
                // An envelope attempt (a JSON object with `v`) of another version or malformed
                // is not the same news as plain text, and asks for another remedy.
                Err(rejection) => match proto::classify(datagram, RECV_BUFFER) {
                    Datagram::Envelope(_) => Err(Error::UnreadableEnvelope {
                        peer: self.peer(),
                        error: rejection.error,
                    }),
                    Datagram::Plain => Err(Error::NotEnvelope {
                        peer: self.peer(),
                        detail: rejection.error.to_string(),
                    }),
                },
            },
        }
    }

    /// Drops datagrams that arrived after their request timed out, so that in plain mode (no
    /// ids) a late answer is never taken for the answer to the next message.
    fn discard_late_replies(&mut self, refusals: &mut usize) -> Result<(), Error> {
        match self.socket.drain(&mut self.buf) {
            Ok(0) => Ok(()),
            Ok(n) => {
                log::warn!(
                    "discarded {n} late repl{} to earlier messages",
                    if n == 1 { "y" } else { "ies" }
                );
                Ok(())
            }
            Err(e) => {
                let mut resent = true;
                self.refusal_or_error(e, "discarding late replies", refusals, 0, &mut resent)
                    .map(drop)
            }
        }
    }

    /// Warns once that datagrams this long are fragmented by this host (over the path MTU the
    /// kernel knows), or may be on the way (RFC 8085 §3.2): one lost fragment loses the whole
    /// datagram. Not with `--dont-fragment`: such a datagram is refused, never fragmented.
    fn warn_if_fragmenting(&mut self, len: usize) {
        let peer = self.peer();
        if self.warned_fragmentation || self.config.options.dont_fragment {
            return;
        }
        // Every IPv4 path carries 576-byte packets, every IPv6 path 1,280: shorter datagrams
        // need no question to the kernel (a system call per send).
        if len > max_payload_for(peer, if peer.is_ipv4() { 576 } else { 1280 })
            && let Some(mtu) = self.socket.path_mtu()
            && len > max_payload_for(peer, mtu)
        {
            self.warned_fragmentation = true;
            log::warn!(
                "a datagram of {} bytes to {peer} is over the path MTU {mtu} this host knows, \
                 and is sent in fragments; losing any fragment loses it all: keep messages ≤ {} \
                 bytes if you can",
                crate::error::thousands(len),
                crate::error::thousands(max_payload_for(peer, mtu))
            );
            return;
        }
        if proto::may_fragment(peer.ip(), len) {
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

/// Why a wait for an answer failed: a socket error (a refusal moves on to the next address),
/// or an answer that ends the run.
enum Failure {
    Io(std::io::Error),
    Other(Error),
}

/// What a failed send or receive on a connected socket means, read from its error queue.
pub(crate) enum PathFailure {
    /// The server's host said nothing listens on the port (exit 4).
    Refused,
    /// The datagram is over the path MTU `mtu` (without `--dont-fragment`: it was lost).
    TooBig {
        /// The path MTU learned.
        mtu: u32,
        /// Who said it, when the queue told.
        error: Option<PathError>,
    },
    /// Anything else ends the run: a host on the way refused (exit 7), `--dont-fragment` and a
    /// datagram over the path MTU (exit 2), or a socket error.
    Error(Error),
}

/// Reads the error queue of `socket` after `e` (from `doing`), for a datagram of `len` bytes.
pub(crate) fn path_failure(
    socket: &mut Socket,
    e: std::io::Error,
    doing: &'static str,
    len: usize,
    dont_fragment: bool,
) -> PathFailure {
    let peer = socket.peer();
    let path = socket.path_error();
    let too_big = |mtu: u32, error: Option<PathError>| {
        if dont_fragment {
            PathFailure::Error(Error::TooBigForPath {
                peer,
                len,
                mtu,
                max: max_payload_for(peer, mtu),
                error,
            })
        } else {
            PathFailure::TooBig { mtu, error }
        }
    };
    match path {
        Some(error) if error.is_from_server(peer) => PathFailure::Refused,
        Some(error) => match error.meaning() {
            Meaning::TooBig(mtu) => too_big(mtu, Some(error)),
            Meaning::PortUnreachable
            | Meaning::AdminProhibited
            | Meaning::Unreachable
            | Meaning::TimeExceeded => PathFailure::Error(Error::PathRefused { peer, error }),
            Meaning::Other => PathFailure::Error(Error::Socket { doing, source: e }),
        },
        None if sys::refused(&e) => PathFailure::Refused,
        None if sys::too_big(&e) => match socket.path_mtu() {
            Some(mtu) => too_big(mtu, None),
            None => PathFailure::Error(Error::Socket { doing, source: e }),
        },
        None => PathFailure::Error(Error::Socket { doing, source: e }),
    }
}

/// The longest UDP payload in a packet of `mtu` bytes to `peer` (IPv4: 20-byte header, IPv6:
/// 40, and UDP's 8).
pub(crate) fn max_payload_for(peer: SocketAddr, mtu: u32) -> usize {
    let headers = if peer.is_ipv4() { 28 } else { 48 };
    usize::try_from(mtu)
        .unwrap_or(usize::MAX)
        .saturating_sub(headers)
}

/// A JSON request with `id` carrying `body`.
fn request(id: Id, body: &str) -> Vec<u8> {
    Envelope::Request {
        id,
        body: body.to_owned(),
        // One request at a time: the one being sent is the lowest still awaited.
        ack: Some(id),
    }
    .encode_to_vec()
}

/// How the log names a message: `id 4890201181755876` (JSON) or `message 2` (plain text, whose
/// datagrams carry no id: the message's number in the run, from 1).
struct MessageName {
    id: Option<Id>,
    seq: u64,
}

impl std::fmt::Display for MessageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "id {id}"),
            None => write!(f, "message {}", self.seq + 1),
        }
    }
}
