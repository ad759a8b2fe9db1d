//! [`RateLimiter`]: a token bucket per source address, in a table of fixed size, and the
//! [`RateReport`] that names the sources refused most.

use foldhash::fast::RandomState as FastState;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::timeline::Timeline;

/// Token buckets per source address, in a table of fixed size.
///
/// Each source gets `burst` tokens and `rate_per_sec` more a second, up to `burst`; a datagram
/// spends one or is refused. A bucket is kept as the time it will next be full (the "theoretical
/// arrival time" of GCRA, the cell-rate algorithm of ATM networks, which is an exact token
/// bucket): one `Instant` per source, and "full" is a comparison with `now`.
///
/// A full bucket is the same as no bucket, so the table only needs the sources that have spent
/// tokens lately. When a new source finds the table full, buckets that have refilled are
/// reclaimed, least recently used first (kept in a timeline, so no call scans the table). If the
/// least recently used source is still refilling, the others wait their turn, at most
/// `burst / rate_per_sec` seconds. If the table is still full, the new source is charged to one
/// bucket shared by every source that does not fit: a flood from spoofed addresses can neither
/// grow the table nor push out the sources already in it, and gets one source's rate in all.
///
/// Refusals are counted per source so that a caller can log the heaviest ones at most once a
/// second ([`RateLimiter::take_report`]). The three heaviest are kept as they change, so a report
/// costs nothing to build. A source's count is lost if its bucket is reclaimed before the report
/// (it refilled, so it stopped sending a while ago); the total is always exact.
#[derive(Debug)]
pub struct RateLimiter {
    /// The time one token takes to come back (one second / rate), or `None` when the rate is 0
    /// and nothing is limited.
    interval: Option<Duration>,
    /// How far past `now` a bucket's full time may be: `burst` tokens' worth.
    depth: Duration,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket, FastState>,
    /// Sources in the order they last sent; an item is live while its time is the bucket's
    /// `used`.
    used: Timeline<Used>,
    /// The full time of the bucket shared by the sources that do not fit in the table.
    shared: Option<Instant>,
    refusals: Refusals,
    last_report: Option<Instant>,
}

/// One source's bucket.
#[derive(Debug)]
struct Bucket {
    /// When the bucket will be full again if no more tokens are spent.
    full_at: Instant,
    /// When the source last sent.
    used: Instant,
    /// Datagrams refused since the report numbered `round`.
    refused: u64,
    round: u64,
}

/// A timeline item: `source` sent at `at`.
#[derive(Debug, Clone, Copy)]
struct Used {
    at: Instant,
    source: IpAddr,
}

/// The refusals since the last report.
#[derive(Debug, Default)]
struct Refusals {
    total: u64,
    shared: u64,
    /// The heaviest sources, at most [`RateReport::TOP`], in no order.
    top: Vec<(IpAddr, u64)>,
    /// The number of reports taken: a bucket's count from an earlier round is stale.
    round: u64,
}

/// What was refused since the last report, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateReport {
    /// Datagrams refused.
    pub refused: u64,
    /// Of those, the datagrams refused from sources that did not fit in the table, which share
    /// one bucket.
    pub shared: u64,
    /// The sources with the most refusals, most first, at most [`RateReport::TOP`].
    pub top: Vec<(IpAddr, u64)>,
}

impl RateLimiter {
    /// Sources a server's limiter remembers: about 3 MiB at 190 bytes each. Sources beyond
    /// share one bucket, so a spoofed flood cannot grow the table or push real clients out.
    pub const DEFAULT_SOURCES: usize = 16_384;

    /// A limiter that gives each source `burst` datagrams at once and `rate_per_sec` a second
    /// after that, and remembers at most `max_sources` sources. A rate of 0 limits nothing (the
    /// server's `--rate-limit 0`); a burst of 0 is taken as 1, since no datagram could pass.
    pub fn new(rate_per_sec: u32, burst: u32, max_sources: usize) -> RateLimiter {
        let interval = (rate_per_sec > 0).then(|| Duration::from_secs(1) / rate_per_sec);
        let depth = interval.map_or(Duration::ZERO, |interval| {
            interval.saturating_mul(burst.max(1))
        });
        RateLimiter {
            interval,
            depth,
            max_sources,
            buckets: HashMap::default(),
            used: Timeline::new(max_sources),
            shared: None,
            refusals: Refusals::default(),
            last_report: None,
        }
    }

