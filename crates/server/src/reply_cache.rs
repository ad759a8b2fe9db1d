//! [`ReplyCache`]: at-most-once answers to JSON requests, in memory bounded by fixed caps.

use foldhash::fast::RandomState as FastState;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use proto::{Id, MAX_ID, RETRY_WINDOW};

use crate::timeline::Timeline;

/// How far from a stream's anchor, on either side, an id still belongs to that stream: 2^16.
///
/// Wide enough for any client's requests in flight (udptalk's client has one; the per-peer cap
/// keeps 256 answers), narrow enough that a random id lands in a given stream's window with odds
/// of 2^17 / 2^53 = 2^-36.
pub const STREAM_WINDOW: u64 = 1 << 16;

/// The fixed caps of a [`ReplyCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// How long an answer is kept, and a stream after its last request: the client never
    /// resends later, so [`RETRY_WINDOW`].
    pub window: Duration,
    /// Most answers kept for one peer, all its streams together: its requests in flight that it
    /// has not acknowledged.
    pub per_peer: usize,
    /// Most answers kept in all.
    pub entries: usize,
    /// Most peers remembered at once.
    pub peers: usize,
    /// Most id streams remembered for one peer (see [`ReplyCache`]).
    pub streams_per_peer: usize,
}

impl Default for CacheLimits {
    /// The server's caps.
    ///
    /// `per_peer` is 256, so that a pipelining client has room to spare (udptalk's own client
    /// has one request in flight) while no one peer can take more than 1/256 of the table.
    /// `entries` is 65,536: with acknowledgements, that many requests may be in flight
    /// server-wide at any rate; without them, answers live the whole window and the cache
    /// sustains about 2,000 new requests a second (65,536 / 30 s) before answering `busy`.
    /// `peers` is 16,384 clients heard from within the last window. `streams_per_peer` is 4:
    /// one is all a client needs, and a few more let clients that restart on the same address
    /// and port (a new random first id each time) be served while their old streams age out.
    ///
    /// Memory grows only with use. An answer costs at most about 270 bytes: a 48-byte slot in
    /// its stream's vector, four times over (a vector holding one answer has room for four), 63
    /// bytes of timeline and an allocation's overhead. A stream costs at most 199 bytes: a
    /// 72-byte slot in its peer's vector, which never has room for more than
    /// `streams_per_peer`, 63 bytes of timeline, and, once its answers are all acknowledged,
    /// the room for one answer it keeps (48 bytes and an allocation's overhead), so that a
    /// client's next request allocates nothing. A peer costs about 130 bytes besides its
    /// streams: a 57-byte hash-table slot, twice over at the table's lowest load, and an
    /// allocation's overhead. Full to these caps, with every peer at 4 streams, the cache takes
    /// under 32 MiB (a test fills it so and adds up its tables' capacities); serving a handful
    /// of clients that acknowledge, a few KiB.
    fn default() -> CacheLimits {
        CacheLimits {
            window: RETRY_WINDOW,
            per_peer: 256,
            entries: 65_536,
            peers: 16_384,
            streams_per_peer: 4,
        }
    }
}

/// What [`ReplyCache::check`] found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not seen before, and there is room to remember it: count it, answer it, then
    /// [`record`](ReplyCache::record) the access number.
    New,
    /// Answered less than a window ago, for a request with the same body: a resend. Send the
    /// same answer again; do not count it.
    Answered {
        /// The access number of the first answer.
        access: u64,
    },
    /// Answered less than a window ago, but for a request with another body: the id was
    /// reused, not resent. Refuse it (`bad_id`); neither count it nor answer it as a resend.
    Conflict,
    /// The id comes before its stream's watermark: a late duplicate of a request its sender has
    /// moved past. Neither count nor answer it.
    Done,
    /// The caps are full of answers or streams that could still be needed: answer `busy`, do
    /// not count.
    Busy,
}

/// What [`ReplyCache::admit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: counted, with this access number, and remembered. Answer it.
    New {
        /// The number the count gave.
        access: u64,
    },
    /// A resend of a request answered with `access` ([`Lookup::Answered`]).
    Again {
        /// The access number of the first answer.
        access: u64,
    },
    /// See [`Lookup::Done`].
    Done,
    /// See [`Lookup::Conflict`].
    Conflict,
    /// See [`Lookup::Busy`].
    Busy,
}

/// What [`ReplyCache::look_up`] found: a new request, with what it takes to keep its answer,
/// or what [`ReplyCache::check`] says of one already known (or refused).
enum Found {
    New { stream: usize, fingerprint: u64 },
    Kept(Lookup),
}

/// At-most-once answers per (peer, id) within a window, in memory bounded by fixed caps.
///
/// A client resends a request (same peer, same id, same body) until it gets an answer or
/// [`RETRY_WINDOW`] has passed since the first send. The server must count each request once
/// and give every resend the same answer, so it remembers, per (peer, id), the access number it
/// answered with, when, and a fingerprint of the request's body. That is all it keeps: the
/// reply's text is rebuilt from the number (hello and echo answers are the same every time; the
/// entry is still kept, so that a resend is never counted twice in the server's books).
///
/// **Fingerprints.** The fingerprint is a 64-bit SipHash of the body under a random key the
/// cache draws when it is made ([`RandomState`]), so no one outside the process can compute a
/// collision. A request with an answered id and the same body is a resend
/// ([`Lookup::Answered`]); with another body it reuses the id ([`Lookup::Conflict`]), which the
/// server refuses rather than answer with another request's reply.
///
/// **Acknowledgements.** A cache that simply kept every answer for the whole window would fill
/// at `entries / window` requests per second (about 2,000 a second with the defaults) and then
/// have to refuse work. So entries live only while their request may still be resent. Each
/// request may carry an acknowledgement watermark, `ack`: the lowest id its sender still awaits,
/// in the spirit of NFSv4.1's session slots (RFC 8881 §2.10.6). Everything the sender sent
/// before `ack` has been answered and will not be resent, so those answers are dropped and the
/// room goes back to the table at once. A client that acknowledges as it goes holds one entry
/// per request in flight, whatever its rate. A request whose id comes before the watermark (in
/// sequence-number order, [`Id::precedes`]) is a late duplicate the network delivered after its
/// sender moved on: it is [`Lookup::Done`], neither counted nor answered.
///
/// **Streams.** Anyone can send a datagram with a client's source address, so a watermark must
/// not let one datagram speak for all of a peer's ids. Each peer's ids are split into up to
/// [`CacheLimits::streams_per_peer`] *streams*. A stream has an *anchor*, the latest id seen in
/// it, and its *window* is the ids within [`STREAM_WINDOW`] of the anchor on either side (on the
/// ring of ids, across the wrap). A request belongs to the stream that already holds an answer
/// to its id, else to the stream whose window holds the id (the nearest anchor if two do, the
/// older stream on a tie), else it starts a new stream if the peer has room for one, else it is
/// [`Lookup::Busy`]: a live stream is never evicted. Each stream has its own watermark and
/// answers: a request's `ack` drops answers and moves the watermark only in the request's own
/// stream, the watermark only forward and only to an id inside the window, and a request is
/// judged done only against its own stream's watermark. A stream is kept for a window after
/// its last request, then dropped with its answers; a peer with no stream left is forgotten.
///
/// The caller guarantees that a request's `ack` does not come after its `id` (`proto` refuses
/// such requests as `bad_id`); were one to, the cache would treat it as absent.
///
/// **What an off-path forger can do.** A sender who forges a client's address but cannot see
/// its traffic does not know the client's ids, which start at a random point of the 2^53 ring.
/// A forged request lands in the client's stream's window with odds of about 2^-36, so almost
/// surely it starts a stream of its own, or is `busy`. The forger *can* fill a peer's streams
/// (and, with ids in its own streams, the per-peer and table caps), so that a *new* stream of
/// that peer, or a new request once the caps are full, is answered `busy`; a `busy` answer is
/// an answer, and the client resends after a backoff. The forger *cannot* make a real request
/// counted twice, answered with another request's reply, or dropped without an answer, except
/// with odds of about 2^-36 per forged datagram.
///
/// The limits of the guarantee: a stream is forgotten once it has been silent for a window, so
/// a duplicate the network holds longer than that is counted again; and a late duplicate of an
/// acknowledged request that arrives after its sender has moved more than [`STREAM_WINDOW`] ids
/// on falls outside its stream's window and is counted again too. (An answer still kept is
/// always found, however far its stream's anchor has moved.)
///
/// Reclaiming is amortised O(1) per call and never scans the table: answers and streams each
/// have a timeline in the order they were written, and since `now` never goes backwards, the
/// dead ones are always at its front. (Were `now` to go backwards, the caps would still hold;
/// answers would only be kept longer.)
#[derive(Debug)]
pub struct ReplyCache {
    limits: CacheLimits,
    peers: HashMap<SocketAddr, Peer, FastState>,
    /// Answers in the order recorded; an item is live while its answer has the same serial.
    answered: Timeline<Recorded>,
    /// Streams in the order last heard from; an item is live while its time is the stream's
    /// `last_seen`.
    heard: Timeline<Heard>,
    /// Answers kept in all streams (the sum of their `answers.len()`).
    live: usize,
    /// Streams kept in all peers (the sum of their `streams.len()`).
    streams: usize,
    /// The serial of the next answer or stream, unique for the cache's life.
    next_serial: u64,
    /// The key of the body fingerprints, drawn at random for each cache.
    keys: RandomState,
    /// The `now` of the last reclaim: nothing more expires until `now` moves (a batch of
    /// datagrams shares one), so a reclaim at the same `now` is skipped.
    reclaimed_at: Option<Instant>,
}

