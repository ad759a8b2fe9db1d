//! [`Window`]: the requests a client has in flight, as a pure type — no sockets, no clocks (the
//! caller passes `now`), so every rule below is unit-tested without sleeping.
//!
//! Each request gets a sequence number (`seq`, from a chosen first one: ping's 1) and, for JSON
//! envelopes, an [`Id`] (`first_id` advanced by the same count, wrapping as ids do). A reply is
//! matched to its request by [`Key`]: the id of a JSON reply, the sequence number of a probe
//! echoed back, or, for a plain reply that says nothing of its request (`Access count: 7`), the
//! oldest request still awaited — what a server answering in order would answer.
//!
//! The books ([`Tally`]), kept as replies come:
//! - a request unanswered past `timeout` ([`Window::expire`]) is **lost**; a reply that comes
//!   after all is matched **late**: it moves from lost to received, so `sent == received + lost
//!   + outstanding` always holds;
//! - a second reply to an answered request is **duplicated**; a reply to nothing sent (or to a
//!   request too old to remember, [`HISTORY`]) is **unknown**, and so is a plain reply when
//!   nothing is awaited;
//! - a reply to a request older than one already answered is **reordered**;
//! - Karn's rule: a request resent ([`Window::resend`]) gives no RTT sample, since its reply
//!   cannot be told to answer one send or the other.
//!
//! RTT samples go into [`Rtts`] (an HdrHistogram): constant memory, however long the run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::{Id, MAX_ID};

use crate::rtt::Rtts;

/// How many requests the window remembers behind the newest, answered or lost, to tell a
/// duplicate or a late reply from an unknown one. The slots are preallocated: no allocation
/// per request.
pub const HISTORY: usize = 4_096;

/// How a reply names the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A probe's sequence number, echoed back.
    Seq(u64),
    /// A JSON envelope's id.
    Id(Id),
    /// Nothing: the oldest request still awaited.
    Oldest,
}

/// What a reply turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The answer to request `seq`.
    Matched {
        /// The request answered.
        seq: u64,
        /// Time from its send, unless it was resent (Karn's rule).
        rtt: Option<Duration>,
        /// It came after the request was counted lost.
        late: bool,
        /// A later request had been answered first.
        reordered: bool,
    },
    /// A further answer to request `seq`, already answered.
    Duplicate {
        /// The request.
        seq: u64,
    },
    /// An answer to nothing this window sent or still remembers.
    Unknown,
}

/// The window's books. `sent == received + lost + outstanding` at every moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent (each once, however often it was resent).
    pub sent: u64,
    /// Resends.
    pub resent: u64,
    /// Requests answered (late ones included).
    pub received: u64,
    /// Requests counted lost and never answered.
    pub lost: u64,
    /// Requests answered after they were counted lost.
    pub late: u64,
    /// Further answers to answered requests.
    pub duplicated: u64,
    /// Answers that came after an answer to a later request.
    pub reordered: u64,
    /// Answers to nothing sent or remembered.
    pub unknown: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting { sent_at: Instant, resent: bool },
    Answered,
    Lost { sent_at: Instant, resent: bool },
}

/// The requests in flight and the ones just before them; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    timeout: Duration,
    first_seq: u64,
    first_id: Id,
    /// `slots[i]` is request `base + i`; the newest is `next_seq - 1`.
    slots: VecDeque<Slot>,
    base: u64,
    next_seq: u64,
    /// No request below this one is waiting (the ack watermark, once advanced).
    low: u64,
    outstanding: usize,
    highest_answered: Option<u64>,
    tally: Tally,
    rtts: Rtts,
}

impl Window {
    /// A window of at most `capacity` requests in flight (at least 1), each lost after
    /// `timeout`, numbered from `first_seq`, with JSON ids from `first_id`.
    pub fn new(capacity: usize, timeout: Duration, first_seq: u64, first_id: Id) -> Window {
        let capacity = capacity.max(1);
        Window {
            capacity,
            timeout,
            first_seq,
            first_id,
            slots: VecDeque::with_capacity(HISTORY + capacity + 1),
            base: first_seq,
            next_seq: first_seq,
            low: first_seq,
            outstanding: 0,
            highest_answered: None,
            tally: Tally::default(),
            rtts: Rtts::new(),
        }
    }