    /// Whether a datagram from `source` may be handled now; if so, it spends a token.
    #[must_use]
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let source = source.to_canonical();
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.reclaim(now);
        }
        let full = self.buckets.len() >= self.max_sources;
        let (bucket, fresh) = match self.buckets.entry(source) {
            Entry::Occupied(occupied) => (occupied.into_mut(), false),
            Entry::Vacant(_) if full => {
                let shared = self.shared.get_or_insert(now);
                let allowed = spend(shared, now, interval, self.depth);
                if !allowed {
                    self.refusals.total += 1;
                    self.refusals.shared += 1;
                }
                return allowed;
            }
            Entry::Vacant(vacant) => {
                let bucket = vacant.insert(Bucket {
                    full_at: now,
                    used: now,
                    refused: 0,
                    round: self.refusals.round,
                });
                (bucket, true)
            }
        };
        let allowed = spend(&mut bucket.full_at, now, interval, self.depth);
        if !allowed {
            if bucket.round != self.refusals.round {
                bucket.round = self.refusals.round;
                bucket.refused = 0;
            }
            bucket.refused += 1;
            self.refusals.note(source, bucket.refused);
        }
        if fresh || bucket.used != now {
            bucket.used = now;
            let buckets = &self.buckets;
            self.used
                .push(Used { at: now, source }, buckets.len(), |item| {
                    is_live_use(buckets, item)
                });
        }
        allowed
    }

    /// A report of the refusals since the last one, if there were any and the last one is at
    /// least [`RateReport::INTERVAL`] old.
    pub fn take_report(&mut self, now: Instant) -> Option<RateReport> {
        if self.refusals.total == 0 {
            return None;
        }
        if self
            .last_report
            .is_some_and(|last| now.saturating_duration_since(last) < RateReport::INTERVAL)
        {
            return None;
        }
        self.last_report = Some(now);
        let mut top = std::mem::take(&mut self.refusals.top);
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let report = RateReport {
            refused: self.refusals.total,
            shared: self.refusals.shared,
            top,
        };
        self.refusals = Refusals {
            round: self.refusals.round + 1,
            ..Refusals::default()
        };
        Some(report)
    }

    /// The number of sources with a bucket of their own.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Drops the buckets that are full again, least recently used first, up to the first one
    /// still refilling.
    fn reclaim(&mut self, now: Instant) {
        loop {
            let buckets = &self.buckets;
            let Some(item) = self.used.oldest(|item| is_live_use(buckets, item)) else {
                break;
            };
            if self
                .buckets
                .get(&item.source)
                .is_some_and(|bucket| bucket.full_at > now)
            {
                break;
            }
            self.buckets.remove(&item.source);
            self.used.pop();
        }
    }
}

/// Spends a token from the bucket that is full at `full_at`, if it has one left: after this
/// datagram the bucket may owe at most `depth` (`burst` tokens' worth of time).
fn spend(full_at: &mut Instant, now: Instant, interval: Duration, depth: Duration) -> bool {
    let Some(next) = (*full_at).max(now).checked_add(interval) else {
        return false;
    };
    if next.saturating_duration_since(now) > depth {
        return false;
    }
    *full_at = next;
    true
}

/// Whether `item` is the timeline item of a source's latest datagram.
fn is_live_use(buckets: &HashMap<IpAddr, Bucket, FastState>, item: &Used) -> bool {
    buckets
        .get(&item.source)
        .is_some_and(|bucket| bucket.used == item.at)
}

impl Refusals {
    /// Counts a refusal of `source`, which now has `count` refusals in this round, and keeps
    /// the [`RateReport::TOP`] heaviest sources. Counts only grow within a round, so a source that
    /// passes the lightest of the top takes its place and the top stays exact.
    fn note(&mut self, source: IpAddr, count: u64) {
        self.total += 1;
        if let Some(entry) = self.top.iter_mut().find(|(ip, _)| *ip == source) {
            // Counted here rather than copied from the bucket, which may have been reclaimed
            // and started again since.
            entry.1 += 1;
        } else if self.top.len() < RateReport::TOP {
            self.top.push((source, count));
        } else if let Some(lightest) = self.top.iter_mut().min_by_key(|(_, n)| *n)
            && lightest.1 < count
        {
            *lightest = (source, count);
        }
    }
}

