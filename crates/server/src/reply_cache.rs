//! [`ReplyCache`]: at-most-once answers to JSON requests, in memory bounded by fixed caps.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use proto::{Id, MAX_ID, RETRY_WINDOW};

use crate::timeline::Timeline;

/// The fixed caps of a [`ReplyCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// How long an answer is kept: the client never resends later, so [`RETRY_WINDOW`].
    pub window: Duration,
    /// Most answers kept for one peer: its requests in flight that it has not acknowledged.
    pub per_peer: usize,
    /// Most answers kept in all.
    pub entries: usize,
    /// Most peers remembered at once.
    pub peers: usize,
}

impl Default for CacheLimits {
    /// The server's caps.
    ///
    /// `per_peer` is 256, so that a pipelining client has room to spare (udptalk's own client
    /// has one request in flight) while no one peer can take more than 1/256 of the table.
    /// `entries` is 65,536: with acknowledgements, that many requests may be in flight
    /// server-wide at any rate; without them, answers live the whole window and the cache
    /// sustains about 2,000 new requests a second (65,536 / 30 s) before answering `busy`.
    /// `peers` is 16,384 clients heard from within the last window.
    ///
    /// Memory grows only with use. An answer costs at most 134 bytes (a 40-byte slot in its
    /// peer's vector, twice over for spare room, and 54 bytes of timeline) and a peer at most
    /// about 320 (an 89-byte hash-table slot, twice over at the table's lowest load, 54 bytes of
    /// timeline and two spare answer slots). Full to these caps, the cache takes under 14 MiB;
    /// serving a handful of clients that acknowledge, a few KiB.
    fn default() -> CacheLimits {
        CacheLimits {
            window: RETRY_WINDOW,
            per_peer: 256,
            entries: 65_536,
            peers: 16_384,
        }
    }
}

/// What [`ReplyCache::check`] found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen before, and there is room to remember it: count it, answer it, then
    /// [`record`](ReplyCache::record) the access number.
    New,
    /// Answered less than a window ago: a resend. Send the same answer again; do not count it.
    Answered {
        /// The access number of the first answer.
        access: u64,
    },
    /// The id comes before the peer's watermark: a late duplicate of a request its sender has
    /// moved past. Neither count nor answer it.
    Done,
    /// The caps are full of answers that could still be resent: answer `busy`, do not count.
    Busy,
}

/// At-most-once answers per (peer, id) within a window, in memory bounded by fixed caps.
///
/// A client resends a request (same peer, same id) until it gets an answer or
/// [`RETRY_WINDOW`] has passed since the first send. The server must count each request once and
/// give every resend the same answer, so it remembers, per (peer, id), the access number it
/// answered with and when. That is all it keeps: the reply's text is rebuilt from the number
/// (hello and echo answers are the same every time; the entry is still kept, so that a resend
/// is never counted twice in the server's books).
///
/// A cache that simply kept every answer for the whole window would fill at `entries / window`
/// requests per second (about 2,000 a second with the defaults) and then have to refuse work.
/// So entries live only while their request may still be resent. Each request may carry an
/// acknowledgement watermark, `ack`: the lowest id its sender still awaits, in the spirit of
/// NFSv4.1's session slots (RFC 8881 §2.10.6). Everything the peer sent before `ack` has been
/// answered and will not be resent, so its entries are dropped and the room goes back to the
/// table at once. A client that acknowledges as it goes holds one entry per request in flight,
/// whatever its rate. A request whose id comes before the watermark (in sequence-number order,
/// [`Id::precedes`]) is a late duplicate the network delivered after its sender moved on: it is
/// [`Lookup::Done`], neither counted nor answered.
///
/// Caps on entries per peer, entries in total and peers bound the memory. When they are full of
/// entries that could still be resent, a new request gets [`Lookup::Busy`]: evicting one of them
/// would let its resend be counted twice.
///
/// The limits of the guarantee: a peer's watermark is forgotten once it has been silent for a
/// window, so a duplicate the network holds longer than that is counted again; and a client
/// that moves its watermark by half the id space or more makes old ids look new again, as
/// RFC 1982 leaves such distances undefined.
///
/// Reclaiming is amortised O(1) per call and never scans the table: answers and peers each have
/// a timeline in the order they were written, and since `now` never goes backwards, the
/// dead ones are always at its front. (Were `now` to go backwards, the caps would still hold;
/// answers would only be kept longer.)
#[derive(Debug)]
pub struct ReplyCache {
    limits: CacheLimits,
    peers: HashMap<SocketAddr, Peer>,
    /// Answers in the order recorded; an item is live while its answer has the same serial.
    answered: Timeline<Recorded>,
    /// Peers in the order last heard from; an item is live while its time is the peer's
    /// `last_seen`.
    heard: Timeline<Heard>,
    /// Answers kept in all peers (the sum of their `answers.len()`).
    live: usize,
    /// The serial of the next answer recorded, unique for the cache's life.
    next_serial: u64,
}

