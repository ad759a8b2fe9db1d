//! What each datagram gets: decoded, checked against the source's limits and the reply cache,
//! counted, shown in the tutorial's words, and answered. Everything but the socket.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use proto::text::{HELLO_CLIENT, Printable, access_count_reply};
use proto::{Datagram, Envelope, ErrorCode, Id};

use crate::amplification::AmplificationBudget;
use crate::rate_limit::RateLimiter;
use crate::reply_cache::{Lookup, ReplyCache};
use crate::server::{PEER_TALLY_CAP, Summary};
use crate::{Config, Encoding, Mode};

/// Decides, counts, shows and answers; one per server.
pub struct Responder {
    config: Config,
    summary: Summary,
    cache: ReplyCache,
    limiter: Option<RateLimiter>,
    budget: AmplificationBudget,
    peers: HashSet<SocketAddr>,
    /// The per-datagram lines, written to stdout in one piece.
    lines: String,
    stdout_open: bool,
}

/// What the server does with a valid request.
enum Verdict {
    /// First seen: counted, with this access number.
    New(u64),
    /// Seen and answered before: answered again with the same access number, not counted.
    Again(u64),
    /// Its sender has moved past it: neither counted nor answered.
    Done,
    /// Its id was answered for another body: refused (`bad_id`), counted as malformed.
    Conflict,
    /// No room to remember it: answered `busy`, not counted.
    Busy,
}

impl Responder {
    /// A responder for `config`.
    pub fn new(config: Config) -> Responder {
        let limiter = config.rate_limit.map(|rate| {
            RateLimiter::new(rate.per_second, rate.burst, RateLimiter::DEFAULT_SOURCES)
        });
        Responder {
            cache: ReplyCache::new(config.cache),
            config,
            summary: Summary::default(),
            limiter,
            budget: AmplificationBudget::default(),
            peers: HashSet::new(),
            lines: String::new(),
            stdout_open: true,
        }
    }

    /// The configuration it answers by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The books so far.
    pub fn into_summary(self) -> Summary {
        self.summary
    }

    /// Notes an answer the system would not send.
    pub fn send_failed(&mut self) {
        self.summary.send_failures += 1;
    }

    /// Decodes, counts and shows `datagram` from `peer`, received at `now`, and returns the
    /// answer to send, if any.
    pub fn answer(&mut self, datagram: &[u8], peer: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        self.summary.received += 1;
        self.tally_peer(peer);
        let ip = peer.ip();
        if let Some(limiter) = &mut self.limiter {
            let allowed = limiter.allow(ip, now);
            if let Some(report) = limiter.take_report(now) {
                log::warn!("rate limit: {report}");
            }
            if !allowed {
                self.summary.rate_limited += 1;
                return None;
            }
        }
        let guarded = !is_local(ip);
        if guarded {
            self.budget.on_receive(ip, datagram.len(), now);
        }
        self.lines.clear();
        let answer = self.decide(datagram, peer, now);
        self.flush_lines();
        let answer = answer?;
        if guarded && !self.budget.try_send(ip, answer.len(), now) {
            self.summary.amplification_dropped += 1;
            log::debug!(
                "{peer}: answer of {} bytes dropped: over 3× what the source sent",
                answer.len()
            );
            return None;
        }
        Some(answer)
    }

    fn decide(&mut self, datagram: &[u8], peer: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        let limit = self.config.buffer;
        let len = datagram.len();
        let decoded = match self.config.encoding {
            Encoding::Plain => Datagram::Plain,
            Encoding::Auto => proto::classify(datagram, limit),
            Encoding::Json => Datagram::Envelope(Envelope::decode(datagram, limit)),
        };
        match decoded {
            Datagram::Plain => {
                let kept = &datagram[..len.min(limit)];
                let count = self.count();
                self.show_message(count, peer, kept, len);
                Some(self.reply_text(count, kept).into_owned())
            }
            Datagram::Envelope(Ok(Envelope::Request { id, body, ack })) => {
                let access = match self.admit(peer, id, ack, body.as_bytes(), now) {
                    Verdict::New(access) => {
                        self.show_message(access, peer, body.as_bytes(), body.len());
                        access
                    }
                    Verdict::Again(access) => {
                        self.summary.duplicates += 1;
                        self.show_note(
                            peer,
                            format_args!("Duplicate of access {access} (id {id}): answered again."),
                        );
                        access
                    }
                    Verdict::Done => {
                        self.summary.duplicates += 1;
                        self.show_note(
                            peer,
                            format_args!("Duplicate of id {id}, which its sender has acknowledged: not answered."),
                        );
                        return None;
                    }
                    Verdict::Busy => {
                        self.summary.busy += 1;
                        self.show_note(
                            peer,
                            format_args!("Busy: no room to remember id {id}; answered busy."),
                        );
                        let busy = Envelope::Error {
                            id: Some(id),
                            code: ErrorCode::Busy,
                            message: "the server's reply cache is full; resend after a backoff"
                                .to_owned(),
                        };
                        return Some(busy.encode_to_vec());
                    }
                    Verdict::Conflict => {
                        self.summary.malformed += 1;
                        self.show_note(
                            peer,
                            format_args!("Rejected: id {id} was answered for another body."),
                        );
                        let refusal = Envelope::Error {
                            id: Some(id),
                            code: ErrorCode::BadId,
                            message: format!(
                                "id {id} was already used for another request; use a new id"
                            ),
                        };
                        return Some(refusal.encode_to_vec());
                    }
                };
                let body =
                    String::from_utf8_lossy(&self.reply_text(access, body.as_bytes())).into_owned();
                Some(Envelope::Reply { id, body }.encode_to_vec())
            }
            Datagram::Envelope(Ok(other)) => {
                self.summary.malformed += 1;
                self.show_note(
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
                    self.show_note(peer, format_args!("Rejected: {code}: {message}"));
                }
                Some(answer.encode_to_vec())
            }
        }
    }

    /// At most once: a request counts the first time its (peer, id) is seen.
    fn admit(
        &mut self,
        peer: SocketAddr,
        id: Id,
        ack: Option<Id>,
        body: &[u8],
        now: Instant,
    ) -> Verdict {
        match self.cache.check(peer, id, ack, body, now) {
            Lookup::New => {
                let access = self.count();
                self.cache.record(peer, id, body, access, now);
                Verdict::New(access)
            }
            Lookup::Answered { access } => Verdict::Again(access),
            Lookup::Done => Verdict::Done,
            Lookup::Conflict => Verdict::Conflict,
            Lookup::Busy => Verdict::Busy,
        }
    }

    /// What the mode answers to access `count` of `message`.
    fn reply_text<'a>(&self, count: u64, message: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.config.mode {
            Mode::Count => access_count_reply(count).into_bytes().into(),
            Mode::Hello => HELLO_CLIENT.as_bytes().into(),
            Mode::Echo => message.into(),
        }
    }

    /// Counts one access and returns its number.
    fn count(&mut self) -> u64 {
        self.summary.counted += 1;
        self.summary.counted
    }

    fn tally_peer(&mut self, peer: SocketAddr) {
        if self.peers.len() < PEER_TALLY_CAP && self.peers.insert(peer) {
            self.summary.peers = self.peers.len() as u64;
        }
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

    /// The lines for a datagram that was not counted: refused, ignored, a duplicate, or busy.
    fn show_note(&mut self, peer: SocketAddr, what: fmt::Arguments<'_>) {
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

/// Whether `ip` is this machine: loopback, or an IPv4-mapped loopback address.
pub fn is_local(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}
