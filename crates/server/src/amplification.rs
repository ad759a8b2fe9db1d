//! [`AmplificationBudget`]: the server never sends a source more than three times the bytes it
//! received from it, QUIC's anti-amplification rule (RFC 9000 §8.1).

use foldhash::fast::RandomState as FastState;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::timeline::Timeline;

/// How many times the bytes received from a source the server may send it (RFC 9000 §8.1).
pub const AMPLIFICATION_FACTOR: u64 = 3;

/// Bytes of headers around an IPv4 UDP payload: 20 (IPv4 header without options) + 8 (UDP).
const IPV4_OVERHEAD: u64 = 28;

/// Bytes of headers around an IPv6 UDP payload: 40 (IPv6 header) + 8 (UDP).
const IPV6_OVERHEAD: u64 = 48;

/// Requests remembered from sources that did not fit in the table, awaiting their one reply:
/// enough for a batch of datagrams received before any is answered.
const PENDING: usize = 64;

/// The bytes a UDP datagram with `payload` bytes takes on the wire to or from `ip`. An
/// IPv4-mapped IPv6 address travels as IPv4.
pub fn wire_len(ip: IpAddr, payload: usize) -> u64 {
    let overhead = match ip.to_canonical() {
        IpAddr::V4(_) => IPV4_OVERHEAD,
        IpAddr::V6(_) => IPV6_OVERHEAD,
    };
    u64::try_from(payload)
        .unwrap_or(u64::MAX)
        .saturating_add(overhead)
}

/// Bytes received from and sent to each source, so that what a source is sent stays within
/// three times what it sent.
///
/// A UDP source address can be forged. Without this rule, an attacker could send small requests
/// in a victim's name and have the server send the victim larger answers (an echo of a short
/// body is short, but an error envelope quoting a one-byte datagram is not). Bytes are counted
/// on the wire, headers included ([`wire_len`]), so a flood of empty datagrams earns no more than
/// it costs. The rule is meant for sources outside loopback: the caller decides which ones it
/// applies to.
///
/// Each source in the table has the bytes received from it and sent to it. The table holds at
/// most `max_sources` sources, and one silent for `idle` is dropped (its unspent budget with it,
/// which can only lower what is sent). Dropping is amortised O(1): a timeline holds the
/// sources in the order they were last heard from, so the silent ones are at its front. A
/// source that does not fit in the table is judged datagram by datagram: a reply may spend what
/// one request just received from it earned, and nothing more. Either way, what each source is
/// sent never exceeds three times what it sent, summed over any stretch of time.
#[derive(Debug)]
pub struct AmplificationBudget {
    max_sources: usize,
    idle: Duration,
    sources: HashMap<IpAddr, Source, FastState>,
    /// Sources in the order last heard from; an item is live while its time is the source's
    /// `last_heard`.
    heard: Timeline<Heard>,
    /// Requests from sources that did not fit in the table, oldest first, at most [`PENDING`].
    pending: VecDeque<Pending>,
}

/// What one source sent and was sent, in wire bytes.
#[derive(Debug)]
struct Source {
    received: u64,
    sent: u64,
    last_heard: Instant,
}

/// A timeline item: `source` was heard from at `at`.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    source: IpAddr,
}

/// A request from a source that did not fit in the table: it pays for one reply.
#[derive(Debug, Clone, Copy)]
struct Pending {
    source: IpAddr,
    wire: u64,
}

impl Default for AmplificationBudget {
    /// [`DEFAULT_SOURCES`](AmplificationBudget::DEFAULT_SOURCES) sources, each forgotten after
    /// [`DEFAULT_IDLE`](AmplificationBudget::DEFAULT_IDLE).
    fn default() -> AmplificationBudget {
        AmplificationBudget::new(
            AmplificationBudget::DEFAULT_SOURCES,
            AmplificationBudget::DEFAULT_IDLE,
        )
    }
}

impl AmplificationBudget {
    /// Sources the [default](AmplificationBudget::default) budget remembers: far more than the
    /// clients a server answers at once, while a full table takes under 1 MiB (about 160 bytes
    /// a source: its hash-table slot, twice over at the table's lowest load, and its timeline
    /// item).
    pub const DEFAULT_SOURCES: usize = 4_096;