/// What the cache knows of one peer.
#[derive(Debug)]
struct Peer {
    /// The lowest id the peer still awaits, as it last told us: ids before it are done.
    watermark: Option<Id>,
    /// When the peer last sent a request: its state is kept a window after that, so that late
    /// duplicates of acknowledged requests are still recognised.
    last_seen: Instant,
    answers: Answers,
}

/// An answer given: only what is needed to give it again.
#[derive(Debug, Clone, Copy)]
struct Answer {
    access: u64,
    at: Instant,
    /// Tells this answer's timeline item from that of an earlier answer to the same id.
    serial: u64,
}

/// A timeline item: the answer with `serial` was recorded for `(peer, id)`.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    serial: u64,
    peer: SocketAddr,
    id: Id,
}

/// A timeline item: `peer` sent a request at `at`.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    peer: SocketAddr,
}

impl ReplyCache {
    /// An empty cache with the given caps. Nothing is allocated until the first request.
    pub fn new(limits: CacheLimits) -> ReplyCache {
        ReplyCache {
            limits,
            peers: HashMap::new(),
            answered: Timeline::new(limits.entries),
            heard: Timeline::new(limits.peers),
            live: 0,
            next_serial: 0,
        }
    }

    /// Looks up request `id` from `peer`, after applying its acknowledgement watermark `ack`
    /// (the lowest id the peer still awaits, if the request carries one).
    #[must_use]
    pub fn check(&mut self, peer: SocketAddr, id: Id, ack: Option<Id>, now: Instant) -> Lookup {
        self.reclaim(now);
        if !self.hear(peer, now) {
            // The peer table is full of peers whose state is still needed: judge this request
            // by itself.
            return if ack.is_some_and(|ack| id.precedes(ack)) {
                Lookup::Done
            } else {
                Lookup::Busy
            };
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return Lookup::Busy;
        };
        if let Some(ack) = ack {
            self.live -= state.acknowledge(ack);
        }
        if state.is_done(id) {
            Lookup::Done
        } else if let Some(answer) = state.answers.get(id) {
            Lookup::Answered {
                access: answer.access,
            }
        } else if state.answers.len() < self.limits.per_peer && self.live < self.limits.entries {
            Lookup::New
        } else {
            Lookup::Busy
        }
    }

    /// Remembers that request `id` from `peer` was answered with access number `access`.
    ///
    /// Call it after [`check`](ReplyCache::check) returned [`Lookup::New`], with the same `now`
    /// or a later one: then there is room. Otherwise, if the caps are full or the id is done,
    /// nothing is kept, so the caps hold whatever the caller does. Recording an id again
    /// replaces its answer.
    pub fn record(&mut self, peer: SocketAddr, id: Id, access: u64, now: Instant) {
        self.reclaim(now);
        if !self.hear(peer, now) {
            return;
        }
        let room = self.live < self.limits.entries;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.is_done(id) {
            return;
        }
        let answer = Answer {
            access,
            at: now,
            serial: self.next_serial,
        };
        match state.answers.search(id) {
            Ok(index) => state.answers.0[index].1 = answer,
            Err(index) if room && state.answers.len() < self.limits.per_peer => {
                state.answers.0.insert(index, (id, answer));
                self.live += 1;
            }
            Err(_) => return,
        }
        self.next_serial += 1;
        let peers = &self.peers;
        self.answered.push(
            Recorded {
                serial: answer.serial,
                peer,
                id,
            },
            self.live,
            |item| is_live_answer(peers, item),
        );
    }

