//! [`Core`]: what the server does with one datagram, decided without any I/O.
//!
//! [`Core::handle`] takes the datagram, its sender and `now`, writes the answer (if any) into a
//! buffer the caller owns, keeps the books, and returns an [`Event`] saying what happened. It
//! touches no socket, stdout, clock or logger, so every decision is unit-tested directly; the
//! receive loop ([`crate::Server`]) sends the answer and hands the event to the output sinks.
//!
//! The order of the checks is the order of their cost to an attacker: the rate limit first,
//! then the loop rule, then decoding, the reply cache and the anti-amplification budget.
//!
//! Nothing here allocates per datagram once the tables have their working size: envelopes are
//! decoded into borrowing [`EnvelopeView`]s, answers are written into the caller's buffer
//! (`Access count: N` with `itoa`, reply envelopes serialized straight into it), and events
//! borrow the datagram (`tests/allocations.rs` counts allocations to prove it).
//!
//! In sink mode (`--mode sink`) every datagram is counted and none answered but the report
//! query ([`proto::probe::SINK_REPORT_QUERY`]), which gets what [`Arrivals`] kept of its
//! sender.

use foldhash::fast::RandomState as FastState;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use proto::probe::{SINK_REPORT_QUERY, probe_seq};
use proto::text::{ACCESS_COUNT_PREFIX, HELLO_CLIENT};
use proto::{DatagramView, EnvelopeView, ErrorCode, Id};

use crate::arrivals::Arrivals;
use crate::loop_guard::{LoopCause, LoopGuard};
use crate::rate_limit::RateReport;
use crate::reply_cache::{Admission, ReplyCache};
use crate::shared::{Shared, lock};
use crate::summary::{PEER_TALLY_CAP, Summary};
use crate::{Config, Encoding, Mode};

/// What the server did with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Counted as access `access` and answered: a plain datagram, or a request seen for the
    /// first time. `message` is what was kept (cut to `--buffer`), `len` its length before.
    Counted {
        /// The access number.
        access: u64,
        /// The message, cut to `--buffer`.
        message: Cow<'a, [u8]>,
        /// Its length before the cut.
        len: usize,
    },
    /// A resend of request `id`: answered again with access `access`, not counted.
    Resent {
        /// The request's id.
        id: Id,
        /// The access number of its first answer.
        access: u64,
    },
    /// A copy of request `id`, which its sender has acknowledged: neither counted nor answered.
    Done {
        /// The request's id.
        id: Id,
    },
    /// No room to remember request `id`: answered `busy`, not counted.
    Busy {
        /// The request's id.
        id: Id,
    },
    /// An envelope attempt refused with an error envelope (counted as malformed).
    Refused {
        /// The error's code.
        code: ErrorCode,
        /// The error's message (peer values in it escaped).
        message: String,
    },
    /// An envelope of kind `reply` or `error`: a server answers only requests (malformed).
    Ignored {
        /// The envelope's kind.
        kind: &'static str,
    },
    /// Dropped unanswered: its source is over `--rate-limit`.
    RateLimited,
    /// Not answered: answering could start a loop (docs/PROTOCOL.md, "Loops").
    Loop(LoopCause),
}

/// What to do with the answer [`Core::handle`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to send.
    None,
    /// Send it.
    Send,
    /// Not sent: it would break the source's anti-amplification budget (counted).
    OverBudget,
}

/// One datagram's outcome: the event, and whether its answer goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled<'a> {
    /// What happened.
    pub event: Event<'a>,
    /// What to do with the answer buffer.
    pub answer: Answer,
}

/// The server's state and books: the access counter, the policies, the peers seen.
pub struct Core {
    mode: Mode,
    encoding: Encoding,
    buffer: usize,
    summary: Summary,
    cache: ReplyCache,
    /// The access counter, rate limiter and amplification budget, shared with the other
    /// workers' cores (see [`Shared`] for why these and not the rest).
    shared: Arc<Shared>,
    loops: LoopGuard,
    peers: HashSet<SocketAddr, FastState>,
    /// What arrived from each source (sink mode only).
    arrivals: Arrivals,
    /// The text of a reply envelope's body (`Access count: N`), reused.
    text: String,
}