impl RateReport {
    /// How many sources a report names at most.
    pub const TOP: usize = 3;

    /// Least time between two reports: one log line a second at most, however hard the flood.
    pub const INTERVAL: Duration = Duration::from_secs(1);
}

impl fmt::Display for RateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.refused == 1 { "" } else { "s" };
        write!(f, "rate limit: refused {} datagram{plural}", self.refused)?;
        if self.shared > 0 {
            write!(
                f,
                " ({} from sources beyond the table, sharing one bucket)",
                self.shared
            )?;
        }
        for (n, (source, count)) in self.top.iter().enumerate() {
            let lead = if n == 0 { "; most from " } else { ", " };
            write!(f, "{lead}{source} ({count})")?;
        }
        write!(
            f,
            "; if they are real clients, raise --rate-limit (0 turns it off)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// How many of `count` datagrams from `source` at `now` are allowed.
    fn allowed(limiter: &mut RateLimiter, source: IpAddr, count: usize, now: Instant) -> usize {
        (0..count).filter(|_| limiter.allow(source, now)).count()
    }

    #[test]
    fn a_burst_passes_at_once_then_the_rate() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, 16);
        assert_eq!(allowed(&mut limiter, ip(1), 8, base), 5);
        // One token every 100 ms.
        assert_eq!(allowed(&mut limiter, ip(1), 3, base + ms(99)), 0);
        assert_eq!(allowed(&mut limiter, ip(1), 3, base + ms(100)), 1);
        assert_eq!(allowed(&mut limiter, ip(1), 3, base + ms(200)), 1);
        // Idle for a second, the bucket holds a burst again, not ten tokens.
        assert_eq!(allowed(&mut limiter, ip(1), 30, base + ms(1_200)), 5);
        // Another source has its own bucket.
        assert_eq!(allowed(&mut limiter, ip(2), 8, base), 5);
    }

    #[test]
    fn an_idle_bucket_refills_up_to_the_burst_only() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, 16);
        assert_eq!(allowed(&mut limiter, ip(1), 5, base), 5);
        assert_eq!(allowed(&mut limiter, ip(1), 10, base + ms(300)), 3);
        assert_eq!(allowed(&mut limiter, ip(1), 10, base + ms(60_000)), 5);
    }

    #[test]
    fn a_rate_of_zero_limits_nothing() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(0, 5, 1);
        assert_eq!(allowed(&mut limiter, ip(1), 1_000, base), 1_000);
        assert_eq!(allowed(&mut limiter, ip(2), 1_000, base), 1_000);
        assert_eq!(limiter.sources(), 0);
        assert_eq!(limiter.take_report(base), None);
    }

    #[test]
    fn an_ipv4_mapped_address_shares_the_ipv4_bucket() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(10, 4, 16);
        let mapped = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(allowed(&mut limiter, ip(1), 2, base), 2);
        assert_eq!(allowed(&mut limiter, mapped, 4, base), 2);
        assert_eq!(limiter.sources(), 1);
    }

    #[test]
    fn sources_beyond_the_table_share_one_bucket() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, 2);
        assert_eq!(allowed(&mut limiter, ip(1), 1, base), 1);
        assert_eq!(allowed(&mut limiter, ip(2), 1, base), 1);
        // A flood from many addresses gets one bucket's worth in all...
        let flood: usize = (10..=200)
            .map(|n| allowed(&mut limiter, ip(n), 3, base))
            .sum();
        assert_eq!(flood, 5);
        assert_eq!(limiter.sources(), 2);
        // ...and the sources in the table keep their own buckets.
        assert_eq!(allowed(&mut limiter, ip(1), 10, base), 4);
        assert_eq!(allowed(&mut limiter, ip(2), 10, base), 4);
    }

    #[test]
    fn a_bucket_that_refilled_makes_room_for_a_new_source() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, 2);
        assert_eq!(allowed(&mut limiter, ip(1), 5, base), 5);
        assert_eq!(allowed(&mut limiter, ip(2), 1, base + ms(100)), 1);
        // Source 1 refills at 500 ms: until then the newcomer shares the overflow bucket.
        assert_eq!(allowed(&mut limiter, ip(3), 1, base + ms(499)), 1);
        assert_eq!(limiter.sources(), 2);
        // At 500 ms both buckets are full again, and both are reclaimed.
        assert_eq!(allowed(&mut limiter, ip(4), 1, base + ms(500)), 1);
        assert_eq!(limiter.sources(), 1);
        // Source 4 now has a bucket of its own, full but for the token it spent.
        assert_eq!(allowed(&mut limiter, ip(4), 10, base + ms(500)), 4);
    }

    #[test]
    fn reports_come_at_most_once_a_second_and_name_the_heaviest_sources() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(1, 1, 16);
        assert_eq!(limiter.take_report(base), None);
        for (source, count) in [(1, 3), (2, 6), (3, 2), (4, 5)] {
            // One datagram passes; the rest are refused.
            assert_eq!(allowed(&mut limiter, ip(source), count + 1, base), 1);
        }
        let report = limiter.take_report(base);
        let expected = RateReport {
            refused: 16,
            shared: 0,
            top: vec![(ip(2), 6), (ip(4), 5), (ip(1), 3)],
        };
        assert_eq!(report.as_ref(), Some(&expected));
        expect_test::expect!["rate limit: refused 16 datagrams; most from 192.0.2.2 (6), 192.0.2.4 (5), 192.0.2.1 (3); if they are real clients, raise --rate-limit (0 turns it off)"]
            .assert_eq(&expected.to_string());
        // Nothing refused since: no report.
        assert_eq!(limiter.take_report(base + ms(100)), None);
        assert_eq!(allowed(&mut limiter, ip(3), 3, base + ms(100)), 0);
        assert_eq!(limiter.take_report(base + ms(999)), None);
        let next = limiter.take_report(base + ms(1_000));
        assert_eq!(
            next,
            Some(RateReport {
                refused: 3,
                shared: 0,
                top: vec![(ip(3), 3)]
            })
        );
        assert_eq!(limiter.take_report(base + ms(1_500)), None);
    }

    #[test]
    fn reports_count_the_shared_bucket() {
        let base = Instant::now();
        let mut limiter = RateLimiter::new(1, 1, 1);
        assert_eq!(allowed(&mut limiter, ip(1), 2, base), 1);
        assert_eq!(allowed(&mut limiter, ip(2), 3, base), 1);
        let report = limiter.take_report(base);
        let Some(report) = report else {
            panic!("refusals were made, so a report is due");
        };
        assert_eq!((report.refused, report.shared), (3, 2));
        assert_eq!(report.top, vec![(ip(1), 1)]);
        expect_test::expect!["rate limit: refused 3 datagrams (2 from sources beyond the table, sharing one bucket); most from 192.0.2.1 (1); if they are real clients, raise --rate-limit (0 turns it off)"]
            .assert_eq(&report.to_string());
    }

    proptest! {
        #[test]
        fn no_source_gets_more_than_its_burst_plus_the_rate(
            steps in proptest::collection::vec((0..5_u8, 0..300_u64), 1..400),
            max_sources in 0..7_usize,
        ) {
            // 20 a second: one token every 50 ms exactly.
            const RATE: u64 = 20;
            const BURST: u64 = 4;
            let mut limiter = RateLimiter::new(RATE as u32, BURST as u32, max_sources);
            let base = Instant::now();
            let mut now = base;
            let mut passed = [0_u64; 5];
            for (source, pause_ms) in steps {
                now += ms(pause_ms);
                if limiter.allow(ip(source), now) {
                    passed[usize::from(source)] += 1;
                }
                prop_assert!(limiter.sources() <= max_sources);
                let elapsed_ms = now.duration_since(base).as_millis() as u64;
                let bucket = BURST + elapsed_ms * RATE / 1000;
                let total: u64 = passed.iter().sum();
                if max_sources >= passed.len() {
                    // Every source has a bucket of its own all along.
                    for count in passed {
                        prop_assert!(count <= bucket);
                    }
                } else {
                    // Each source may have had its own bucket and the shared one.
                    prop_assert!(total <= (passed.len() as u64 + 1) * bucket);
                }
            }
        }
    }
}