    /// The number of answers kept, all less than a window old.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The number of peers remembered: those heard from within the last window.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Drops the answers a window old, then the peers silent for a window (who by then have no
    /// answers left: every answer is recorded no later than its peer was last heard from).
    fn reclaim(&mut self, now: Instant) {
        let window = self.limits.window;
        loop {
            let peers = &self.peers;
            let Some(item) = self.answered.oldest(|item| is_live_answer(peers, item)) else {
                break;
            };
            let Some(peer) = self.peers.get_mut(&item.peer) else {
                break;
            };
            let Some(answer) = peer.answers.get(item.id) else {
                break;
            };
            if now.saturating_duration_since(answer.at) < window {
                break;
            }
            peer.answers.remove(item.id);
            self.live -= 1;
            self.answered.pop();
        }
        loop {
            let peers = &self.peers;
            let Some(item) = self.heard.oldest(|item| is_live_heard(peers, item)) else {
                break;
            };
            if now.saturating_duration_since(item.at) < window {
                break;
            }
            if let Some(peer) = self.peers.remove(&item.peer) {
                self.live -= peer.answers.len();
            }
            self.heard.pop();
        }
    }

    /// Notes that `peer` sent a request at `now`, adding it to the table if there is room.
    /// Returns whether the peer is in the table.
    fn hear(&mut self, peer: SocketAddr, now: Instant) -> bool {
        let full = self.peers.len() >= self.limits.peers;
        match self.peers.entry(peer) {
            Entry::Occupied(mut occupied) => {
                if occupied.get().last_seen == now {
                    return true;
                }
                occupied.get_mut().last_seen = now;
            }
            Entry::Vacant(_) if full => return false,
            Entry::Vacant(vacant) => {
                vacant.insert(Peer {
                    watermark: None,
                    last_seen: now,
                    answers: Answers::default(),
                });
            }
        }
        let peers = &self.peers;
        self.heard
            .push(Heard { at: now, peer }, peers.len(), |item| {
                is_live_heard(peers, item)
            });
        true
    }
}

/// Whether `item` is the timeline item of an answer still kept.
fn is_live_answer(peers: &HashMap<SocketAddr, Peer>, item: &Recorded) -> bool {
    peers
        .get(&item.peer)
        .and_then(|peer| peer.answers.get(item.id))
        .is_some_and(|answer| answer.serial == item.serial)
}

/// Whether `item` is the timeline item of a peer's latest request.
fn is_live_heard(peers: &HashMap<SocketAddr, Peer>, item: &Heard) -> bool {
    peers
        .get(&item.peer)
        .is_some_and(|peer| peer.last_seen == item.at)
}

impl Peer {
    /// Moves the watermark to `ack` if that is later, and drops the answers before it.
    /// Returns how many answers were dropped.
    fn acknowledge(&mut self, ack: Id) -> usize {
        if self.watermark.is_some_and(|mark| !mark.precedes(ack)) {
            return 0;
        }
        self.watermark = Some(ack);
        self.answers.drop_preceding(ack)
    }

    /// Whether the peer has moved past `id`.
    fn is_done(&self, id: Id) -> bool {
        self.watermark.is_some_and(|mark| id.precedes(mark))
    }
}

/// One peer's answers, sorted by the id's value: a lookup is a binary search, and the ids that
/// precede a watermark form at most two runs ([`preceding_runs`]).
#[derive(Debug, Default)]
struct Answers(Vec<(Id, Answer)>);

impl Answers {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn search(&self, id: Id) -> Result<usize, usize> {
        self.0.binary_search_by_key(&id.get(), |(key, _)| key.get())
    }

    fn get(&self, id: Id) -> Option<&Answer> {
        let index = self.search(id).ok()?;
        self.0.get(index).map(|(_, answer)| answer)
    }