impl Core {
    /// A core answering by `config`, alone (with state of its own).
    pub fn new(config: &Config) -> Core {
        Core::with_shared(config, Arc::new(Shared::new(config, 1)))
    }

    /// A core answering by `config`, one of several workers sharing `shared`.
    pub fn with_shared(config: &Config, shared: Arc<Shared>) -> Core {
        Core {
            mode: config.mode,
            encoding: config.encoding,
            buffer: config.buffer,
            summary: Summary::default(),
            cache: ReplyCache::new(config.cache),
            shared,
            loops: LoopGuard::new(LoopGuard::DEFAULT_SOURCES),
            peers: HashSet::default(),
            arrivals: Arrivals::new(Arrivals::DEFAULT_SOURCES),
            text: String::new(),
        }
    }

    /// The books so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The books, at the end.
    pub fn into_summary(self) -> Summary {
        self.summary
    }

    /// Books a datagram sent to a broadcast or multicast address from `peer`, received and
    /// not answered (see [`Summary::group_ignored`]).
    pub fn group_ignored(&mut self, peer: SocketAddr) {
        self.summary.received += 1;
        self.summary.group_ignored += 1;
        self.tally_peer(peer);
    }

    /// Notes an answer the system would not send.
    pub fn send_failed(&mut self) {
        self.summary.send_failures += 1;
    }

    /// The rate limiter's report of the sources it refused, at most once a second.
    #[inline]
    pub fn take_rate_report(&mut self, now: Instant) -> Option<RateReport> {
        lock(self.shared.limiter.as_ref()?).take_report(now)
    }

