//! [`LoopGuard`]: the rule that keeps a forged datagram from starting an endless exchange.
//!
//! The attack (CVE-2024-2169): an off-path sender forges one datagram "from" server A to server
//! B. B answers A, A answers B, and the two ping-pong until one dies, each at the speed of the
//! path. Any two services that answer every datagram can be paired this way: two udptalk
//! servers, a udptalk server and the tutorial's, an RFC 862 echo, `socat … PIPE`.
//!
//! The rule has three parts; a datagram caught by any of them is not answered and is counted
//! under `loops`:
//! 1. a plain datagram that is one of a server's answers (`Hello Client!!`,
//!    `Access count: <digits>`, [`proto::text::is_server_reply`]) is another server talking:
//!    answering it is how two tutorial-style servers loop;
//! 2. a source port of 0–1023 belongs to a well-known service (echo is port 7, chargen 19,
//!    DNS 53, …), which answers whatever it is sent: no client sends from there;
//! 3. an (address, port) whose datagrams repeat, byte for byte, the answer last sent to it, a
//!    third time within [`REPEAT_WINDOW`], is echoing us: the first two repeats are answered (a
//!    person may well send the same line twice), the third is not, and nor is any later one
//!    until it sends something else. That ends a loop with any echo, whatever it answers.
//!
//! Part 3 is what this type keeps state for; parts 1 and 2 need none ([`LoopGuard::check`] applies
//! all three). Two echo servers paired by one forged datagram send at most six datagrams between
//! them: B answers, A echoes, and each stops at the third repeat.
//!
//! The state is two generations of a table: answers recorded in the current one, and the one
//! before, which is dropped when the current one is a [`REPEAT_WINDOW`] old or half the cap
//! full. Memory is bounded by the cap, and a loop, whose entry is refreshed on every round trip,
//! is never the entry dropped.

use foldhash::fast::RandomState as FastState;
use foldhash::quality::RandomState as QualityState;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How close together repeats must come to count as a loop: a loop repeats at the speed of
/// the path, within milliseconds.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// The repeat of the last answer that is not answered: the third.
pub const REPEAT_LIMIT: u8 = 3;

/// Source ports below this belong to well-known services and are never answered.
pub const FIRST_CLIENT_PORT: u16 = 1024;

/// Why a datagram was not answered for fear of a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopCause {
    /// It is one of a server's answers.
    ServerReply,
    /// It came from a well-known port (0–1023).
    WellKnownPort,
    /// It repeats the answer last sent to its source, a third time within a second.
    Repeats,
}

impl LoopCause {
    /// What the per-datagram line says.
    pub fn describe(self) -> &'static str {
        match self {
            LoopCause::ServerReply => {
                "it is a server's answer; answering it could start a loop between two servers"
            }
            LoopCause::WellKnownPort => {
                "it comes from a well-known port (0-1023), whose services answer whatever they \
                 are sent"
            }
            LoopCause::Repeats => {
                "it repeats our last answer to its sender for the third time within a second: \
                 an echo loop"
            }
        }
    }
}

/// The answers last sent to each source, to recognise an echo of them.
#[derive(Debug)]
pub struct LoopGuard {
    current: HashMap<SocketAddr, LastAnswer, FastState>,
    previous: HashMap<SocketAddr, LastAnswer, FastState>,
    /// When `current` is a [`REPEAT_WINDOW`] old (and so is turned over): a deadline, so that
    /// each datagram compares two instants rather than subtracting them.
    turn_over: Option<Instant>,
    /// Most entries in both generations together.
    cap: usize,
    /// Keyed (foldhash's quality hasher with a random seed per process), so that no sender
    /// can choose a datagram that passes for another. Not SipHash: an echo of 16 KiB is hashed
    /// twice per datagram (the datagram, then the answer), and SipHash takes 3 µs for that
    /// many bytes here against foldhash's 0.5 µs, which made a 16 KiB echo server spend 2.4×
    /// the CPU per reply of a bare echo loop. A collision could at worst make the guard take
    /// one peer's datagram for an echo of our answer to that same peer: without the seed, no
    /// one can aim for one.
    hasher: QualityState,
}

