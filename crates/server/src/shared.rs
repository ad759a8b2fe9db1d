//! What the workers of one server share: the [`AccessCounter`], the per-IP policies, and the
//! [`GroupClaims`] that answer a broadcast or multicast datagram once.
//!
//! Everything else is per worker (each has its own [`crate::Core`] with its reply cache, loop
//! guard and peer tally): `SO_REUSEPORT` spreads peers across the workers' sockets by a hash of
//! the 4-tuple, so one peer (address and port) always reaches the same worker. One *IP* on many
//! ports does not: that is why the [`RateLimiter`] and the [`AmplificationBudget`], which are
//! per source IP, are shared, behind a mutex. They are touched only for sources that are not on
//! loopback, or when a rate limit is set, so a loopback server never takes these locks.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::Config;
use crate::amplification::AmplificationBudget;
use crate::rate_limit::RateLimiter;

/// The access numbers of one server, across all its workers: each number is handed out once.
#[derive(Debug, Default)]
pub struct AccessCounter(AtomicU64);

impl AccessCounter {
    /// Counts one access and returns its number (1 for the first).
    pub fn next(&self) -> u64 {
        // Relaxed is enough: only the number's uniqueness matters, which the atomic
        // read-modify-write gives; no other memory is published through it.
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Accesses counted so far.
    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The state all workers of one server share.
#[derive(Debug)]
pub struct Shared {
    /// Access numbers.
    pub counter: AccessCounter,
    /// The per-source rate limit, if any.
    pub limiter: Option<Mutex<RateLimiter>>,
    /// What may still be sent to each source.
    pub budget: Mutex<AmplificationBudget>,
    /// Broadcast and multicast datagrams already taken by a worker.
    pub claims: Mutex<GroupClaims>,
    /// Whether a group datagram left unanswered has been told of (once per server).
    pub group_told: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The shared state of a server of `config` with `workers` workers.
    pub fn new(config: &Config, workers: usize) -> Shared {
        Shared {
            counter: AccessCounter::default(),
            limiter: config.rate_limit.map(|rate| {
                Mutex::new(RateLimiter::new(
                    rate.per_second,
                    rate.burst,
                    RateLimiter::DEFAULT_SOURCES,
                ))
            }),
            budget: Mutex::new(AmplificationBudget::default()),
            claims: Mutex::new(GroupClaims::new(workers)),
            group_told: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Locks `mutex`, even if a worker panicked while holding it: these tables stay consistent
/// between method calls, and a server keeps serving rather than panicking in turn.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Most workers one server runs: each worker is a bit in a [`GroupClaims`] entry.
pub const MAX_WORKERS: usize = 64;

/// How long a broadcast datagram's copies are waited for. Every worker takes its copy within
/// a few milliseconds unless its socket dropped it (a full receive buffer): then the entry is
/// forgotten after this.
pub const CLAIM_WINDOW: Duration = Duration::from_secs(2);

/// Entries kept at most (about 100 KiB): past this the oldest is forgotten, at worst answering
/// one broadcast datagram twice.
pub const CLAIM_CAP: usize = 4_096;

/// Which worker answers a broadcast or multicast datagram. Every socket of a `SO_REUSEPORT`
/// group gets its own copy of such a datagram, so each worker asks [`GroupClaims::claim`]:
/// the first to ask for a datagram answers it, the others' copies are dropped unseen.
///
/// Copies are recognised by their source and a hash of their bytes, and told apart from a
/// *resend* of the same bytes by which workers have seen them: a worker that sees the same
/// bytes again before the others saw the first has a second datagram, not a copy. An entry is
/// forgotten once every worker has seen it, or after [`CLAIM_WINDOW`].
#[derive(Debug)]
pub struct GroupClaims {
    /// The mask of all workers.
    all: u64,
    entries: VecDeque<Claim>,
}

#[derive(Debug, Clone, Copy)]
struct Claim {
    source: SocketAddr,
    hash: u64,
    /// The workers that have seen this datagram.
    seen: u64,
    at: Instant,
}

impl GroupClaims {
    /// Claims for `workers` workers (at most [`MAX_WORKERS`]).
    pub fn new(workers: usize) -> GroupClaims {
        let workers = workers.clamp(1, MAX_WORKERS);
        GroupClaims {
            all: u64::MAX >> (MAX_WORKERS - workers),
            entries: VecDeque::new(),
        }
    }

    /// Whether `worker` (0-based) should answer `datagram` from `source`, received at `now`:
    /// true for the first copy, false for the other workers' copies of it.
    pub fn claim(
        &mut self,
        worker: usize,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> bool {
        let bit = 1_u64 << worker.min(MAX_WORKERS - 1);
        while let Some(oldest) = self.entries.front() {
            if now.saturating_duration_since(oldest.at) < CLAIM_WINDOW {
                break;
            }
            self.entries.pop_front();
        }
        let hash = {
            let mut hasher = DefaultHasher::new();
            datagram.hash(&mut hasher);
            hasher.finish()
        };
        // The oldest datagram with these bytes that this worker has not seen yet is the one
        // this copy belongs to.
        let found = self
            .entries
            .iter()
            .position(|c| c.source == source && c.hash == hash && c.seen & bit == 0);
        if let Some(index) = found {
            let entry = &mut self.entries[index];
            entry.seen |= bit;
            if entry.seen & self.all == self.all {
                self.entries.remove(index);
            }
            return false;
        }
        if self.all != bit {
            if self.entries.len() >= CLAIM_CAP {
                self.entries.pop_front();
            }
            self.entries.push_back(Claim {
                source,
                hash,
                seen: bit,
                at: now,
            });
        }
        true
    }

    /// Datagrams waiting for other workers' copies.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn each_datagram_is_answered_by_exactly_one_worker() {
        let now = Instant::now();
        let mut claims = GroupClaims::new(3);
        // Worker 1 gets its copy first, then workers 0 and 2.
        assert!(claims.claim(1, source(40_000), b"who is there?", now));
        assert!(!claims.claim(0, source(40_000), b"who is there?", now));
        assert!(!claims.claim(2, source(40_000), b"who is there?", now));
        assert_eq!(claims.pending(), 0, "forgotten once every worker saw it");
    }

    #[test]
    fn a_resend_of_the_same_bytes_is_a_new_datagram() {
        let now = Instant::now();
        let mut claims = GroupClaims::new(2);
        // Worker 0 sees both datagrams before worker 1 sees either.
        assert!(claims.claim(0, source(40_000), b"ping", now));
        assert!(
            claims.claim(0, source(40_000), b"ping", now),
            "a second datagram"
        );
        assert!(!claims.claim(1, source(40_000), b"ping", now));
        assert!(!claims.claim(1, source(40_000), b"ping", now));
        assert_eq!(claims.pending(), 0);
    }

    #[test]
    fn sources_and_bytes_are_told_apart() {
        let now = Instant::now();
        let mut claims = GroupClaims::new(2);
        assert!(claims.claim(0, source(40_000), b"a", now));
        assert!(claims.claim(0, source(40_001), b"a", now), "another port");
        assert!(claims.claim(0, source(40_000), b"b", now), "other bytes");
        assert!(!claims.claim(1, source(40_001), b"a", now));
        assert!(!claims.claim(1, source(40_000), b"b", now));
        assert!(!claims.claim(1, source(40_000), b"a", now));
        assert_eq!(claims.pending(), 0);
    }

    #[test]
    fn a_copy_that_never_comes_is_forgotten_after_the_window() {
        let now = Instant::now();
        let mut claims = GroupClaims::new(2);
        assert!(claims.claim(0, source(40_000), b"x", now));
        assert_eq!(claims.pending(), 1);
        let later = now + CLAIM_WINDOW;
        // Worker 1's copy was lost; the same bytes after the window are a new datagram.
        assert!(claims.claim(1, source(40_000), b"x", later));
        assert_eq!(claims.pending(), 1);
    }

    #[test]
    fn one_worker_keeps_no_entries_and_the_table_is_capped() {
        let now = Instant::now();
        let mut alone = GroupClaims::new(1);
        for _ in 0..3 {
            assert!(alone.claim(0, source(40_000), b"x", now));
        }
        assert_eq!(alone.pending(), 0);
        let mut claims = GroupClaims::new(2);
        for n in 0..CLAIM_CAP + 10 {
            assert!(claims.claim(0, source(40_000), n.to_string().as_bytes(), now));
        }
        assert_eq!(claims.pending(), CLAIM_CAP);
    }

    #[test]
    fn the_counter_hands_out_each_number_once_across_threads() {
        let counter = AccessCounter::default();
        let mut all: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..1_000).map(|_| counter.next()).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        all.sort_unstable();
        assert_eq!(all, (1..=4_000).collect::<Vec<_>>());
        assert_eq!(counter.total(), 4_000);
    }
}