    /// Decides what `datagram` from `peer` (its canonical address), received at `now`, gets.
    /// The answer, if any, is written into `answer` (cleared first).
    pub fn handle<'a>(
        &mut self,
        datagram: &'a [u8],
        peer: SocketAddr,
        now: Instant,
        answer: &mut Vec<u8>,
    ) -> Handled<'a> {
        answer.clear();
        self.summary.received += 1;
        self.tally_peer(peer);
        let ip = peer.ip();
        if let Some(limiter) = &self.shared.limiter
            && !lock(limiter).allow(ip, now)
        {
            self.summary.rate_limited += 1;
            return Handled {
                event: Event::RateLimited,
                answer: Answer::None,
            };
        }
        let guarded = !ip.to_canonical().is_loopback();
        if guarded {
            lock(&self.shared.budget).on_receive(ip, datagram.len(), now);
        }
        if let Some(cause) = self.loops.check(peer, datagram, now) {
            self.summary.loops += 1;
            return Handled {
                event: Event::Loop(cause),
                answer: Answer::None,
            };
        }
        let event = self.decide(datagram, peer, now, answer);
        let answered = match event {
            // A sink answers only the report query.
            Event::Counted { .. } => self.mode != Mode::Sink || !answer.is_empty(),
            Event::Resent { .. } | Event::Busy { .. } => true,
            Event::Refused { .. } => true,
            Event::Done { .. } | Event::Ignored { .. } | Event::RateLimited | Event::Loop(_) => {
                false
            }
        };
        if !answered {
            return Handled {
                event,
                answer: Answer::None,
            };
        }
        if guarded && !lock(&self.shared.budget).try_send(ip, answer.len(), now) {
            self.summary.amplification_dropped += 1;
            return Handled {
                event,
                answer: Answer::OverBudget,
            };
        }
        self.loops.answered(peer, answer, now);
        Handled {
            event,
            answer: Answer::Send,
        }
    }

    fn decide<'a>(
        &mut self,
        datagram: &'a [u8],
        peer: SocketAddr,
        now: Instant,
        answer: &mut Vec<u8>,
    ) -> Event<'a> {
        if self.mode == Mode::Sink {
            return self.sink(datagram, peer, answer);
        }
        let decoded = match self.encoding {
            Encoding::Plain => DatagramView::Plain,
            Encoding::Auto => proto::classify_view(datagram, self.buffer),
            Encoding::Json => DatagramView::Envelope(EnvelopeView::decode(datagram, self.buffer)),
        };
        match decoded {
            DatagramView::Plain => {
                let kept = &datagram[..datagram.len().min(self.buffer)];
                let access = self.count();
                if kept.len() < datagram.len() {
                    self.summary.truncated += 1;
                }
                self.write_reply(access, kept, answer);
                Event::Counted {
                    access,
                    message: Cow::Borrowed(kept),
                    len: datagram.len(),
                }
            }
            DatagramView::Envelope(Ok(EnvelopeView::Request { id, body, ack })) => {
                let (event, access) = match self.admit(peer, id, ack, body.as_bytes(), now) {
                    Admission::New { access } => {
                        self.encode_reply(id, access, &body, answer);
                        return Event::Counted {
                            access,
                            len: body.len(),
                            message: match body {
                                Cow::Borrowed(body) => Cow::Borrowed(body.as_bytes()),
                                Cow::Owned(body) => Cow::Owned(body.into_bytes()),
                            },
                        };
                    }
                    Admission::Again { access } => (Event::Resent { id, access }, access),
                    Admission::Done => {
                        self.summary.duplicates += 1;
                        return Event::Done { id };
                    }
                    Admission::Conflict => {
                        self.summary.malformed += 1;
                        let message = format!(
                            "id {id} was already answered for a request with another body; a \
                             resend repeats its body exactly, so send a new message with a new id"
                        );
                        EnvelopeView::Error {
                            id: Some(id),
                            code: Cow::Borrowed(ErrorCode::BadId.as_str()),
                            message: Cow::Borrowed(&message),
                        }
                        .encode(answer);
                        return Event::Refused {
                            code: ErrorCode::BadId,
                            message,
                        };
                    }
                    Admission::Busy => {
                        self.summary.busy += 1;
                        EnvelopeView::Error {
                            id: Some(id),
                            code: Cow::Borrowed(ErrorCode::Busy.as_str()),
                            message: Cow::Borrowed(
                                "the server's reply cache is full; resend after a backoff",
                            ),
                        }
                        .encode(answer);
                        return Event::Busy { id };
                    }
                };
                self.summary.duplicates += 1;
                self.encode_reply(id, access, &body, answer);
                event
            }
            DatagramView::Envelope(Ok(other)) => {
                self.summary.malformed += 1;
                Event::Ignored { kind: other.kind() }
            }
            DatagramView::Envelope(Err(rejection)) => {
                self.summary.malformed += 1;
                let (code, message) = (rejection.error.code(), rejection.error.to_string());
                rejection.to_envelope().encode(answer);
                Event::Refused { code, message }
            }
        }
    }

    /// Sink mode: every datagram is counted and answered nothing, but for the report query,
    /// answered with the asker's [`SinkReport`](proto::probe::SinkReport). Queries are counted
    /// like any datagram (so the books balance as in every mode) but are not in the reports.
    /// An envelope is not decoded further than its body's probe number: a sink neither keeps
    /// answers nor refuses, so a resent request counts again (as a duplicated probe).
    fn sink<'a>(
        &mut self,
        datagram: &'a [u8],
        peer: SocketAddr,
        answer: &mut Vec<u8>,
    ) -> Event<'a> {
        let kept = &datagram[..datagram.len().min(self.buffer)];
        let access = self.count();
        if kept.len() < datagram.len() {
            self.summary.truncated += 1;
        }
        if datagram == SINK_REPORT_QUERY {
            self.arrivals.report(peer).encode(answer);
        } else {
            let seq = match self.encoding {
                Encoding::Plain => probe_seq(datagram),
                Encoding::Auto | Encoding::Json => {
                    match proto::classify_view(datagram, self.buffer) {
                        DatagramView::Plain => probe_seq(datagram),
                        DatagramView::Envelope(Ok(EnvelopeView::Request { body, .. })) => {
                            probe_seq(body.as_bytes())
                        }
                        DatagramView::Envelope(_) => None,
                    }
                }
            };
            self.arrivals.record(peer, datagram.len(), seq);
            self.summary.sink = Some(self.arrivals.total());
        }
        Event::Counted {
            access,
            message: Cow::Borrowed(kept),
            len: datagram.len(),
        }
    }

    /// At most once: a request counts the first time its (peer, id) is seen, and a resend is
    /// the same request only if its body is the same.
    fn admit(
        &mut self,
        peer: SocketAddr,
        id: Id,
        ack: Option<Id>,
        body: &[u8],
        now: Instant,
    ) -> Admission {
        let (summary, counter) = (&mut self.summary, &self.shared.counter);
        let count = || {
            summary.counted += 1;
            counter.next()
        };
        self.cache.admit(peer, id, ack, body, now, count)
    }

    /// Writes what the mode answers to access `access` of `message`.
    fn write_reply(&self, access: u64, message: &[u8], out: &mut Vec<u8>) {
        match self.mode {
            // `proto::text::access_count_reply`, written in place.
            Mode::Count => {
                out.extend_from_slice(ACCESS_COUNT_PREFIX.as_bytes());
                out.extend_from_slice(itoa::Buffer::new().format(access).as_bytes());
            }
            Mode::Hello => out.extend_from_slice(HELLO_CLIENT.as_bytes()),
            Mode::Echo => out.extend_from_slice(message),
            Mode::Sink => {}
        }
    }

    /// Writes the reply envelope to request `id` (access `access`, body `body`) into `out`,
    /// with the mode's answer as its body, without an intermediate buffer but for the
    /// reused `Access count: N` text.
    fn encode_reply(&mut self, id: Id, access: u64, body: &str, out: &mut Vec<u8>) {
        let text: &str = match self.mode {
            Mode::Count => {
                self.text.clear();
                self.text.push_str(ACCESS_COUNT_PREFIX);
                self.text.push_str(itoa::Buffer::new().format(access));
                &self.text
            }
            Mode::Hello => HELLO_CLIENT,
            Mode::Echo => body,
            Mode::Sink => "",
        };
        EnvelopeView::Reply {
            id,
            body: Cow::Borrowed(text),
        }
        .encode(out);
    }

    /// Counts one access and returns its number, from the counter all workers share.
    fn count(&mut self) -> u64 {
        self.summary.counted += 1;
        self.shared.counter.next()
    }

    fn tally_peer(&mut self, peer: SocketAddr) {
        if self.peers.len() < PEER_TALLY_CAP && self.peers.insert(peer) {
            self.summary.peers = self.peers.len() as u64;
        }
    }
}