    fn remove(&mut self, id: Id) {
        if let Ok(index) = self.search(id) {
            self.0.remove(index);
            self.release_spare();
        }
    }

    /// Drops the answers whose ids precede `watermark`; returns how many.
    fn drop_preceding(&mut self, watermark: Id) -> usize {
        let before = self.0.len();
        for run in preceding_runs(watermark) {
            let start = self.0.partition_point(|(id, _)| id.get() < *run.start());
            let end = self.0.partition_point(|(id, _)| id.get() <= *run.end());
            if start < end {
                self.0.drain(start..end);
            }
        }
        self.release_spare();
        before - self.0.len()
    }

    /// Gives memory back once the vector is less than half full, and all of it once empty, so
    /// that a peer keeps no room for answers it has acknowledged.
    fn release_spare(&mut self) {
        let len = self.0.len();
        if len == 0 {
            self.0 = Vec::new();
        } else if self.0.capacity() > 2 * len + 2 {
            self.0.shrink_to(len + len / 2);
        }
    }
}

/// The values of the ids that precede `watermark` in sequence-number order ([`Id::precedes`]):
/// the `MAX_ID / 2 - 1` ids before it on the ring, which are one run of values, or two when the
/// ring wraps below it.
fn preceding_runs(watermark: Id) -> impl Iterator<Item = RangeInclusive<u64>> {
    let reach = MAX_ID / 2 - 1;
    let mark = watermark.get();
    let (below, wrapped) = if mark > reach {
        (Some(mark - reach..=mark - 1), None)
    } else {
        (
            (mark > 1).then(|| 1..=mark - 1),
            Some(mark + MAX_ID - reach..=MAX_ID),
        )
    };
    below.into_iter().chain(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// The id `n` places after the first.
    fn id(n: u64) -> Id {
        Id::MIN.wrapping_add(n - 1)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn tiny(per_peer: usize, entries: usize, peers: usize) -> CacheLimits {
        CacheLimits {
            window: RETRY_WINDOW,
            per_peer,
            entries,
            peers,
        }
    }

    #[test]
    fn a_resend_within_the_window_gets_the_same_answer() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        assert_eq!(cache.check(peer, id(7), None, base), Lookup::New);
        cache.record(peer, id(7), 41, base);
        for later in [secs(1), secs(10), secs(29)] {
            assert_eq!(
                cache.check(peer, id(7), None, base + later),
                Lookup::Answered { access: 41 }
            );
        }
        // Another peer's id 7 is another request.
        assert_eq!(cache.check(addr(1001), id(7), None, base), Lookup::New);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn after_the_window_an_answer_is_forgotten_and_its_room_returns() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(2, 2, 2));
        let peer = addr(1000);
        for n in 1..=2 {
            assert_eq!(cache.check(peer, id(n), None, base), Lookup::New);
            cache.record(peer, id(n), n, base);
        }
        assert_eq!(
            cache.check(peer, id(3), None, base + secs(29)),
            Lookup::Busy
        );
        let later = base + RETRY_WINDOW;
        assert_eq!(cache.check(peer, id(1), None, later), Lookup::New);
        assert_eq!(cache.len(), 0);
        cache.record(peer, id(3), 3, later);
        assert_eq!(
            cache.check(peer, id(3), None, later),
            Lookup::Answered { access: 3 }
        );
        // Silent for a window, the peer is forgotten too.
        assert_eq!(cache.peers(), 1);
        assert_eq!(
            cache.check(addr(2), id(1), None, later + RETRY_WINDOW),
            Lookup::New
        );
        assert_eq!(cache.peers(), 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn an_acknowledgement_drops_answers_and_makes_earlier_ids_done() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        for n in 1..=5 {
            assert_eq!(cache.check(peer, id(n), Some(id(1)), base), Lookup::New);
            cache.record(peer, id(n), n, base);
        }
        assert_eq!(cache.len(), 5);
        // The peer still awaits 4: 1 to 3 are done, 4 and 5 may still be resent.
        assert_eq!(
            cache.check(peer, id(4), Some(id(4)), base),
            Lookup::Answered { access: 4 }
        );
        assert_eq!(cache.len(), 2);
        for n in 1..=3 {
            assert_eq!(cache.check(peer, id(n), None, base), Lookup::Done);
        }
        // An older watermark does not move it back.
        assert_eq!(cache.check(peer, id(2), Some(id(1)), base), Lookup::Done);
        assert_eq!(
            cache.check(peer, id(5), None, base),
            Lookup::Answered { access: 5 }
        );
        // A request that acknowledges itself is done: its sender no longer awaits it.
        assert_eq!(cache.check(peer, id(9), Some(id(10)), base), Lookup::Done);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn acknowledgements_work_across_the_wrap_of_ids() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let last = id(MAX_ID);
        for n in 0..4 {
            let request = last.wrapping_add(n);
            assert_eq!(cache.check(peer, request, Some(last), base), Lookup::New);
            cache.record(peer, request, n, base);
        }
        assert_eq!(
            cache.check(peer, id(2), Some(id(2)), base),
            Lookup::Answered { access: 2 }
        );
        assert_eq!(cache.check(peer, last, None, base), Lookup::Done);
        assert_eq!(cache.check(peer, id(1), None, base), Lookup::Done);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn full_caps_answer_busy_and_never_evict_a_live_answer() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(2, 3, 2));
        let (a, b, c) = (addr(1), addr(2), addr(3));
        for (peer, n) in [(a, 1), (a, 2), (b, 1)] {
            assert_eq!(cache.check(peer, id(n), None, base), Lookup::New);
            cache.record(peer, id(n), n, base);
        }
        // Per peer, in total, and for a new peer when the peer table is full.
        assert_eq!(cache.check(a, id(3), None, base), Lookup::Busy);
        assert_eq!(cache.check(b, id(2), None, base), Lookup::Busy);
        assert_eq!(cache.check(c, id(1), None, base), Lookup::Busy);
        // Recording anyway keeps nothing.
        cache.record(b, id(2), 99, base);
        cache.record(c, id(1), 99, base);
        assert_eq!((cache.len(), cache.peers()), (3, 2));
        // A new peer is still told when its request is done.
        assert_eq!(cache.check(c, id(1), Some(id(2)), base), Lookup::Done);
        for (peer, n) in [(a, 1), (a, 2), (b, 1)] {
            assert_eq!(
                cache.check(peer, id(n), None, base + secs(29)),
                Lookup::Answered { access: n }
            );
        }
        // An acknowledgement makes room at once.
        assert_eq!(
            cache.check(a, id(3), Some(id(3)), base + secs(29)),
            Lookup::New
        );
    }

    #[test]
    fn a_client_that_acknowledges_never_sees_busy_however_many_requests() {
        // A million requests, one every 10 µs, through caps of 4 per peer and 16 in all: the
        // capacity depends on the requests in flight, not on the rate.
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(4, 16, 4));
        let peer = addr(1000);
        // Start near the top of the id space, so the ids wrap on the way.
        let first = id(MAX_ID - 500_000);
        for n in 0..1_000_000_u64 {
            let request = first.wrapping_add(n);
            let now = base + Duration::from_micros(10 * n);
            assert_eq!(
                cache.check(peer, request, Some(request), now),
                Lookup::New,
                "request {n}"
            );
            cache.record(peer, request, n, now);
            // A resend of the request just answered is answered from the cache.
            if n % 1000 == 0 {
                assert_eq!(
                    cache.check(peer, request, Some(request), now),
                    Lookup::Answered { access: n }
                );
            }
            assert!(cache.len() <= 1, "request {n}");
        }
        // The timelines stayed small too: one live item each, and a few stale ones.
        assert!(cache.answered.len() <= 1 + 64);
        assert!(cache.heard.len() <= 1 + 64);
    }

    #[test]
    fn a_pipelining_client_that_acknowledges_never_sees_busy() {
        // Four requests in flight at a time, answered in a shuffled order, resent once each.
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(4, 16, 4));
        let peer = addr(1000);
        for n in 0..100_000_u64 {
            let now = base + Duration::from_micros(n);
            let lowest = id(1 + n / 4 * 4);
            let request = lowest.wrapping_add([2, 0, 3, 1][(n % 4) as usize]);
            assert_eq!(cache.check(peer, request, Some(lowest), now), Lookup::New);
            cache.record(peer, request, n, now);
            assert_eq!(
                cache.check(peer, request, Some(lowest), now),
                Lookup::Answered { access: n }
            );
        }
    }

    #[test]
    fn preceding_runs_match_precedes() {
        let reach = MAX_ID / 2 - 1;
        for mark in [
            1,
            2,
            3,
            reach - 1,
            reach,
            reach + 1,
            reach + 2,
            MAX_ID - 1,
            MAX_ID,
        ] {
            let mark = id(mark);
            let runs: Vec<_> = preceding_runs(mark).collect();
            for probe in [
                1,
                2,
                mark.get().saturating_sub(1).max(1),
                mark.get(),
                (mark.get() + 1).min(MAX_ID),
                mark.get().saturating_sub(reach).max(1),
                mark.get().saturating_sub(reach + 1).max(1),
                (mark.get() + MAX_ID - reach).min(MAX_ID),
                (mark.get() + MAX_ID - reach - 1).min(MAX_ID),
                reach,
                reach + 1,
                MAX_ID - 1,
                MAX_ID,
            ] {
                let in_runs = runs.iter().any(|run| run.contains(&probe));
                assert_eq!(
                    in_runs,
                    id(probe).precedes(mark),
                    "id {probe}, watermark {mark}"
                );
            }
        }
    }

    /// A naive cache that scans everything on every call: the reference for the property test.
    #[derive(Default)]
    struct Model {
        peers: HashMap<SocketAddr, ModelPeer>,
    }

    struct ModelPeer {
        watermark: Option<Id>,
        last_seen: Instant,
        answers: HashMap<Id, (u64, Instant)>,
    }

    impl Model {
        fn live(&self) -> usize {
            self.peers.values().map(|peer| peer.answers.len()).sum()
        }

        fn forget(&mut self, limits: &CacheLimits, now: Instant) {
            for peer in self.peers.values_mut() {
                peer.answers
                    .retain(|_, (_, at)| now.duration_since(*at) < limits.window);
            }
            self.peers
                .retain(|_, peer| now.duration_since(peer.last_seen) < limits.window);
        }

        /// The peer's state, added if there is room.
        fn hear(&mut self, limits: &CacheLimits, peer: SocketAddr, now: Instant) -> bool {
            if !self.peers.contains_key(&peer) && self.peers.len() >= limits.peers {
                return false;
            }
            let state = self.peers.entry(peer).or_insert(ModelPeer {
                watermark: None,
                last_seen: now,
                answers: HashMap::new(),
            });
            state.last_seen = now;
            true
        }

        fn check(
            &mut self,
            limits: &CacheLimits,
            peer: SocketAddr,
            id: Id,
            ack: Option<Id>,
            now: Instant,
        ) -> Lookup {
            self.forget(limits, now);
            if !self.hear(limits, peer, now) {
                return if ack.is_some_and(|ack| id.precedes(ack)) {
                    Lookup::Done
                } else {
                    Lookup::Busy
                };
            }
            let live = self.live();
            let Some(state) = self.peers.get_mut(&peer) else {
                return Lookup::Busy;
            };
            let mut live = live;
            if let Some(ack) = ack
                && state.watermark.is_none_or(|mark| mark.precedes(ack))
            {
                state.watermark = Some(ack);
                let before = state.answers.len();
                state.answers.retain(|answered, _| !answered.precedes(ack));
                live -= before - state.answers.len();
            }
            if state.watermark.is_some_and(|mark| id.precedes(mark)) {
                Lookup::Done
            } else if let Some((access, _)) = state.answers.get(&id) {
                Lookup::Answered { access: *access }
            } else if state.answers.len() < limits.per_peer && live < limits.entries {
                Lookup::New
            } else {
                Lookup::Busy
            }
        }

        fn record(
            &mut self,
            limits: &CacheLimits,
            peer: SocketAddr,
            id: Id,
            access: u64,
            now: Instant,
        ) {
            self.forget(limits, now);
            if !self.hear(limits, peer, now) {
                return;
            }
            let live = self.live();
            let Some(state) = self.peers.get_mut(&peer) else {
                return;
            };
            if state.watermark.is_some_and(|mark| id.precedes(mark)) {
                return;
            }
            let room = state.answers.len() < limits.per_peer && live < limits.entries;
            if room || state.answers.contains_key(&id) {
                state.answers.insert(id, (access, now));
            }
        }
    }

    /// One step of a client population: a request from one of a few peers, with an id from a
    /// small range (which the test may move across the wrap), an optional watermark, and a
    /// pause before it.
    #[derive(Debug, Clone)]
    struct Step {
        peer: u16,
        id: u64,
        ack: Option<u64>,
        pause_ms: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        let pause = prop_oneof![
            8 => Just(0_u64),
            8 => 1..2_000_u64,
            1 => 29_000..31_000_u64,
            1 => 31_000..70_000_u64,
        ];
        (0..4_u16, 0..12_u64, proptest::option::of(0..12_u64), pause).prop_map(
            |(peer, id, ack, pause_ms)| Step {
                peer,
                id,
                ack,
                pause_ms,
            },
        )
    }

    proptest! {
        #[test]
        fn the_cache_agrees_with_a_naive_model_and_keeps_its_caps(
            wrap in any::<bool>(),
            steps in proptest::collection::vec(step(), 1..300),
            resend_every in 1..5_usize,
        ) {
            let limits = CacheLimits { window: RETRY_WINDOW, per_peer: 3, entries: 5, peers: 3 };
            let mut cache = ReplyCache::new(limits);
            let mut model = Model::default();
            let base = Instant::now();
            let mut now = base;
            let mut access = 0;
            let shift = if wrap { MAX_ID - 5 } else { 0 };
            // Answers recorded, to check that each is given again while it must be.
            let mut recorded: Vec<(SocketAddr, Id, u64, Instant)> = Vec::new();
            for (n, step) in steps.iter().enumerate() {
                now += Duration::from_millis(step.pause_ms);
                let peer = addr(step.peer);
                let request = Id::MIN.wrapping_add(step.id + shift);
                let ack = step.ack.map(|ack| Id::MIN.wrapping_add(ack + shift));
                let expected = model.check(&limits, peer, request, ack, now);
                let found = cache.check(peer, request, ack, now);
                prop_assert_eq!(found, expected, "step {}: {:?}", n, step);
                if found == Lookup::New {
                    access += 1;
                    cache.record(peer, request, access, now);
                    model.record(&limits, peer, request, access, now);
                    recorded.push((peer, request, access, now));
                }
                prop_assert!(cache.len() <= limits.entries);
                prop_assert!(cache.peers() <= limits.peers);
                prop_assert_eq!(cache.len(), model.live());
                prop_assert_eq!(cache.peers(), model.peers.len());
                for state in cache.peers.values() {
                    prop_assert!(state.answers.len() <= limits.per_peer);
                }
                // Every answer recorded less than a window ago whose id its peer has not
                // acknowledged past is given again, with its own access number.
                if n % resend_every == 0 {
                    for &(peer, id, access, at) in &recorded {
                        let acked = model.peers.get(&peer).is_some_and(|state| {
                            state.watermark.is_some_and(|mark| id.precedes(mark))
                        });
                        let latest = recorded
                            .iter()
                            .rev()
                            .find(|(p, i, _, _)| *p == peer && *i == id)
                            .is_some_and(|(_, _, a, _)| *a == access);
                        if latest && !acked && now.duration_since(at) < limits.window {
                            let found = cache.check(peer, id, None, now);
                            let expected = model.check(&limits, peer, id, None, now);
                            prop_assert_eq!(found, Lookup::Answered { access });
                            prop_assert_eq!(expected, Lookup::Answered { access });
                        }
                    }
                }
            }
        }
    }
}