    /// How long a source may be silent before the [default](AmplificationBudget::default)
    /// budget forgets it: twice [`proto::RETRY_WINDOW`], so a client that is still resending is
    /// never forgotten.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

    /// A budget that remembers at most `max_sources` sources, each until it has been silent for
    /// `idle`.
    pub fn new(max_sources: usize, idle: Duration) -> AmplificationBudget {
        AmplificationBudget {
            max_sources,
            idle,
            sources: HashMap::default(),
            heard: Timeline::new(max_sources),
            pending: VecDeque::new(),
        }
    }

    /// Credits `source` with a datagram of `payload_len` bytes received from it.
    pub fn on_receive(&mut self, source: IpAddr, payload_len: usize, now: Instant) {
        self.reclaim(now);
        let source = source.to_canonical();
        let wire = wire_len(source, payload_len);
        let full = self.sources.len() >= self.max_sources;
        match self.sources.entry(source) {
            Entry::Occupied(occupied) => {
                let known = occupied.into_mut();
                known.received = known.received.saturating_add(wire);
                if known.last_heard == now {
                    return;
                }
                known.last_heard = now;
            }
            Entry::Vacant(_) if full => {
                if self.pending.len() >= PENDING {
                    self.pending.pop_front();
                }
                self.pending.push_back(Pending { source, wire });
                return;
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Source {
                    received: wire,
                    sent: 0,
                    last_heard: now,
                });
            }
        }
        let sources = &self.sources;
        self.heard
            .push(Heard { at: now, source }, sources.len(), |item| {
                is_live_heard(sources, item)
            });
    }

    /// Whether a reply of `payload_len` bytes may be sent to `source` now. If so, it is charged
    /// to the source's budget; if not, the reply must be dropped.
    #[must_use]
    pub fn try_send(&mut self, source: IpAddr, payload_len: usize, now: Instant) -> bool {
        self.reclaim(now);
        let source = source.to_canonical();
        let wire = wire_len(source, payload_len);
        if let Some(known) = self.sources.get_mut(&source) {
            let sent = known.sent.saturating_add(wire);
            if sent <= known.received.saturating_mul(AMPLIFICATION_FACTOR) {
                known.sent = sent;
                return true;
            }
        }
        // A request received while the source did not fit in the table pays for one reply
        // of up to three times its size: the latest such request, spent once.
        let latest = self.pending.iter().rposition(|p| p.source == source);
        match latest {
            Some(index)
                if self
                    .pending
                    .get(index)
                    .is_some_and(|p| wire <= p.wire.saturating_mul(AMPLIFICATION_FACTOR)) =>
            {
                self.pending.remove(index);
                true
            }
            _ => false,
        }
    }

    /// The number of sources in the table.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Drops the sources silent for `idle`, least recently heard first.
    fn reclaim(&mut self, now: Instant) {
        loop {
            let sources = &self.sources;
            let Some(item) = self.heard.oldest(|item| is_live_heard(sources, item)) else {
                break;
            };
            if now.saturating_duration_since(item.at) < self.idle {
                break;
            }
            self.sources.remove(&item.source);
            self.heard.pop();
        }
    }
}