/// What the cache knows of one peer: its streams, oldest first.
#[derive(Debug)]
struct Peer {
    /// Never empty while the peer is in the table; at most `streams_per_peer` long, and never
    /// given room for more.
    streams: Vec<Stream>,
}

/// A run of one peer's ids, near each other: typically one client's requests.
#[derive(Debug)]
struct Stream {
    /// Tells this stream's timeline items from those of other streams.
    serial: u64,
    /// The latest id seen in the stream: the centre of its window.
    anchor: Id,
    /// The lowest id the stream's sender still awaits, as it last told us: ids before it are
    /// done. Always inside the window.
    watermark: Option<Id>,
    /// When the stream last had a request: it is kept a window after that, so that late
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
    /// The keyed hash of the request's body.
    fingerprint: u64,
}

/// A timeline item: the answer with `serial` was recorded for `id` in `peer`'s stream `stream`.
#[derive(Debug, Clone, Copy)]
struct Recorded {
    serial: u64,
    stream: u64,
    peer: SocketAddr,
    id: Id,
}

/// A timeline item: `peer`'s stream `stream` had a request at `at`.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    stream: u64,
    peer: SocketAddr,
}

impl ReplyCache {
    /// An empty cache with the given caps. Nothing is allocated until the first request.
    pub fn new(limits: CacheLimits) -> ReplyCache {
        ReplyCache {
            limits,
            peers: HashMap::default(),
            answered: Timeline::new(limits.entries),
            heard: Timeline::new(limits.peers.saturating_mul(limits.streams_per_peer)),
            live: 0,
            streams: 0,
            next_serial: 0,
            keys: RandomState::new(),
            reclaimed_at: None,
        }
    }

    /// Looks up request `id` from `peer` with `body`, after applying its acknowledgement
    /// watermark `ack` (the lowest id the peer still awaits, if the request carries one) to the
    /// request's stream.
    ///
    /// `ack` must not come after `id` in sequence-number order; if it does, it is ignored.
    #[must_use]
    pub fn check(
        &mut self,
        peer: SocketAddr,
        id: Id,
        ack: Option<Id>,
        body: &[u8],
        now: Instant,
    ) -> Lookup {
        match self.look_up(peer, id, ack, body, now) {
            Found::New { .. } => Lookup::New,
            Found::Kept(lookup) => lookup,
        }
    }

    /// What the server does per request, in one pass over the tables: [`check`](Self::check),
    /// and for a new request, count it with `count` and [`record`](Self::record) the access
    /// number it gives. `count` is called only for a new request, and only when there is room to
    /// remember it, so that every number counted is kept.
    pub fn admit(
        &mut self,
        peer: SocketAddr,
        id: Id,
        ack: Option<Id>,
        body: &[u8],
        now: Instant,
        count: impl FnOnce() -> u64,
    ) -> Admission {
        match self.look_up(peer, id, ack, body, now) {
            Found::New {
                stream,
                fingerprint,
            } => {
                let access = count();
                self.keep(peer, stream, id, access, fingerprint, now, true);
                Admission::New { access }
            }
            // look_up tells a new request as Found::New, never so.
            Found::Kept(Lookup::New) => Admission::Busy,
            Found::Kept(Lookup::Answered { access }) => Admission::Again { access },
            Found::Kept(Lookup::Done) => Admission::Done,
            Found::Kept(Lookup::Conflict) => Admission::Conflict,
            Found::Kept(Lookup::Busy) => Admission::Busy,
        }
    }

    /// [`check`](Self::check), telling a new request's stream and fingerprint to
    /// [`admit`](Self::admit).
    fn look_up(
        &mut self,
        peer: SocketAddr,
        id: Id,
        ack: Option<Id>,
        body: &[u8],
        now: Instant,
    ) -> Found {
        self.reclaim(now);
        let Some(index) = self.enter(peer, id, now) else {
            return Found::Kept(Lookup::Busy);
        };
        let fingerprint = self.keys.hash_one(body);
        let Some(state) = self.peers.get_mut(&peer) else {
            return Found::Kept(Lookup::Busy);
        };
        let Some(stream) = state.streams.get_mut(index) else {
            return Found::Kept(Lookup::Busy);
        };
        if let Some(ack) = ack.filter(|ack| !id.precedes(*ack)) {
            self.live -= stream.acknowledge(ack);
        }
        if stream.is_done(id) {
            return Found::Kept(Lookup::Done);
        }
        if let Some(answer) = stream.answers.get(id) {
            return Found::Kept(if answer.fingerprint == fingerprint {
                Lookup::Answered {
                    access: answer.access,
                }
            } else {
                Lookup::Conflict
            });
        }
        if state.answers() < self.limits.per_peer && self.live < self.limits.entries {
            Found::New {
                stream: index,
                fingerprint,
            }
        } else {
            Found::Kept(Lookup::Busy)
        }
    }