    /// Whether another request may be sent: fewer than `capacity` are in flight.
    pub fn has_room(&self) -> bool {
        self.outstanding < self.capacity
    }

    /// How many more requests may be sent now: `capacity` less those in flight.
    pub fn capacity_left(&self) -> usize {
        self.capacity.saturating_sub(self.outstanding)
    }

    /// Requests in flight: sent, neither answered nor lost.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The sequence number the next [`Window::send`] gives.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The JSON id of request `seq`.
    pub fn id_of(&self, seq: u64) -> Id {
        self.first_id
            .wrapping_add(seq.wrapping_sub(self.first_seq) % MAX_ID)
    }

    /// The books so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// The RTT samples so far.
    pub fn rtts(&self) -> &Rtts {
        &self.rtts
    }

    /// The lowest sequence number still awaited (the ack watermark), if any is.
    pub fn ack(&self) -> Option<u64> {
        (self.low..self.next_seq).find(|&seq| matches!(self.slot(seq), Some(Slot::Waiting { .. })))
    }

    /// [`Window::ack`] as a JSON id: what a request's `ack` member says.
    pub fn ack_id(&self) -> Option<Id> {
        self.ack().map(|seq| self.id_of(seq))
    }

    /// Records a request sent at `now`; returns its sequence number. The caller checks
    /// [`Window::has_room`] first; a window over capacity still keeps its books right.
    pub fn send(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot::Waiting {
            sent_at: now,
            resent: false,
        });
        self.outstanding += 1;
        self.tally.sent += 1;
        self.forget_old();
        seq
    }

    /// Records that request `seq`, still awaited, was sent again at `now`: its timeout starts
    /// over, and its answer gives no RTT sample. `false` when `seq` is not awaited.
    pub fn resend(&mut self, seq: u64, now: Instant) -> bool {
        match self.slot_mut(seq) {
            Some(slot @ Slot::Waiting { .. }) => {
                *slot = Slot::Waiting {
                    sent_at: now,
                    resent: true,
                };
                self.tally.resent += 1;
                true
            }
            _ => false,
        }
    }

    /// Records that request `seq`, still awaited, was sent again at `now` because its earlier
    /// sends were refused (ICMP port unreachable): none of them can be answered, so its timeout
    /// starts over and its answer still gives an RTT sample. `false` when `seq` is not awaited.
    pub fn retime(&mut self, seq: u64, now: Instant) -> bool {
        match self.slot_mut(seq) {
            Some(Slot::Waiting { sent_at, .. }) => {
                *sent_at = now;
                true
            }
            _ => false,
        }
    }

    /// Matches a reply received at `now` by `key`, and keeps the books.
    pub fn reply(&mut self, key: Key, now: Instant) -> Reply {
        let seq = match key {
            Key::Seq(seq) => Some(seq),
            Key::Id(id) => self.seq_of(id),
            Key::Oldest => self.ack(),
        };
        let Some(seq) = seq else {
            self.tally.unknown += 1;
            return Reply::Unknown;
        };
        let (sent_at, resent, late) = match self.slot(seq) {
            Some(Slot::Waiting { sent_at, resent }) => (sent_at, resent, false),
            Some(Slot::Lost { sent_at, resent }) => (sent_at, resent, true),
            Some(Slot::Answered) => {
                self.tally.duplicated += 1;
                return Reply::Duplicate { seq };
            }
            None => {
                self.tally.unknown += 1;
                return Reply::Unknown;
            }
        };
        if let Some(slot) = self.slot_mut(seq) {
            *slot = Slot::Answered;
        }
        if late {
            self.tally.lost -= 1;
            self.tally.late += 1;
        } else {
            self.outstanding -= 1;
        }
        self.tally.received += 1;
        let reordered = self.highest_answered.is_some_and(|highest| seq < highest);
        if reordered {
            self.tally.reordered += 1;
        } else {
            self.highest_answered = Some(seq);
        }
        let rtt = (!resent).then(|| now.saturating_duration_since(sent_at));
        if let Some(rtt) = rtt {
            self.rtts.record(rtt);
        }
        self.advance_low();
        Reply::Matched {
            seq,
            rtt,
            late,
            reordered,
        }
    }

    /// Counts as lost every request awaited longer than the timeout at `now`, calling `lost`
    /// with each one's sequence number (oldest first); returns how many.
    pub fn expire(&mut self, now: Instant, mut lost: impl FnMut(u64)) -> usize {
        let mut count = 0;
        let start = usize::try_from(self.low - self.base).unwrap_or(usize::MAX);
        for (offset, slot) in self.slots.iter_mut().enumerate().skip(start) {
            if let Slot::Waiting { sent_at, resent } = *slot {
                if now.saturating_duration_since(sent_at) >= self.timeout {
                    *slot = Slot::Lost { sent_at, resent };
                    count += 1;
                    lost(self.base + offset as u64);
                }
            }
        }
        self.outstanding -= count;
        self.tally.lost += count as u64;
        self.advance_low();
        count
    }

    /// Counts request `seq`, still awaited, as lost now (its sender gave up on it). `false`
    /// when it was not awaited.
    pub fn give_up(&mut self, seq: u64) -> bool {
        match self.slot_mut(seq) {
            Some(slot) => match *slot {
                Slot::Waiting { sent_at, resent } => {
                    *slot = Slot::Lost { sent_at, resent };
                    self.outstanding -= 1;
                    self.tally.lost += 1;
                    self.advance_low();
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// When the next awaited request will be lost, if any is awaited.
    pub fn next_expiry(&self) -> Option<Instant> {
        let start = usize::try_from(self.low - self.base).unwrap_or(usize::MAX);
        self.slots
            .iter()
            .skip(start)
            .filter_map(|slot| match slot {
                Slot::Waiting { sent_at, .. } => Some(*sent_at),
                _ => None,
            })
            .min()
            .map(|sent_at| sent_at.checked_add(self.timeout).unwrap_or(sent_at))
    }

    /// The request `id` names: the one among those remembered whose id it is.
    fn seq_of(&self, id: Id) -> Option<u64> {
        let newest = self.next_seq.checked_sub(1)?;
        if newest < self.base {
            return None;
        }
        // How far back from the newest request `id` lies on the ring of ids.
        let back = (self.id_of(newest).get() + MAX_ID - id.get()) % MAX_ID;
        let seq = newest.checked_sub(back)?;
        (seq >= self.base).then_some(seq)
    }

    fn slot(&self, seq: u64) -> Option<Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(index).copied()
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(index)
    }

    /// Moves the watermark past requests no longer awaited.
    fn advance_low(&mut self) {
        while self.low < self.next_seq && !matches!(self.slot(self.low), Some(Slot::Waiting { .. }))
        {
            self.low += 1;
        }
    }

    /// Forgets the oldest requests beyond [`HISTORY`], unless still awaited (a request is
    /// never forgotten while awaited: with a huge timeout the window then grows).
    fn forget_old(&mut self) {
        while self.slots.len() > HISTORY + self.capacity {
            match self.slots.front() {
                Some(Slot::Waiting { .. }) | None => break,
                Some(_) => {
                    self.slots.pop_front();
                    self.base += 1;
                    self.low = self.low.max(self.base);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window(capacity: usize) -> (Window, Instant) {
        (Window::new(capacity, TIMEOUT, 1, Id::MIN), Instant::now())
    }

    /// `sent == received + lost + outstanding`, whatever happened.
    fn balanced(w: &Window) -> bool {
        let t = w.tally();
        t.sent == t.received + t.lost + w.outstanding() as u64
    }

    #[test]
    fn in_order_replies_give_rtts_and_move_the_watermark() {
        let (mut w, t0) = window(4);
        let seqs: Vec<u64> = (0..3).map(|i| w.send(t0 + ms(i))).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(w.has_room());
        assert_eq!(w.ack(), Some(1));
        let r = w.reply(Key::Seq(1), t0 + ms(5));
        assert_eq!(
            r,
            Reply::Matched {
                seq: 1,
                rtt: Some(ms(5)),
                late: false,
                reordered: false
            }
        );
        assert_eq!(w.ack(), Some(2));
        w.reply(Key::Seq(2), t0 + ms(6));
        w.reply(Key::Seq(3), t0 + ms(7));
        assert_eq!(w.ack(), None);
        assert_eq!(w.outstanding(), 0);
        assert_eq!(w.rtts().len(), 3);
        assert_eq!(w.rtts().max(), Some(ms(5)));
        assert!(balanced(&w));
    }

    #[test]
    fn the_window_fills_to_its_capacity() {
        let (mut w, t0) = window(2);
        w.send(t0);
        w.send(t0);
        assert!(!w.has_room());
        w.reply(Key::Oldest, t0);
        assert!(w.has_room());
    }

    #[test]
    fn a_request_past_its_timeout_is_lost_and_a_late_reply_moves_it_back() {
        let (mut w, t0) = window(4);
        w.send(t0);
        w.send(t0 + ms(50));
        assert_eq!(w.next_expiry(), Some(t0 + TIMEOUT));
        let mut lost = Vec::new();
        assert_eq!(w.expire(t0 + ms(99), |s| lost.push(s)), 0);
        assert_eq!(w.expire(t0 + ms(100), |s| lost.push(s)), 1);
        assert_eq!(lost, [1]);
        assert_eq!((w.tally().lost, w.outstanding(), w.ack()), (1, 1, Some(2)));
        assert!(balanced(&w));
        let late = w.reply(Key::Seq(1), t0 + ms(120));
        assert_eq!(
            late,
            Reply::Matched {
                seq: 1,
                rtt: Some(ms(120)),
                late: true,
                reordered: false
            }
        );
        let t = w.tally();
        assert_eq!((t.lost, t.late, t.received), (0, 1, 1));
        assert!(balanced(&w));
        // A second answer to it is a duplicate, not another late one.
        assert_eq!(
            w.reply(Key::Seq(1), t0 + ms(130)),
            Reply::Duplicate { seq: 1 }
        );
        assert!(balanced(&w));
    }

    #[test]
    fn duplicates_and_unknown_replies_are_told_apart() {
        let (mut w, t0) = window(4);
        w.send(t0);
        w.reply(Key::Seq(1), t0);
        assert_eq!(w.reply(Key::Seq(1), t0), Reply::Duplicate { seq: 1 });
        assert_eq!(w.reply(Key::Seq(2), t0), Reply::Unknown);
        assert_eq!(w.reply(Key::Seq(0), t0), Reply::Unknown);
        // A plain reply when nothing is awaited answers nothing we know.
        assert_eq!(w.reply(Key::Oldest, t0), Reply::Unknown);
        let t = w.tally();
        assert_eq!((t.received, t.duplicated, t.unknown), (1, 1, 3));
        assert!(balanced(&w));
    }

    #[test]
    fn reordered_replies_are_counted_once_each() {
        let (mut w, t0) = window(8);
        for _ in 0..4 {
            w.send(t0);
        }
        for seq in [2, 4, 1, 3] {
            w.reply(Key::Seq(seq), t0 + ms(1));
        }
        // 1 came after 2 (and 4), 3 after 4.
        assert_eq!(w.tally().reordered, 2);
        assert_eq!(w.ack(), None);
    }

    #[test]
    fn plain_replies_answer_the_oldest_request() {
        let (mut w, t0) = window(3);
        for i in 0..3 {
            w.send(t0 + ms(i));
        }
        w.expire(t0 + ms(100), |_| {});
        // 1 is lost: the next plain reply answers 2, the oldest awaited.
        assert!(matches!(
            w.reply(Key::Oldest, t0 + ms(101)),
            Reply::Matched { seq: 2, .. }
        ));
    }

    #[test]
    fn karn_a_resent_request_gives_no_rtt_sample() {
        let (mut w, t0) = window(2);
        let seq = w.send(t0);
        assert!(w.resend(seq, t0 + ms(80)));
        // The resend restarted the timeout.
        assert_eq!(w.expire(t0 + ms(150), |_| {}), 0);
        assert_eq!(
            w.reply(Key::Seq(seq), t0 + ms(160)),
            Reply::Matched {
                seq,
                rtt: None,
                late: false,
                reordered: false
            }
        );
        assert!(w.rtts().is_empty());
        assert_eq!(w.tally().resent, 1);
        assert!(!w.resend(seq, t0), "an answered request is not resent");
    }

    #[test]
    fn ids_wrap_and_still_match() {
        let first = Id::new(MAX_ID - 1).unwrap_or(Id::MIN);
        let mut w = Window::new(8, TIMEOUT, 1, first);
        let t0 = Instant::now();
        let ids: Vec<u64> = (0..4)
            .map(|_| {
                let seq = w.send(t0);
                w.id_of(seq).get()
            })
            .collect();
        assert_eq!(ids, [MAX_ID - 1, MAX_ID, 1, 2]);
        assert_eq!(w.ack_id().map(Id::get), Some(MAX_ID - 1));
        for id in [1, MAX_ID - 1] {
            let id = Id::new(id).unwrap_or(Id::MIN);
            assert!(matches!(w.reply(Key::Id(id), t0), Reply::Matched { .. }));
        }
        assert_eq!(w.ack_id().map(Id::get), Some(MAX_ID));
        // An id never sent is unknown, not a match to something else.
        assert_eq!(
            w.reply(Key::Id(Id::new(3).unwrap_or(Id::MIN)), t0),
            Reply::Unknown
        );
        assert_eq!(w.tally().reordered, 1);
    }

    #[test]
    fn memory_stays_bounded_over_a_long_run() {
        let (mut w, t0) = window(32);
        for i in 0..(HISTORY as u64 * 3) {
            let seq = w.send(t0);
            if i % 7 == 0 {
                w.give_up(seq);
            } else {
                w.reply(Key::Seq(seq), t0);
            }
            assert!(w.slots.len() <= HISTORY + 32);
        }
        assert!(balanced(&w));
        // A reply to a request long forgotten is unknown.
        assert_eq!(w.reply(Key::Seq(1), t0), Reply::Unknown);
    }

    #[test]
    fn books_balance_under_any_mix() {
        // A small deterministic mix of every event, checked against a naive model: a map of
        // every request's state.
        use std::collections::HashMap;
        let (mut w, t0) = window(5);
        let mut model: HashMap<u64, &str> = HashMap::new();
        let mut x: u64 = 12_345;
        for step in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let now = t0 + ms(step);
            match (x >> 33) % 4 {
                0 if w.has_room() => {
                    let seq = w.send(now);
                    model.insert(seq, "waiting");
                }
                1 => {
                    w.expire(now, |seq| {
                        model.insert(seq, "lost");
                    });
                }
                _ => {
                    let seq = (x >> 40) % (w.next_seq() + 1);
                    let before = model.get(&seq).copied();
                    match w.reply(Key::Seq(seq), now) {
                        Reply::Matched { late, .. } => {
                            assert_eq!(before, Some(if late { "lost" } else { "waiting" }));
                            model.insert(seq, "answered");
                        }
                        Reply::Duplicate { .. } => assert_eq!(before, Some("answered")),
                        Reply::Unknown => assert_eq!(before, None),
                    }
                }
            }
            assert!(balanced(&w));
            let count = |state| model.values().filter(|&&s| s == state).count() as u64;
            let t = w.tally();
            assert_eq!(
                (t.received, t.lost, w.outstanding() as u64),
                (count("answered"), count("lost"), count("waiting"))
            );
        }
    }
}