/// The sentence the per-datagram lines and the debug log give an event that was not counted.
impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Counted { access, .. } => write!(f, "Counted as access {access}."),
            Event::Resent { id, access } => {
                write!(f, "Duplicate of access {access} (id {id}): answered again.")
            }
            Event::Done { id } => write!(
                f,
                "Duplicate of id {id}, which its sender has acknowledged: not answered."
            ),
            Event::Busy { id } => write!(f, "Busy: no room to remember id {id}; answered busy."),
            Event::Refused { code, message } => write!(f, "Rejected: {code}: {message}"),
            Event::Ignored { kind } => write!(
                f,
                "Ignored: a {kind} envelope (a server answers only requests, so that two \
                 servers cannot ping-pong)."
            ),
            Event::RateLimited => write!(f, "Dropped: over its source's --rate-limit."),
            Event::Loop(cause) => write!(f, "Not answered: {}.", cause.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Envelope;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn core(adjust: impl FnOnce(&mut Config)) -> Core {
        let mut config = Config::new(addr(0));
        adjust(&mut config);
        Core::new(&config)
    }

    fn request(id: u64, body: &str, ack: Option<u64>) -> Vec<u8> {
        Envelope::Request {
            id: Id::new(id).unwrap_or(Id::MIN),
            body: body.into(),
            ack: ack.and_then(Id::new),
        }
        .encode_to_vec()
    }

    /// Handles `datagram` and returns the event's summary-free shape and the answer sent.
    fn exchange(
        core: &mut Core,
        peer: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> (String, Option<Vec<u8>>) {
        let mut answer = Vec::new();
        let handled = core.handle(datagram, peer, now, &mut answer);
        let sent = (handled.answer == Answer::Send).then_some(answer);
        (handled.event.to_string(), sent)
    }

    fn books_balance(summary: &Summary) -> bool {
        summary.received
            == summary.counted
                + summary.duplicates
                + summary.malformed
                + summary.rate_limited
                + summary.busy
                + summary.loops
    }

    #[test]
    fn plain_datagrams_are_counted_and_answered_in_the_mode() {
        let now = Instant::now();
        let mut count = core(|_| {});
        let (event, sent) = exchange(&mut count, addr(40_000), b"hi", now);
        assert_eq!(event, "Counted as access 1.");
        assert_eq!(sent.as_deref(), Some(&b"Access count: 1"[..]));
        let mut hello = core(|c| c.mode = Mode::Hello);
        let (_, sent) = exchange(&mut hello, addr(40_000), b"hi", now);
        assert_eq!(sent.as_deref(), Some(&b"Hello Client!!"[..]));
        let mut echo = core(|c| {
            c.mode = Mode::Echo;
            c.buffer = 3;
        });
        let mut answer = Vec::new();
        let handled = echo.handle(b"\xffabcdef", addr(40_000), now, &mut answer);
        assert_eq!(
            handled.event,
            Event::Counted {
                access: 1,
                message: Cow::Borrowed(&b"\xffab"[..]),
                len: 7
            }
        );
        assert_eq!(answer, b"\xffab");
        assert_eq!(echo.summary().truncated, 1);
    }

    #[test]
    fn server_replies_and_well_known_ports_are_loops_in_every_mode_and_encoding() {
        let now = Instant::now();
        for mode in [Mode::Count, Mode::Hello, Mode::Echo] {
            for encoding in [Encoding::Auto, Encoding::Plain, Encoding::Json] {
                let mut core = core(|c| {
                    c.mode = mode;
                    c.encoding = encoding;
                });
                for (peer, datagram) in [
                    (addr(40_000), &b"Access count: 7"[..]),
                    (addr(40_000), b"Hello Client!!"),
                    (addr(7), b"anything"),
                    (addr(53), br#"{"v":1,"id":1,"kind":"request","body":"x"}"#),
                ] {
                    let mut answer = Vec::new();
                    let handled = core.handle(datagram, peer, now, &mut answer);
                    assert!(
                        matches!(handled.event, Event::Loop(_)),
                        "{mode:?} {encoding:?}"
                    );
                    assert_eq!(handled.answer, Answer::None);
                }
                assert_eq!(core.summary().loops, 4);
                assert!(books_balance(core.summary()));
            }
        }
    }

    #[test]
    fn an_echo_that_repeats_our_answer_is_answered_twice_then_not() {
        let base = Instant::now();
        let mut core = core(|c| c.mode = Mode::Echo);
        let peer = addr(40_000);
        let mut answered = 0;
        for n in 0..10 {
            let (_, sent) = exchange(&mut core, peer, b"ping", base + Duration::from_millis(n));
            answered += usize::from(sent.is_some());
        }
        assert_eq!(answered, 3, "the first, then two repeats");
        assert_eq!(core.summary().loops, 7);
        assert!(books_balance(core.summary()));
    }

    #[test]
    fn replies_and_errors_are_never_answered() {
        let now = Instant::now();
        let mut core = core(|_| {});
        for datagram in [
            &br#"{"v":1,"id":3,"kind":"reply","body":"x"}"#[..],
            br#"{"v":1,"id":null,"kind":"error","code":"bad_json","message":"m"}"#,
        ] {
            let (event, sent) = exchange(&mut core, addr(40_000), datagram, now);
            assert!(event.starts_with("Ignored: a "), "{event}");
            assert_eq!(sent, None);
        }
        assert_eq!(core.summary().malformed, 2);
    }

    #[test]
    fn a_request_is_counted_once_and_its_resend_gets_the_same_answer() {
        let now = Instant::now();
        let mut core = core(|_| {});
        let peer = addr(40_000);
        let (_, first) = exchange(&mut core, peer, &request(100, "a", Some(100)), now);
        let (event, again) = exchange(&mut core, peer, &request(100, "a", Some(100)), now);
        assert_eq!(event, "Duplicate of access 1 (id 100): answered again.");
        assert_eq!(first, again);
        let (_, done) = exchange(&mut core, peer, &request(101, "b", Some(101)), now);
        assert!(done.is_some());
        let (event, late) = exchange(&mut core, peer, &request(100, "a", Some(100)), now);
        assert!(event.starts_with("Duplicate of id 100"), "{event}");
        assert_eq!(late, None);
        let summary = core.summary();
        assert_eq!((summary.counted, summary.duplicates), (2, 2));
        assert!(books_balance(summary));
    }

    #[test]
    fn a_resend_gets_the_original_answer_and_a_reused_id_with_another_body_bad_id() {
        let now = Instant::now();
        let peer = addr(40_000);
        for mode in [Mode::Count, Mode::Hello, Mode::Echo] {
            let mut core = core(|c| c.mode = mode);
            let (_, first) = exchange(&mut core, peer, &request(7, "one", Some(7)), now);
            let (_, again) = exchange(&mut core, peer, &request(7, "one", Some(7)), now);
            assert_eq!(first, again, "{mode:?}: a true resend, the same answer");
            let (event, other) = exchange(&mut core, peer, &request(7, "two", Some(7)), now);
            assert!(
                event.starts_with("Rejected: bad_id: id 7 was already answered"),
                "{event}"
            );
            let Ok(Envelope::Error { code, .. }) =
                Envelope::decode(&other.unwrap_or_default(), 65_535)
            else {
                panic!("{mode:?}: an error envelope answers a reused id");
            };
            assert_eq!(code, ErrorCode::BadId);
            let summary = core.summary();
            assert_eq!(
                (summary.counted, summary.duplicates, summary.malformed),
                (1, 1, 1),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn forged_acks_from_a_clients_address_never_silence_it() {
        // The attack that silenced a client: requests forged from its address with id/ack
        // values half the id space apart, then its own next requests.
        let now = Instant::now();
        let mut core = core(|_| {});
        let client = addr(40_000);
        let start = 123_456_789;
        let (_, sent) = exchange(&mut core, client, &request(start, "a", Some(start)), now);
        assert!(sent.is_some());
        let at = |n: u64| Id::MIN.wrapping_add(start - 1 + n).get();
        // With one watermark per peer, a forged ack anywhere in the half of the ring after the
        // client's ids moved it there, and everything the client sent next looked done. Ids
        // farther than 2^16 from the client's are in streams of their own now.
        for forged in [at(1 << 20), at(1 << 40), at(proto::MAX_ID / 2 - 1)] {
            let _ = exchange(
                &mut core,
                client,
                &request(forged, "forged", Some(forged)),
                now,
            );
        }
        for n in 1..=10 {
            let id = start + n;
            let (event, sent) = exchange(&mut core, client, &request(id, "b", Some(id)), now);
            assert!(
                event.starts_with("Counted as access"),
                "request {n}: {event}"
            );
            assert!(sent.is_some());
        }
    }

    #[test]
    fn an_ack_after_the_id_is_refused_with_bad_id() {
        let now = Instant::now();
        let mut core = core(|_| {});
        let (event, sent) = exchange(
            &mut core,
            addr(40_000),
            br#"{"v":1,"id":10,"kind":"request","body":"x","ack":12}"#,
            now,
        );
        assert!(event.starts_with("Rejected: bad_id: "), "{event}");
        let Ok(Envelope::Error { code, id, .. }) =
            Envelope::decode(&sent.unwrap_or_default(), 65_535)
        else {
            panic!("an error envelope answers it");
        };
        assert_eq!((code, id), (ErrorCode::BadId, Id::new(10)));
    }

    #[test]
    fn the_rate_limit_comes_first_and_drops_silently() {
        let now = Instant::now();
        let mut core = core(|c| c.rate_limit = Some(crate::RateLimit::per_second(1)));
        let mut answered = 0;
        for _ in 0..5 {
            let (_, sent) = exchange(&mut core, addr(40_000), b"x", now);
            answered += usize::from(sent.is_some());
        }
        assert_eq!(answered, 2, "a burst of twice the rate");
        assert_eq!(core.summary().rate_limited, 3);
        assert!(books_balance(core.summary()));
    }

    #[test]
    fn off_loopback_answers_stay_within_three_times_what_the_source_sent() {
        let now = Instant::now();
        let mut core = core(|c| {
            c.mode = Mode::Echo;
            c.rate_limit = None;
        });
        let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
        let mut sent_bytes = 0;
        let mut received_bytes = 0;
        for n in 0..20_u8 {
            // Short datagrams answered with... their own bytes: within budget.
            let datagram = [n; 10];
            received_bytes += 10 + 28;
            let mut answer = Vec::new();
            if core.handle(&datagram, peer, now, &mut answer).answer == Answer::Send {
                sent_bytes += answer.len() + 28;
            }
        }
        assert!(sent_bytes <= 3 * received_bytes);
        assert_eq!(core.summary().counted, 20);
    }

    #[test]
    fn a_sink_counts_everything_and_answers_only_the_report_query() {
        let now = Instant::now();
        for encoding in [Encoding::Auto, Encoding::Plain, Encoding::Json] {
            let mut sink = core(|c| {
                c.mode = Mode::Sink;
                c.encoding = encoding;
            });
            let peer = addr(40_000);
            let mut datagrams = vec![
                b"seq 1".to_vec(),
                b"seq 3".to_vec(),
                b"seq 2".to_vec(),
                b"seq 2".to_vec(),
                b"Hello Server!!".to_vec(),
                b"{not json".to_vec(),
            ];
            datagrams.push(request(7, "seq 4", Some(7)));
            for datagram in &datagrams {
                let (event, sent) = exchange(&mut sink, peer, datagram, now);
                assert!(event.starts_with("Counted as access"), "{event}");
                assert_eq!(sent, None, "{encoding:?}: a sink answers nothing");
            }
            let (_, report) = exchange(&mut sink, peer, SINK_REPORT_QUERY, now);
            let report = report.and_then(|r| proto::probe::SinkReport::decode(&r));
            let bytes = datagrams.iter().map(|d| d.len() as u64).sum();
            assert_eq!(
                report,
                Some(proto::probe::SinkReport {
                    datagrams: 7,
                    bytes,
                    lost: 0,
                    reordered: 1,
                    duplicated: 1,
                }),
                "{encoding:?}"
            );
            // Another source has a report of its own; the summary has the totals.
            let (_, other) = exchange(&mut sink, addr(40_001), SINK_REPORT_QUERY, now);
            assert_eq!(
                other.and_then(|r| proto::probe::SinkReport::decode(&r)),
                Some(proto::probe::SinkReport::default())
            );
            let summary = sink.summary();
            assert_eq!(summary.counted, 9, "queries are counted too");
            assert_eq!(summary.sink.map(|s| s.datagrams), Some(7));
            assert!(books_balance(summary));
        }
    }

    #[test]
    fn a_sinks_report_query_goes_through_the_rate_limit_and_the_loop_rule() {
        let now = Instant::now();
        let mut sink = core(|c| {
            c.mode = Mode::Sink;
            c.rate_limit = Some(crate::RateLimit::per_second(1));
        });
        let answered = (0..5)
            .filter(|_| {
                exchange(&mut sink, addr(40_000), SINK_REPORT_QUERY, now)
                    .1
                    .is_some()
            })
            .count();
        assert_eq!(answered, 2, "a burst of twice the rate");
        let well_known = SocketAddr::from(([127, 0, 0, 2], 53));
        let (event, sent) = exchange(&mut sink, well_known, SINK_REPORT_QUERY, now);
        assert!(event.starts_with("Not answered"), "{event}");
        assert_eq!(sent, None);
        assert!(books_balance(sink.summary()));
    }
}