/// The answer last sent to one source, and how often it has come back.
#[derive(Debug, Clone, Copy)]
struct LastAnswer {
    len: usize,
    hash: u64,
    /// Repeats in a row, the first of them at `first_repeat`.
    repeats: u8,
    first_repeat: Instant,
}

impl LoopGuard {
    /// Sources remembered by default: two generations of 8,192, about 1 MiB at most.
    pub const DEFAULT_SOURCES: usize = 16_384;

    /// A guard that remembers at most `cap` sources' last answers.
    pub fn new(cap: usize) -> LoopGuard {
        LoopGuard {
            current: HashMap::default(),
            previous: HashMap::default(),
            turn_over: None,
            cap: cap.max(2),
            hasher: QualityState::default(),
        }
    }

    /// Whether `datagram` from `peer` must go unanswered for fear of a loop, and why.
    pub fn check(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Option<LoopCause> {
        if peer.port() < FIRST_CLIENT_PORT {
            return Some(LoopCause::WellKnownPort);
        }
        if proto::text::is_server_reply(datagram) {
            return Some(LoopCause::ServerReply);
        }
        self.rotate(now);
        let hasher = self.hasher.clone();
        let last = self.entry(peer)?;
        if last.len != datagram.len() || last.hash != hasher.hash_one(datagram) {
            last.repeats = 0;
            return None;
        }
        if last.repeats == 0 || now.saturating_duration_since(last.first_repeat) > REPEAT_WINDOW {
            last.repeats = 1;
            last.first_repeat = now;
        } else {
            last.repeats = last.repeats.saturating_add(1);
        }
        (last.repeats >= REPEAT_LIMIT).then_some(LoopCause::Repeats)
    }

    /// Notes that `answer` was sent to `peer`.
    pub fn answered(&mut self, peer: SocketAddr, answer: &[u8], now: Instant) {
        self.rotate(now);
        let hash = self.hasher.hash_one(answer);
        let len = answer.len();
        if let Some(last) = self.entry(peer) {
            if last.len != len || last.hash != hash {
                *last = LastAnswer {
                    len,
                    hash,
                    repeats: 0,
                    first_repeat: now,
                };
            }
            return;
        }
        if self.current.len() >= self.cap / 2 {
            self.start_generation(now);
        }
        self.current.insert(
            peer,
            LastAnswer {
                len,
                hash,
                repeats: 0,
                first_repeat: now,
            },
        );
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of `peer` in the current generation, moved there from the previous one.
    /// The entry of `peer` in the current generation, moved there from the previous one: one
    /// lookup when it is in the current one already, as a talking peer's is.
    fn entry(&mut self, peer: SocketAddr) -> Option<&mut LastAnswer> {
        if self.current.len() >= self.cap / 2
            && !self.current.contains_key(&peer)
            && let Some(moved) = self.previous.remove(&peer)
        {
            // No room: the previous generation goes, this entry starts the next one.
            self.retire_current();
            self.current.insert(peer, moved);
        }
        match self.current.entry(peer) {
            Entry::Occupied(entry) => Some(entry.into_mut()),
            Entry::Vacant(room) => self.previous.remove(&peer).map(|moved| room.insert(moved)),
        }
    }

    fn rotate(&mut self, now: Instant) {
        if self.turn_over.is_none_or(|at| now >= at) {
            self.start_generation(now);
        }
    }

    fn start_generation(&mut self, now: Instant) {
        self.retire_current();
        self.turn_over = now.checked_add(REPEAT_WINDOW);
    }

    /// The current generation becomes the previous one, and the previous one's table, emptied
    /// but with its room kept, the current one: generations turn over each second without
    /// allocating, and neither table ever holds more than `cap / 2` entries' room.
    fn retire_current(&mut self) {
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn server_replies_and_well_known_ports_are_never_answered() {
        let mut guard = LoopGuard::new(16);
        let now = Instant::now();
        assert_eq!(
            guard.check(addr(40_000), b"Access count: 12", now),
            Some(LoopCause::ServerReply)
        );
        assert_eq!(
            guard.check(addr(40_000), b"Hello Client!!", now),
            Some(LoopCause::ServerReply)
        );
        for port in [0, 7, 19, 53, 1023] {
            assert_eq!(
                guard.check(addr(port), b"hello", now),
                Some(LoopCause::WellKnownPort)
            );
        }
        assert_eq!(guard.check(addr(1024), b"hello", now), None);
        assert_eq!(guard.check(addr(40_000), b"Hello Server!!", now), None);
    }

    #[test]
    fn the_third_repeat_of_the_last_answer_within_a_second_is_a_loop() {
        let mut guard = LoopGuard::new(16);
        let base = Instant::now();
        let peer = addr(40_000);
        assert_eq!(guard.check(peer, b"x", base), None, "nothing answered yet");
        guard.answered(peer, b"x", base);
        assert_eq!(guard.check(peer, b"x", base + ms(1)), None, "repeat 1");
        guard.answered(peer, b"x", base + ms(1));
        assert_eq!(guard.check(peer, b"x", base + ms(2)), None, "repeat 2");
        guard.answered(peer, b"x", base + ms(2));
        assert_eq!(
            guard.check(peer, b"x", base + ms(3)),
            Some(LoopCause::Repeats)
        );
        // Every later repeat too, until the source sends something else.
        assert_eq!(
            guard.check(peer, b"x", base + ms(4)),
            Some(LoopCause::Repeats)
        );
        assert_eq!(guard.check(peer, b"y", base + ms(5)), None);
        // Another source's repeats are its own.
        assert_eq!(guard.check(addr(40_001), b"x", base + ms(5)), None);
    }

    #[test]
    fn repeats_spread_over_more_than_a_second_are_a_person_not_a_loop() {
        let mut guard = LoopGuard::new(16);
        let base = Instant::now();
        let peer = addr(40_000);
        guard.answered(peer, b"same line", base);
        for n in 1..=10 {
            let now = base + ms(600 * n);
            assert_eq!(guard.check(peer, b"same line", now), None, "send {n}");
            guard.answered(peer, b"same line", now);
        }
    }

    #[test]
    fn a_different_datagram_of_the_same_length_is_no_repeat() {
        let mut guard = LoopGuard::new(16);
        let base = Instant::now();
        let peer = addr(40_000);
        guard.answered(peer, b"abc", base);
        for n in 0..10 {
            assert_eq!(guard.check(peer, b"abd", base + ms(n)), None);
        }
    }

    #[test]
    fn two_echo_servers_stop_within_six_datagrams() {
        // A and B echo whatever they are sent; one forged datagram "from A" reaches B.
        let base = Instant::now();
        let (a, b) = (addr(40_000), addr(40_001));
        let mut guards = [LoopGuard::new(16), LoopGuard::new(16)];
        let mut in_flight = Some((1, b"forged".to_vec()));
        let mut sent = 0;
        let mut step = 0;
        while let Some((to, datagram)) = in_flight.take() {
            step += 1;
            assert!(step < 100, "the exchange did not stop");
            let from = if to == 1 { a } else { b };
            let now = base + Duration::from_micros(step * 50);
            let guard = &mut guards[to];
            if guard.check(from, &datagram, now).is_none() {
                guard.answered(from, &datagram, now);
                sent += 1;
                in_flight = Some((1 - to, datagram));
            }
        }
        assert!(sent <= 6, "{sent} datagrams");
    }

    #[test]
    fn memory_stays_within_the_cap_under_many_sources() {
        let mut guard = LoopGuard::new(64);
        let base = Instant::now();
        for n in 0..10_000_u16 {
            let now = base + Duration::from_micros(u64::from(n));
            guard.answered(addr(2_000 + n), b"x", now);
            assert!(guard.len() <= 64, "{} at {n}", guard.len());
        }
        // A source answered on every round trip keeps its entry whatever else comes.
        let looping = addr(1_500);
        let mut caught = false;
        for n in 0..5_000_u16 {
            let now = base + ms(100) + Duration::from_micros(u64::from(n));
            if guard.check(looping, b"x", now).is_some() {
                caught = true;
                break;
            }
            guard.answered(looping, b"x", now);
            guard.answered(addr(20_000 + n), b"y", now);
        }
        assert!(caught, "the loop was not caught among other sources");
    }
}