    /// Remembers that request `id` from `peer`, with `body`, was answered with access number
    /// `access`.
    ///
    /// Call it after [`check`](ReplyCache::check) returned [`Lookup::New`], with the same `now`
    /// or a later one: then there is room. Otherwise, if the caps are full or the id is done,
    /// nothing is kept, so the caps hold whatever the caller does. Recording an id again
    /// replaces its answer.
    pub fn record(&mut self, peer: SocketAddr, id: Id, body: &[u8], access: u64, now: Instant) {
        self.reclaim(now);
        let Some(index) = self.enter(peer, id, now) else {
            return;
        };
        let room_in_table = self.live < self.limits.entries;
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        let room = room_in_table && state.answers() < self.limits.per_peer;
        if state
            .streams
            .get(index)
            .is_none_or(|stream| stream.is_done(id))
        {
            return;
        }
        let fingerprint = self.keys.hash_one(body);
        self.keep(peer, index, id, access, fingerprint, now, room);
    }

    /// Keeps the answer to `id` in `peer`'s stream at `index`, replacing an earlier one, or
    /// adding it if there is `room`, and notes it in the timeline.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &mut self,
        peer: SocketAddr,
        index: usize,
        id: Id,
        access: u64,
        fingerprint: u64,
        now: Instant,
        room: bool,
    ) {
        let Some(stream) = self
            .peers
            .get_mut(&peer)
            .and_then(|state| state.streams.get_mut(index))
        else {
            return;
        };
        let answer = Answer {
            access,
            at: now,
            serial: self.next_serial,
            fingerprint,
        };
        match stream.answers.search(id) {
            Ok(index) => stream.answers.0[index].1 = answer,
            Err(index) if room => {
                stream.answers.0.insert(index, (id, answer));
                self.live += 1;
            }
            Err(_) => return,
        }
        let item = Recorded {
            serial: answer.serial,
            stream: stream.serial,
            peer,
            id,
        };
        self.next_serial += 1;
        let peers = &self.peers;
        self.answered
            .push(item, self.live, |item| is_live_answer(peers, item));
    }

    /// The number of answers kept, all less than a window old.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The number of peers remembered: those with a stream heard from within the last window.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Drops the answers a window old, then the streams silent for a window (which by then
    /// have no answers left: every answer is recorded no later than its stream was last heard
    /// from), and the peers left with no stream.
    fn reclaim(&mut self, now: Instant) {
        if self.reclaimed_at == Some(now) {
            return;
        }
        self.reclaimed_at = Some(now);
        let window = self.limits.window;
        loop {
            let peers = &self.peers;
            let Some(item) = self.answered.oldest(|item| is_live_answer(peers, item)) else {
                break;
            };
            let Some(stream) = self
                .peers
                .get_mut(&item.peer)
                .and_then(|state| state.stream_mut(item.stream))
            else {
                break;
            };
            let Some(answer) = stream.answers.get(item.id) else {
                break;
            };
            if now.saturating_duration_since(answer.at) < window {
                break;
            }
            stream.answers.remove(item.id);
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
            if let Some(state) = self.peers.get_mut(&item.peer) {
                if let Some(index) = state.position(item.stream) {
                    let stream = state.streams.remove(index);
                    self.live -= stream.answers.len();
                    self.streams -= 1;
                }
                if state.streams.is_empty() {
                    self.peers.remove(&item.peer);
                }
            }
            self.heard.pop();
        }
    }

    /// Notes that `peer` sent request `id` at `now`: finds the stream it belongs to, or starts
    /// one (adding the peer to the table) if there is room, and moves the stream's anchor and
    /// `last_seen`. Returns the stream's index in its peer's streams, or `None` when there is no
    /// room for a new stream.
    fn enter(&mut self, peer: SocketAddr, id: Id, now: Instant) -> Option<usize> {
        let full = self.peers.len() >= self.limits.peers;
        let most = self.limits.streams_per_peer;
        let state = match self.peers.entry(peer) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(_) if full || most == 0 => return None,
            Entry::Vacant(vacant) => vacant.insert(Peer {
                streams: Vec::new(),
            }),
        };
        let (index, stream) = match state.find(id) {
            Some(index) => {
                let stream = state.streams.get_mut(index)?;
                stream.advance(id);
                if stream.last_seen == now {
                    return Some(index);
                }
                stream.last_seen = now;
                (index, stream.serial)
            }
            None if state.streams.len() < most => {
                let serial = self.next_serial;
                self.next_serial += 1;
                // Room for exactly one more, so that a peer's vector never outgrows its cap.
                state.streams.reserve_exact(1);
                state.streams.push(Stream {
                    serial,
                    anchor: id,
                    watermark: None,
                    last_seen: now,
                    answers: Answers::default(),
                });
                self.streams += 1;
                (state.streams.len() - 1, serial)
            }
            None => return None,
        };
        let peers = &self.peers;
        self.heard.push(
            Heard {
                at: now,
                stream,
                peer,
            },
            self.streams,
            |item| is_live_heard(peers, item),
        );
        Some(index)
    }
}

/// Whether `item` is the timeline item of an answer still kept.
fn is_live_answer(peers: &HashMap<SocketAddr, Peer, FastState>, item: &Recorded) -> bool {
    peers
        .get(&item.peer)
        .and_then(|state| state.stream(item.stream))
        .and_then(|stream| stream.answers.get(item.id))
        .is_some_and(|answer| answer.serial == item.serial)
}

/// Whether `item` is the timeline item of a stream's latest request.
fn is_live_heard(peers: &HashMap<SocketAddr, Peer, FastState>, item: &Heard) -> bool {
    peers
        .get(&item.peer)
        .and_then(|state| state.stream(item.stream))
        .is_some_and(|stream| stream.last_seen == item.at)
}

/// The distance between two ids on the ring of [`MAX_ID`] ids, the shorter way round.
fn distance(a: Id, b: Id) -> u64 {
    let forward = (b.get() + MAX_ID - a.get()) % MAX_ID;
    forward.min(MAX_ID - forward)
}

/// Whether `id` lies in the window of a stream anchored at `anchor`.
fn in_window(anchor: Id, id: Id) -> bool {
    distance(anchor, id) <= STREAM_WINDOW
}

impl Peer {
    /// The stream request `id` belongs to: the one that holds an answer to it, else the one
    /// whose window holds it with the nearest anchor (the older one on a tie).
    fn find(&self, id: Id) -> Option<usize> {
        if let Some(index) = self
            .streams
            .iter()
            .position(|stream| stream.answers.get(id).is_some())
        {
            return Some(index);
        }
        self.streams
            .iter()
            .enumerate()
            .map(|(index, stream)| (distance(stream.anchor, id), index))
            .filter(|&(distance, _)| distance <= STREAM_WINDOW)
            .min()
            .map(|(_, index)| index)
    }

    fn position(&self, serial: u64) -> Option<usize> {
        self.streams
            .iter()
            .position(|stream| stream.serial == serial)
    }

    fn stream(&self, serial: u64) -> Option<&Stream> {
        self.streams.iter().find(|stream| stream.serial == serial)
    }

    fn stream_mut(&mut self, serial: u64) -> Option<&mut Stream> {
        self.streams
            .iter_mut()
            .find(|stream| stream.serial == serial)
    }

    /// The answers kept in all the peer's streams.
    fn answers(&self) -> usize {
        self.streams.iter().map(|stream| stream.answers.len()).sum()
    }
}

impl Stream {
    /// Moves the anchor to `id` if `id` is in the window and later, and forgets a watermark
    /// the window has left behind (no id in the window can precede it any more).
    fn advance(&mut self, id: Id) {
        if in_window(self.anchor, id) && self.anchor.precedes(id) {
            self.anchor = id;
            if self.watermark.is_some_and(|mark| !in_window(id, mark)) {
                self.watermark = None;
            }
        }
    }