/// Whether `item` is the timeline item of a source's latest datagram.
fn is_live_heard(sources: &HashMap<IpAddr, Source, FastState>, item: &Heard) -> bool {
    sources
        .get(&item.source)
        .is_some_and(|source| source.last_heard == item.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, last])
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn wire_lengths_count_the_headers() {
        assert_eq!(wire_len(v4(1), 0), 28);
        assert_eq!(wire_len(v4(1), 100), 128);
        assert_eq!(wire_len(v6(1), 100), 148);
        let mapped = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(wire_len(mapped, 100), 128);
        assert_eq!(wire_len(IpAddr::from(Ipv6Addr::LOCALHOST), 0), 48);
    }

    #[test]
    fn a_source_is_sent_at_most_three_times_what_it_sent() {
        let base = Instant::now();
        let mut budget = AmplificationBudget::default();
        // 10 bytes of payload are 38 on the wire: 114 may be sent, 86 of payload.
        budget.on_receive(v4(1), 10, base);
        assert!(!budget.try_send(v4(1), 87, base));
        assert!(budget.try_send(v4(1), 86, base));
        assert!(!budget.try_send(v4(1), 0, base));
        // The next request earns more.
        budget.on_receive(v4(1), 10, base);
        assert!(budget.try_send(v4(1), 50, base));
        assert!(!budget.try_send(v4(1), 50, base));
        // Another source has earned nothing.
        assert!(!budget.try_send(v4(2), 0, base));
    }

    #[test]
    fn ipv6_headers_count_too() {
        let base = Instant::now();
        let mut budget = AmplificationBudget::default();
        // 2 bytes are 50 on the wire: 150 may be sent, 102 of payload.
        budget.on_receive(v6(1), 2, base);
        assert!(!budget.try_send(v6(1), 103, base));
        assert!(budget.try_send(v6(1), 102, base));
    }

    #[test]
    fn a_source_silent_for_the_idle_time_is_forgotten() {
        let base = Instant::now();
        let mut budget = AmplificationBudget::new(8, secs(60));
        budget.on_receive(v4(1), 100, base);
        budget.on_receive(v4(2), 100, base + secs(30));
        assert_eq!(budget.sources(), 2);
        assert!(budget.try_send(v4(1), 10, base + secs(59)));
        // Sending does not keep a source: only hearing from it does.
        assert!(!budget.try_send(v4(1), 10, base + secs(60)));
        assert_eq!(budget.sources(), 1);
        budget.on_receive(v4(3), 0, base + secs(90));
        assert_eq!(budget.sources(), 1);
    }

    #[test]
    fn a_source_beyond_the_table_is_judged_per_request() {
        let base = Instant::now();
        let mut budget = AmplificationBudget::new(1, secs(60));
        budget.on_receive(v4(1), 100, base);
        budget.on_receive(v4(2), 10, base);
        assert_eq!(budget.sources(), 1);
        // 38 bytes on the wire earn one reply of up to 114 (86 of payload), once.
        assert!(!budget.try_send(v4(2), 87, base));
        assert!(budget.try_send(v4(2), 86, base));
        assert!(!budget.try_send(v4(2), 0, base));
        // Each request pays for its own reply, even when a batch arrives before the replies.
        for _ in 0..3 {
            budget.on_receive(v4(2), 10, base);
        }
        let replies = (0..5).filter(|_| budget.try_send(v4(2), 86, base)).count();
        assert_eq!(replies, 3);
        // The source in the table is unaffected.
        assert!(budget.try_send(v4(1), 300, base));
    }

    #[test]
    fn the_table_stays_within_its_bound() {
        let base = Instant::now();
        let mut budget = AmplificationBudget::new(16, secs(60));
        for n in 0..=255 {
            budget.on_receive(v4(n), 10, base + Duration::from_millis(u64::from(n)));
            assert!(budget.sources() <= 16);
        }
        assert!(budget.heard.len() <= 16 + 16 / 8 + 65);
        assert!(budget.pending.len() <= PENDING);
    }

    proptest! {
        #[test]
        fn no_source_is_ever_sent_more_than_three_times_what_it_sent(
            ops in proptest::collection::vec(
                (any::<bool>(), 0..5_usize, 0..1_500_usize, prop_oneof![
                    6 => Just(0_u64), 3 => 1..10_000_u64, 1 => 50_000..70_000_u64,
                ]),
                1..300,
            ),
            max_sources in 0..4_usize,
        ) {
            // Two IPv4 sources, the first also seen as IPv4-mapped IPv6, and two IPv6 ones.
            let mapped = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
            let sources = [v4(1), v4(2), mapped, v6(1), v6(2)];
            let mut budget = AmplificationBudget::new(max_sources, secs(60));
            let mut received: HashMap<IpAddr, u64> = HashMap::new();
            let mut sent: HashMap<IpAddr, u64> = HashMap::new();
            let mut now = Instant::now();
            for (receive, source, len, pause_ms) in ops {
                now += Duration::from_millis(pause_ms);
                let source = sources[source];
                let key = source.to_canonical();
                if receive {
                    budget.on_receive(source, len, now);
                    *received.entry(key).or_default() += wire_len(source, len);
                } else if budget.try_send(source, len, now) {
                    *sent.entry(key).or_default() += wire_len(source, len);
                }
                prop_assert!(budget.sources() <= max_sources);
                for (key, sent) in &sent {
                    let received = received.get(key).copied().unwrap_or(0);
                    prop_assert!(*sent <= 3 * received, "{key}: sent {sent}, received {received}");
                }
            }
        }
    }
}