    /// Drops the answers before `ack` and moves the watermark to it, if it is later and inside
    /// the window. Returns how many answers were dropped.
    fn acknowledge(&mut self, ack: Id) -> usize {
        if self.watermark.is_some_and(|mark| !mark.precedes(ack)) {
            // Every answer before `ack` went with an earlier acknowledgement.
            return 0;
        }
        if in_window(self.anchor, ack) {
            self.watermark = Some(ack);
        }
        self.answers.drop_preceding(ack)
    }

    /// Whether the stream's sender has moved past `id`.
    fn is_done(&self, id: Id) -> bool {
        in_window(self.anchor, id) && self.watermark.is_some_and(|mark| id.precedes(mark))
    }
}

/// One stream's answers, sorted by the id's value: a lookup is a binary search, and the ids that
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

    /// Gives memory back once the vector is less than half full, so that a stream keeps little
    /// room for answers its sender has acknowledged. An emptied vector keeps room for exactly
    /// one answer: a client with one request in flight acknowledges each answer with its next
    /// request, which empties its stream and then fills it again, and keeping that one slot is
    /// what makes its requests allocate nothing.
    fn release_spare(&mut self) {
        let len = self.0.len();
        if len == 0 {
            if self.0.capacity() > 1 {
                self.0 = Vec::with_capacity(1);
            }
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
    use std::mem::size_of;

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
            streams_per_peer: 8,
        }
    }

    /// A tiny deterministic generator (xorshift64), so that the attack tests need no
    /// dependency and always replay the same traffic.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// A number in `0..n`.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// An id anywhere on the ring.
        fn id(&mut self) -> Id {
            Id::MIN.wrapping_add(self.below(MAX_ID))
        }
    }

    #[test]
    fn a_resend_within_the_window_gets_the_same_answer() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        assert_eq!(cache.check(peer, id(7), None, b"hi", base), Lookup::New);
        cache.record(peer, id(7), b"hi", 41, base);
        for later in [secs(1), secs(10), secs(29)] {
            assert_eq!(
                cache.check(peer, id(7), None, b"hi", base + later),
                Lookup::Answered { access: 41 }
            );
        }
        // Another peer's id 7 is another request.
        assert_eq!(
            cache.check(addr(1001), id(7), None, b"hi", base),
            Lookup::New
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_reused_id_with_another_body_is_a_conflict() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        assert_eq!(cache.check(peer, id(7), None, b"one", base), Lookup::New);
        cache.record(peer, id(7), b"one", 41, base);
        assert_eq!(
            cache.check(peer, id(7), None, b"two", base + secs(1)),
            Lookup::Conflict
        );
        assert_eq!(
            cache.check(peer, id(7), None, b"", base + secs(1)),
            Lookup::Conflict
        );
        // The conflict changed nothing: the original is still answered as a resend.
        assert_eq!(
            cache.check(peer, id(7), None, b"one", base + secs(2)),
            Lookup::Answered { access: 41 }
        );
        assert_eq!(cache.len(), 1);
        // Once the answer is gone, the id is new again, whatever its body.
        assert_eq!(
            cache.check(peer, id(7), None, b"two", base + RETRY_WINDOW),
            Lookup::New
        );
        // The fingerprint's key is the cache's own: another cache keys it differently.
        let other = ReplyCache::new(CacheLimits::default());
        assert_ne!(cache.keys.hash_one(b"one"), other.keys.hash_one(b"one"));
    }

    #[test]
    fn after_the_window_an_answer_is_forgotten_and_its_room_returns() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(2, 2, 2));
        let peer = addr(1000);
        for n in 1..=2 {
            assert_eq!(cache.check(peer, id(n), None, b"x", base), Lookup::New);
            cache.record(peer, id(n), b"x", n, base);
        }
        assert_eq!(
            cache.check(peer, id(3), None, b"x", base + secs(29)),
            Lookup::Busy
        );
        let later = base + RETRY_WINDOW;
        assert_eq!(cache.check(peer, id(1), None, b"x", later), Lookup::New);
        assert_eq!(cache.len(), 0);
        cache.record(peer, id(3), b"x", 3, later);
        assert_eq!(
            cache.check(peer, id(3), None, b"x", later),
            Lookup::Answered { access: 3 }
        );
        // Silent for a window, the peer is forgotten too.
        assert_eq!(cache.peers(), 1);
        assert_eq!(
            cache.check(addr(2), id(1), None, b"x", later + RETRY_WINDOW),
            Lookup::New
        );
        assert_eq!(cache.peers(), 1);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.streams, 1);
    }

    #[test]
    fn an_acknowledgement_drops_answers_and_makes_earlier_ids_done() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        for n in 1..=5 {
            assert_eq!(
                cache.check(peer, id(n), Some(id(1)), b"x", base),
                Lookup::New
            );
            cache.record(peer, id(n), b"x", n, base);
        }
        assert_eq!(cache.len(), 5);
        // The peer still awaits 4: 1 to 3 are done, 4 and 5 may still be resent.
        assert_eq!(
            cache.check(peer, id(4), Some(id(4)), b"x", base),
            Lookup::Answered { access: 4 }
        );
        assert_eq!(cache.len(), 2);
        for n in 1..=3 {
            assert_eq!(cache.check(peer, id(n), None, b"x", base), Lookup::Done);
        }
        // An older watermark does not move it back.
        assert_eq!(
            cache.check(peer, id(2), Some(id(1)), b"x", base),
            Lookup::Done
        );
        assert_eq!(
            cache.check(peer, id(5), None, b"x", base),
            Lookup::Answered { access: 5 }
        );
        // A request that acknowledges itself, as udptalk's client does, drops the rest.
        assert_eq!(
            cache.check(peer, id(9), Some(id(9)), b"x", base),
            Lookup::New
        );
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.check(peer, id(8), None, b"x", base), Lookup::Done);
    }

    #[test]
    fn an_ack_after_its_id_is_treated_as_absent() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        for n in 1..=2 {
            assert_eq!(cache.check(peer, id(n), None, b"x", base), Lookup::New);
            cache.record(peer, id(n), b"x", n, base);
        }
        // `proto` refuses such requests; were one to get through, it moves nothing.
        for ack in [id(10), id(MAX_ID / 2 - 5), id(MAX_ID / 2 + 5), id(MAX_ID)] {
            assert_eq!(
                cache.check(peer, id(2), Some(ack), b"x", base),
                Lookup::Answered { access: 2 },
                "ack {ack}"
            );
        }
        assert_eq!(
            cache.check(peer, id(1), None, b"x", base),
            Lookup::Answered { access: 1 }
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn acknowledgements_work_across_the_wrap_of_ids() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let last = id(MAX_ID);
        for n in 0..4 {
            let request = last.wrapping_add(n);
            assert_eq!(
                cache.check(peer, request, Some(last), b"x", base),
                Lookup::New
            );
            cache.record(peer, request, b"x", n, base);
        }
        assert_eq!(cache.streams, 1);
        assert_eq!(
            cache.check(peer, id(2), Some(id(2)), b"x", base),
            Lookup::Answered { access: 2 }
        );
        assert_eq!(cache.check(peer, last, None, b"x", base), Lookup::Done);
        assert_eq!(cache.check(peer, id(1), None, b"x", base), Lookup::Done);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn distance_is_the_shorter_way_round_the_ring() {
        assert_eq!(distance(id(5), id(5)), 0);
        assert_eq!(distance(id(5), id(8)), 3);
        assert_eq!(distance(id(8), id(5)), 3);
        assert_eq!(distance(id(MAX_ID), id(1)), 1);
        assert_eq!(distance(id(1), id(MAX_ID)), 1);
        assert_eq!(distance(id(MAX_ID - 2), id(3)), 5);
        assert_eq!(distance(id(1), id(1 + MAX_ID / 2)), MAX_ID / 2);
        assert_eq!(distance(id(1), id(2 + MAX_ID / 2)), MAX_ID / 2);
        assert!(in_window(id(1), id(1 + STREAM_WINDOW)));
        assert!(!in_window(id(1), id(2 + STREAM_WINDOW)));
        assert!(in_window(id(1), id(MAX_ID + 1 - STREAM_WINDOW)));
        assert!(!in_window(id(1), id(MAX_ID - STREAM_WINDOW)));
    }

    #[test]
    fn a_request_belongs_to_the_stream_whose_window_holds_it() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let anchor = id(1_000_000);
        assert_eq!(cache.check(peer, anchor, None, b"x", base), Lookup::New);
        // Within the window on either side: the same stream.
        for n in [anchor.get() - STREAM_WINDOW, anchor.get() + STREAM_WINDOW] {
            assert_eq!(cache.check(peer, id(n), None, b"x", base), Lookup::New);
            assert_eq!(cache.streams, 1, "id {n}");
        }
        // The anchor moved to the latest id: one past the old window is now inside.
        assert_eq!(
            cache.check(peer, id(anchor.get() + STREAM_WINDOW + 1), None, b"x", base),
            Lookup::New
        );
        assert_eq!(cache.streams, 1);
        // Outside every window: a new stream.
        let far = id(anchor.get() - STREAM_WINDOW - 1);
        assert_eq!(cache.check(peer, far, None, b"x", base), Lookup::New);
        assert_eq!(cache.streams, 2);
        // In both windows (anchors `far` and `anchor + W + 1`): the nearer anchor's stream.
        let near_far = id(far.get() + 10);
        assert_eq!(
            cache.check(peer, near_far, Some(near_far), b"x", base),
            Lookup::New
        );
        assert_eq!(cache.check(peer, far, None, b"x", base), Lookup::Done);
        assert_eq!(cache.check(peer, anchor, None, b"x", base), Lookup::New);
    }

    #[test]
    fn an_acknowledgement_acts_only_in_its_own_stream() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let client = id(123_456_789);
        for n in 0..3 {
            let request = client.wrapping_add(n);
            assert_eq!(
                cache.check(peer, request, Some(client), b"x", base),
                Lookup::New
            );
            cache.record(peer, request, b"x", n, base);
        }
        // A forged request far away, acknowledging half the ring: its own stream only.
        let forged = client.wrapping_add(MAX_ID / 2);
        let forged_ack = client.wrapping_add(3);
        assert!(forged_ack.precedes(forged));
        assert_eq!(
            cache.check(peer, forged, Some(forged_ack), b"y", base),
            Lookup::New
        );
        let forged = client.wrapping_add(MAX_ID / 4);
        assert_eq!(
            cache.check(peer, forged, Some(forged_ack), b"y", base),
            Lookup::New
        );
        assert_eq!(cache.streams, 3);
        assert_eq!(cache.len(), 3);
        for n in 0..3 {
            assert_eq!(
                cache.check(peer, client.wrapping_add(n), None, b"x", base),
                Lookup::Answered { access: n }
            );
        }
        assert_eq!(
            cache.check(peer, client.wrapping_add(3), None, b"x", base),
            Lookup::New
        );
    }

    #[test]
    fn a_watermark_is_forgotten_once_the_window_leaves_it_behind() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        assert_eq!(
            cache.check(peer, id(10), Some(id(10)), b"x", base),
            Lookup::New
        );
        // The anchor moves on in steps within the window; the old watermark falls behind.
        for step in 1..=3 {
            let request = id(10 + step * (STREAM_WINDOW / 2));
            assert_eq!(cache.check(peer, request, None, b"x", base), Lookup::New);
        }
        assert_eq!(cache.streams, 1);
        let state = cache.peers.get(&peer).map(|state| &state.streams[0]);
        assert!(state.is_some_and(|stream| stream.watermark.is_none()));
        // An id before the old watermark is now outside the window: a stream of its own.
        assert_eq!(cache.check(peer, id(5), None, b"x", base), Lookup::New);
        assert_eq!(cache.streams, 2);
    }

    #[test]
    fn full_caps_answer_busy_and_never_evict_a_live_answer() {
        let base = Instant::now();
        let mut cache = ReplyCache::new(tiny(2, 3, 2));
        let (a, b, c) = (addr(1), addr(2), addr(3));
        for (peer, n) in [(a, 1), (a, 2), (b, 1)] {
            assert_eq!(cache.check(peer, id(n), None, b"x", base), Lookup::New);
            cache.record(peer, id(n), b"x", n, base);
        }
        // Per peer, in total, and for a new peer when the peer table is full.
        assert_eq!(cache.check(a, id(3), None, b"x", base), Lookup::Busy);
        assert_eq!(cache.check(b, id(2), None, b"x", base), Lookup::Busy);
        assert_eq!(cache.check(c, id(1), None, b"x", base), Lookup::Busy);
        // Recording anyway keeps nothing.
        cache.record(b, id(2), b"x", 99, base);
        cache.record(c, id(1), b"x", 99, base);
        assert_eq!((cache.len(), cache.peers()), (3, 2));
        for (peer, n) in [(a, 1), (a, 2), (b, 1)] {
            assert_eq!(
                cache.check(peer, id(n), None, b"x", base + secs(29)),
                Lookup::Answered { access: n }
            );
        }
        // An acknowledgement makes room at once.
        assert_eq!(
            cache.check(a, id(3), Some(id(3)), b"x", base + secs(29)),
            Lookup::New
        );
    }

    #[test]
    fn a_full_set_of_streams_answers_busy_and_never_evicts_a_live_stream() {
        let base = Instant::now();
        let limits = CacheLimits {
            streams_per_peer: 2,
            ..CacheLimits::default()
        };
        let mut cache = ReplyCache::new(limits);
        let peer = addr(1000);
        let (one, two, three) = (id(1), id(1 << 40), id(1 << 50));
        assert_eq!(cache.check(peer, one, Some(one), b"x", base), Lookup::New);
        cache.record(peer, one, b"x", 1, base);
        assert_eq!(
            cache.check(peer, two, Some(two), b"x", base + secs(10)),
            Lookup::New
        );
        cache.record(peer, two, b"x", 2, base + secs(10));
        // A third stream has no room, even recorded anyway, and changes nothing.
        assert_eq!(
            cache.check(peer, three, Some(three), b"x", base + secs(20)),
            Lookup::Busy
        );
        cache.record(peer, three, b"x", 3, base + secs(20));
        assert_eq!((cache.streams, cache.len()), (2, 2));
        // Both live streams are still served, in their windows.
        assert_eq!(
            cache.check(peer, one, None, b"x", base + secs(29)),
            Lookup::Answered { access: 1 }
        );
        assert_eq!(
            cache.check(peer, two.next(), Some(two.next()), b"x", base + secs(29)),
            Lookup::New
        );
        // Silent for a window, the first stream is reclaimed and its room returns.
        let later = base + secs(29) + RETRY_WINDOW;
        assert_eq!(cache.check(peer, three, None, b"x", later), Lookup::New);
        assert_eq!(cache.check(peer, two, None, b"x", later), Lookup::New);
        assert_eq!(cache.streams, 2);
    }

    #[test]
    fn no_streams_allowed_means_busy_and_no_peer_kept() {
        let base = Instant::now();
        let limits = CacheLimits {
            streams_per_peer: 0,
            ..CacheLimits::default()
        };
        let mut cache = ReplyCache::new(limits);
        assert_eq!(cache.check(addr(1), id(1), None, b"x", base), Lookup::Busy);
        cache.record(addr(1), id(1), b"x", 1, base);
        assert_eq!((cache.peers(), cache.len()), (0, 0));
    }

    #[test]
    fn a_restarted_client_is_answered_while_its_old_stream_lives() {
        let base = Instant::now();
        let mut rng = XorShift(0x5eed_0001);
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let mut now = base;
        let mut access = 0;
        let old = rng.id();
        for n in 0..100 {
            let request = old.wrapping_add(n);
            assert_eq!(
                cache.check(peer, request, Some(request), b"old", now),
                Lookup::New
            );
            access += 1;
            cache.record(peer, request, b"old", access, now);
            now += Duration::from_millis(10);
        }
        // The client restarts on the same port with a new random first id.
        let new = old.wrapping_add(MAX_ID / 3);
        for n in 0..100 {
            let request = new.wrapping_add(n);
            assert_eq!(
                cache.check(peer, request, Some(request), b"new", now),
                Lookup::New,
                "request {n} after the restart"
            );
            access += 1;
            cache.record(peer, request, b"new", access, now);
            now += Duration::from_millis(10);
        }
        // The old stream is still live: a late resend of its last request is answered again.
        assert_eq!(cache.streams, 2);
        assert_eq!(
            cache.check(peer, old.wrapping_add(99), None, b"old", now),
            Lookup::Answered { access: 100 }
        );
        assert_eq!(
            cache.check(peer, old.wrapping_add(50), None, b"old", now),
            Lookup::Done
        );
    }

    #[test]
    fn forged_requests_never_make_a_real_request_done_busy_or_conflicting() {
        // An off-path forger shares the client's address and port but not its ids: 10,000
        // forged requests with random ids and acks, interleaved with 2,000 real requests that
        // acknowledge themselves, some resent. Time runs past the window, so forged streams
        // age out and new ones take their place.
        let base = Instant::now();
        let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
        let mut cache = ReplyCache::new(CacheLimits::default());
        let peer = addr(1000);
        let start = rng.id();
        let mut now = base;
        let mut access = 0;
        let (mut forged_new, mut forged_busy, mut forged_total) = (0, 0, 0);
        let mut forge = |cache: &mut ReplyCache, rng: &mut XorShift, now: Instant| {
            let forged = rng.id();
            let ack = match rng.below(3) {
                0 => None,
                1 => Some(forged),
                // Up to half the ring before it: never after it.
                _ => Some(
                    Id::MIN.wrapping_add(forged.get() - 1 + MAX_ID - rng.below(MAX_ID / 2 - 1)),
                ),
            };
            assert!(ack.is_none_or(|ack| !forged.precedes(ack)));
            let body = rng.next().to_le_bytes();
            forged_total += 1;
            match cache.check(peer, forged, ack, &body, now) {
                Lookup::New => {
                    forged_new += 1;
                    cache.record(peer, forged, &body, u64::MAX, now);
                }
                Lookup::Busy => forged_busy += 1,
                _ => {}
            }
        };
        for n in 0..2_000_u64 {
            let request = start.wrapping_add(n);
            let body = format!("line {n}");
            for _ in 0..3 {
                forge(&mut cache, &mut rng, now);
                now += Duration::from_millis(10);
            }
            assert_eq!(
                cache.check(peer, request, Some(request), body.as_bytes(), now),
                Lookup::New,
                "request {n}"
            );
            access += 1;
            cache.record(peer, request, body.as_bytes(), access, now);
            for _ in 0..2 {
                forge(&mut cache, &mut rng, now);
                now += Duration::from_millis(10);
            }
            if n % 3 == 0 {
                assert_eq!(
                    cache.check(peer, request, Some(request), body.as_bytes(), now),
                    Lookup::Answered { access },
                    "resend of request {n}"
                );
            }
        }
        assert_eq!(forged_total, 10_000);
        // The forger did fill the peer's streams, again and again, as the window moved on.
        let spare = CacheLimits::default().streams_per_peer - 1;
        assert!(forged_new > 2 * spare, "{forged_new} forged streams");
        assert!(forged_busy > 9_000, "{forged_busy} forged requests busy");
        assert!(now.duration_since(base) > 2 * RETRY_WINDOW);
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
                cache.check(peer, request, Some(request), b"x", now),
                Lookup::New,
                "request {n}"
            );
            cache.record(peer, request, b"x", n, now);
            // A resend of the request just answered is answered from the cache.
            if n % 1000 == 0 {
                assert_eq!(
                    cache.check(peer, request, Some(request), b"x", now),
                    Lookup::Answered { access: n }
                );
            }
            assert!(cache.len() <= 1, "request {n}");
            assert_eq!(cache.streams, 1, "request {n}");
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
            assert_eq!(
                cache.check(peer, request, Some(lowest), b"x", now),
                Lookup::New
            );
            cache.record(peer, request, b"x", n, now);
            assert_eq!(
                cache.check(peer, request, Some(lowest), b"x", now),
                Lookup::Answered { access: n }
            );
        }
        assert_eq!(cache.streams, 1);
    }

    #[test]
    fn a_full_cache_stays_within_its_documented_memory() {
        // Every peer at its cap of streams, and as many as there is room for with one answer
        // each: the layout that costs the most per answer and per stream.
        let limits = CacheLimits::default();
        let base = Instant::now();
        let mut cache = ReplyCache::new(limits);
        let mut access = 0;
        for port in 0..limits.peers {
            let peer = addr(1 + port as u16);
            for stream in 0..limits.streams_per_peer as u64 {
                let request = id(1 + (stream << 40));
                if cache.check(peer, request, None, b"x", base) == Lookup::New {
                    access += 1;
                    cache.record(peer, request, b"x", access, base);
                }
            }
        }
        assert_eq!(cache.peers(), limits.peers);
        assert_eq!(cache.streams, limits.peers * limits.streams_per_peer);
        assert_eq!(cache.len(), limits.entries);

        // What the estimate in `CacheLimits::default`'s docs assumes.
        assert_eq!(size_of::<(Id, Answer)>(), 48);
        assert_eq!(size_of::<Recorded>(), 56);
        assert_eq!(size_of::<Heard>(), 56);
        assert_eq!(size_of::<Stream>(), 72);
        assert_eq!(size_of::<(SocketAddr, Peer)>(), 56);

        // The bytes the cache's tables hold, plus 16 bytes of allocator overhead for each
        // allocation.
        const ALLOCATION: usize = 16;
        let buckets = (cache.peers.capacity() * 8 / 7).next_power_of_two();
        let mut bytes = buckets * (size_of::<(SocketAddr, Peer)>() + 1) + ALLOCATION;
        for state in cache.peers.values() {
            assert!(state.streams.capacity() <= limits.streams_per_peer);
            bytes += state.streams.capacity() * size_of::<Stream>() + ALLOCATION;
            for stream in &state.streams {
                let capacity = stream.answers.0.capacity();
                assert!(capacity <= 4 * stream.answers.len().max(1));
                if capacity > 0 {
                    bytes += capacity * size_of::<(Id, Answer)>() + ALLOCATION;
                }
            }
        }
        bytes += cache.answered.capacity() * size_of::<Recorded>();
        bytes += cache.heard.capacity() * size_of::<Heard>();
        let mib = 1 << 20;

        // The documented bound itself: per answer, per stream, per peer.
        let answer = 4 * size_of::<(Id, Answer)>() + size_of::<Recorded>() * 9 / 8 + ALLOCATION;
        // A stream whose answers were all acknowledged keeps room for one (see `release_spare`).
        let stream = size_of::<Stream>()
            + size_of::<Heard>() * 9 / 8
            + size_of::<(Id, Answer)>()
            + ALLOCATION;
        let peer = 2 * (size_of::<(SocketAddr, Peer)>() + 1) + ALLOCATION;
        assert!(answer <= 272 && stream <= 199 && peer <= 130);
        let bound = limits.entries * answer
            + limits.peers * (peer + limits.streams_per_peer * stream)
            + 2 * 65 * 56;
        assert!(bytes <= bound, "{bytes} > {bound}");
        assert!(bound < 32 * mib, "{bound}");
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
        /// Each peer's streams, oldest first.
        peers: HashMap<SocketAddr, Vec<ModelStream>>,
        /// The answers acknowledgements dropped: (peer, id, access).
        retired: Vec<(SocketAddr, Id, u64)>,
    }

    struct ModelStream {
        anchor: Id,
        watermark: Option<Id>,
        last_seen: Instant,
        /// Access number, time and body of each answer.
        answers: HashMap<Id, (u64, Instant, Vec<u8>)>,
    }

    /// How far apart two ids are, counting the steps from `a` up to `b` and back down.
    fn model_distance(a: Id, b: Id) -> u64 {
        let up = if b.get() >= a.get() {
            b.get() - a.get()
        } else {
            MAX_ID - (a.get() - b.get())
        };
        if up == 0 { 0 } else { up.min(MAX_ID - up) }
    }

    impl ModelStream {
        fn holds(&self, id: Id) -> bool {
            model_distance(self.anchor, id) <= STREAM_WINDOW
        }

        fn done(&self, id: Id) -> bool {
            self.holds(id) && self.watermark.is_some_and(|mark| id.precedes(mark))
        }
    }

    impl Model {
        fn live(&self) -> usize {
            self.peers
                .values()
                .flatten()
                .map(|stream| stream.answers.len())
                .sum()
        }

        fn streams(&self) -> usize {
            self.peers.values().map(Vec::len).sum()
        }

        fn forget(&mut self, limits: &CacheLimits, now: Instant) {
            for stream in self.peers.values_mut().flatten() {
                stream
                    .answers
                    .retain(|_, (_, at, _)| now.duration_since(*at) < limits.window);
            }
            for streams in self.peers.values_mut() {
                streams.retain(|stream| now.duration_since(stream.last_seen) < limits.window);
            }
            self.peers.retain(|_, streams| !streams.is_empty());
        }

        /// The index of the stream `id` belongs to, started if there is room, with its anchor
        /// and time moved.
        fn enter(
            &mut self,
            limits: &CacheLimits,
            peer: SocketAddr,
            id: Id,
            now: Instant,
        ) -> Option<usize> {
            if !self.peers.contains_key(&peer)
                && (self.peers.len() >= limits.peers || limits.streams_per_peer == 0)
            {
                return None;
            }
            let streams = self.peers.entry(peer).or_default();
            let answered = streams
                .iter()
                .position(|stream| stream.answers.contains_key(&id));
            let mut nearest: Option<(u64, usize)> = None;
            for (index, stream) in streams.iter().enumerate() {
                let distance = model_distance(stream.anchor, id);
                if stream.holds(id) && nearest.is_none_or(|(best, _)| distance < best) {
                    nearest = Some((distance, index));
                }
            }
            let index = match answered.or(nearest.map(|(_, index)| index)) {
                Some(index) => index,
                None if streams.len() < limits.streams_per_peer => {
                    streams.push(ModelStream {
                        anchor: id,
                        watermark: None,
                        last_seen: now,
                        answers: HashMap::new(),
                    });
                    streams.len() - 1
                }
                None => return None,
            };
            let stream = &mut streams[index];
            stream.last_seen = now;
            if stream.holds(id) && stream.anchor.precedes(id) {
                stream.anchor = id;
            }
            let anchor = stream.anchor;
            if stream
                .watermark
                .is_some_and(|mark| model_distance(anchor, mark) > STREAM_WINDOW)
            {
                stream.watermark = None;
            }
            Some(index)
        }

        fn check(
            &mut self,
            limits: &CacheLimits,
            peer: SocketAddr,
            id: Id,
            ack: Option<Id>,
            body: &[u8],
            now: Instant,
        ) -> Lookup {
            self.forget(limits, now);
            let Some(index) = self.enter(limits, peer, id, now) else {
                return Lookup::Busy;
            };
            let live = self.live();
            let streams = self.peers.entry(peer).or_default();
            let stream = &mut streams[index];
            let mut live = live;
            if let Some(ack) = ack {
                if !id.precedes(ack) && stream.watermark.is_none_or(|mark| mark.precedes(ack)) {
                    if stream.holds(ack) {
                        stream.watermark = Some(ack);
                    }
                    let before = stream.answers.len();
                    for (&answered, &(access, _, _)) in &stream.answers {
                        if answered.precedes(ack) {
                            self.retired.push((peer, answered, access));
                        }
                    }
                    stream.answers.retain(|answered, _| !answered.precedes(ack));
                    live -= before - stream.answers.len();
                }
            }
            if stream.done(id) {
                return Lookup::Done;
            }
            if let Some((access, _, answered)) = stream.answers.get(&id) {
                return if answered == body {
                    Lookup::Answered { access: *access }
                } else {
                    Lookup::Conflict
                };
            }
            let peer_answers: usize = streams.iter().map(|stream| stream.answers.len()).sum();
            if peer_answers < limits.per_peer && live < limits.entries {
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
            body: &[u8],
            access: u64,
            now: Instant,
        ) {
            self.forget(limits, now);
            let Some(index) = self.enter(limits, peer, id, now) else {
                return;
            };
            let live = self.live();
            let streams = self.peers.entry(peer).or_default();
            let peer_answers: usize = streams.iter().map(|stream| stream.answers.len()).sum();
            let stream = &mut streams[index];
            if stream.done(id) {
                return;
            }
            let room = peer_answers < limits.per_peer && live < limits.entries;
            if room || stream.answers.contains_key(&id) {
                stream.answers.insert(id, (access, now, body.to_vec()));
            }
        }
    }

    /// A peer's streams as the cache holds them, in a form the model can give too.
    type Streams = Vec<(Id, Option<Id>, Instant, Vec<(Id, u64)>)>;

    fn cache_streams(cache: &ReplyCache, peer: SocketAddr) -> Streams {
        let streams = cache
            .peers
            .get(&peer)
            .map_or(&[][..], |state| &state.streams);
        streams
            .iter()
            .map(|stream| {
                let answers = stream.answers.0.iter().map(|(id, a)| (*id, a.access));
                (
                    stream.anchor,
                    stream.watermark,
                    stream.last_seen,
                    answers.collect(),
                )
            })
            .collect()
    }

    fn model_streams(model: &Model, peer: SocketAddr) -> Streams {
        let streams = model.peers.get(&peer).map_or(&[][..], Vec::as_slice);
        streams
            .iter()
            .map(|stream| {
                let mut answers: Vec<_> = stream
                    .answers
                    .iter()
                    .map(|(id, (access, _, _))| (*id, *access))
                    .collect();
                answers.sort();
                (stream.anchor, stream.watermark, stream.last_seen, answers)
            })
            .collect()
    }

    /// Where a step's ids cluster: near 0, either side of one window and of two (so that
    /// windows meet and overlap), half the ring away, and just below the wrap.
    const CLUSTERS: [u64; 6] = [
        0,
        STREAM_WINDOW - 4,
        2 * STREAM_WINDOW - 8,
        2 * STREAM_WINDOW + 4,
        MAX_ID / 2,
        MAX_ID - 6,
    ];

    /// One step of a client population: a request from one of a few peers, with an id near
    /// one of the [`CLUSTERS`], an optional watermark (usually a little before the id,
    /// sometimes anywhere, even after it), one of two bodies, and a pause before it.
    #[derive(Debug, Clone)]
    struct Step {
        peer: u16,
        cluster: usize,
        offset: u64,
        ack: Option<(bool, usize, u64)>,
        body: usize,
        pause_ms: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        let pause = prop_oneof![
            8 => Just(0_u64),
            8 => 1..2_000_u64,
            1 => 29_000..31_000_u64,
            1 => 31_000..70_000_u64,
        ];
        let ack =
            proptest::option::of((proptest::bool::weighted(0.8), 0..CLUSTERS.len(), 0..12_u64));
        let body = prop_oneof![6 => Just(0_usize), 1 => Just(1_usize)];
        (
            0..4_u16,
            prop_oneof![3 => Just(0_usize), 2 => 0..CLUSTERS.len()],
            0..12_u64,
            ack,
            body,
            pause,
        )
            .prop_map(|(peer, cluster, offset, ack, body, pause_ms)| Step {
                peer,
                cluster,
                offset,
                ack,
                body,
                pause_ms,
            })
    }

    proptest! {
        #[test]
        fn the_cache_agrees_with_a_naive_model_and_keeps_its_caps(
            wrap in any::<bool>(),
            streams_per_peer in 1..4_usize,
            steps in proptest::collection::vec(step(), 1..300),
            resend_every in 1..5_usize,
        ) {
            let limits = CacheLimits {
                window: RETRY_WINDOW,
                per_peer: 3,
                entries: 5,
                peers: 3,
                streams_per_peer,
            };
            let mut cache = ReplyCache::new(limits);
            let mut model = Model::default();
            let base = Instant::now();
            let mut now = base;
            let mut access = 0;
            let shift = if wrap { MAX_ID - 5 } else { 0 };
            let bodies: [&[u8]; 2] = [b"a", b"b"];
            // Answers recorded, to check that each is given again while it must be.
            let mut recorded: Vec<(SocketAddr, Id, &[u8], u64, Instant)> = Vec::new();
            for (n, step) in steps.iter().enumerate() {
                now += Duration::from_millis(step.pause_ms);
                let peer = addr(step.peer);
                let request = Id::MIN.wrapping_add(CLUSTERS[step.cluster] + step.offset + shift);
                let ack = step.ack.map(|(before, cluster, offset)| {
                    if before {
                        // `offset` before the request: never after it.
                        request.wrapping_add(MAX_ID - offset)
                    } else {
                        Id::MIN.wrapping_add(CLUSTERS[cluster] + offset + shift)
                    }
                });
                let body = bodies[step.body];
                let expected = model.check(&limits, peer, request, ack, body, now);
                let found = cache.check(peer, request, ack, body, now);
                prop_assert_eq!(found, expected, "step {}: {:?}", n, step);
                if found == Lookup::New {
                    access += 1;
                    cache.record(peer, request, body, access, now);
                    model.record(&limits, peer, request, body, access, now);
                    recorded.push((peer, request, body, access, now));
                }
                prop_assert!(cache.len() <= limits.entries);
                prop_assert!(cache.peers() <= limits.peers);
                prop_assert_eq!(cache.len(), model.live());
                prop_assert_eq!(cache.peers(), model.peers.len());
                prop_assert_eq!(cache.streams, model.streams());
                for (peer, state) in &cache.peers {
                    prop_assert!(!state.streams.is_empty());
                    prop_assert!(state.streams.len() <= limits.streams_per_peer);
                    prop_assert!(state.answers() <= limits.per_peer);
                    prop_assert_eq!(cache_streams(&cache, *peer), model_streams(&model, *peer));
                }
                // Every answer recorded less than a window ago that no acknowledgement retired
                // is given again, with its own access number, to a resend with its body.
                if n % resend_every == 0 {
                    for &(peer, id, body, access, at) in &recorded {
                        let latest = recorded
                            .iter()
                            .rev()
                            .find(|(p, i, _, _, _)| *p == peer && *i == id)
                            .is_some_and(|(_, _, _, a, _)| *a == access);
                        let retired = model.retired.contains(&(peer, id, access));
                        if latest && !retired && now.duration_since(at) < limits.window {
                            let found = cache.check(peer, id, None, body, now);
                            let expected = model.check(&limits, peer, id, None, body, now);
                            prop_assert_eq!(found, Lookup::Answered { access });
                            prop_assert_eq!(expected, Lookup::Answered { access });
                        }
                    }
                }
            }
        }

        #[test]
        fn admit_decides_and_keeps_what_check_then_record_do(
            streams_per_peer in 1..4_usize,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let limits = CacheLimits {
                window: RETRY_WINDOW,
                per_peer: 3,
                entries: 5,
                peers: 3,
                streams_per_peer,
            };
            let (mut apart, mut together) = (ReplyCache::new(limits), ReplyCache::new(limits));
            let mut now = Instant::now();
            let (mut counted_apart, mut counted_together) = (0_u64, 0_u64);
            let bodies: [&[u8]; 2] = [b"a", b"b"];
            for (n, step) in steps.iter().enumerate() {
                now += Duration::from_millis(step.pause_ms);
                let peer = addr(step.peer);
                let request = Id::MIN.wrapping_add(CLUSTERS[step.cluster] + step.offset);
                let ack = step.ack.map(|(before, cluster, offset)| {
                    if before {
                        request.wrapping_add(MAX_ID - offset)
                    } else {
                        Id::MIN.wrapping_add(CLUSTERS[cluster] + offset)
                    }
                });
                let body = bodies[step.body];
                let expected = match apart.check(peer, request, ack, body, now) {
                    Lookup::New => {
                        counted_apart += 1;
                        apart.record(peer, request, body, counted_apart, now);
                        Admission::New { access: counted_apart }
                    }
                    Lookup::Answered { access } => Admission::Again { access },
                    Lookup::Done => Admission::Done,
                    Lookup::Conflict => Admission::Conflict,
                    Lookup::Busy => Admission::Busy,
                };
                let found = together.admit(peer, request, ack, body, now, || {
                    counted_together += 1;
                    counted_together
                });
                prop_assert_eq!(found, expected, "step {}: {:?}", n, step);
                prop_assert_eq!(counted_together, counted_apart);
                prop_assert_eq!(together.len(), apart.len());
                prop_assert_eq!(together.peers(), apart.peers());
                prop_assert_eq!(together.streams, apart.streams);
            }
        }
    }
}
