//! [`Arrivals`]: what a `--mode sink` server keeps of each source's probes, in bounded memory.
//!
//! Probes carry a sequence number ([`proto::probe`]). Per source (address and port) the sink
//! keeps the highest number seen and a bitmap of the [`WINDOW`] numbers below it, which is
//! enough to tell, for each probe:
//! - a number above the highest: the numbers skipped are **lost** (for now);
//! - a number below the highest, not yet seen: **reordered**, and one fewer lost;
//! - a number already seen: **duplicated**.
//!
//! Numbers count from the first one seen from a source (a sink started after its sender does
//! not call the probes it never heard lost). A probe more than [`WINDOW`] numbers below the
//! highest can no longer be told from a duplicate: it is taken as a late arrival (reordered,
//! one fewer lost). Datagrams that are not probes count only as datagrams and bytes.
//!
//! At most [`Arrivals::DEFAULT_SOURCES`] sources are tracked, the first ones heard; datagrams
//! from others still count in the totals, and a report query from one gets zeros.

use foldhash::fast::RandomState as FastState;
use std::collections::HashMap;
use std::net::SocketAddr;

use proto::probe::SinkReport;

/// How many numbers below the highest each source's bitmap covers.
pub const WINDOW: u64 = 128;

/// One source's probes.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    report: SinkReport,
    /// The first number seen and the highest, once a probe has arrived.
    first: Option<u64>,
    highest: u64,
    /// Bit `i` set: number `highest - i` has arrived.
    seen: u128,
}

/// Per-source sink reports and their totals.
#[derive(Debug)]
pub struct Arrivals {
    sources: HashMap<SocketAddr, Track, FastState>,
    cap: usize,
    total: SinkReport,
}

impl Arrivals {
    /// Sources tracked by default: 4,096, about 0.5 MiB at most (a hash-table slot of 104
    /// bytes, twice over at the table's lowest load).
    pub const DEFAULT_SOURCES: usize = 4_096;

    /// Tracks at most `cap` sources.
    pub fn new(cap: usize) -> Arrivals {
        Arrivals {
            sources: HashMap::default(),
            cap,
            total: SinkReport::default(),
        }
    }

    /// Notes a datagram of `len` bytes from `peer`, a probe numbered `seq` if it is one.
    pub fn record(&mut self, peer: SocketAddr, len: usize, seq: Option<u64>) {
        let before = self.sources.get(&peer).copied();
        let full = self.sources.len() >= self.cap;
        let track = match self.sources.get_mut(&peer) {
            Some(track) => track,
            None if full => {
                self.total.datagrams += 1;
                self.total.bytes += len as u64;
                return;
            }
            None => self.sources.entry(peer).or_default(),
        };
        track.report.datagrams += 1;
        track.report.bytes += len as u64;
        if let Some(seq) = seq {
            track.probe(seq);
        }
        let after = track.report;
        let before = before.map(|track| track.report).unwrap_or_default();
        // Lost may go down (a late arrival), so the totals move by the difference.
        self.total.datagrams += 1;
        self.total.bytes += len as u64;
        self.total.lost = (self.total.lost + after.lost).saturating_sub(before.lost);
        self.total.reordered += after.reordered - before.reordered;
        self.total.duplicated += after.duplicated - before.duplicated;
    }

    /// What arrived from `peer` (zeros for a source not tracked).
    pub fn report(&self, peer: SocketAddr) -> SinkReport {
        self.sources
            .get(&peer)
            .map(|track| track.report)
            .unwrap_or_default()
    }

    /// What arrived from every source.
    pub fn total(&self) -> SinkReport {
        self.total
    }
}

impl Track {
    fn probe(&mut self, seq: u64) {
        let report = &mut self.report;
        let Some(first) = self.first else {
            self.first = Some(seq);
            self.highest = seq;
            self.seen = 1;
            return;
        };
        if seq > self.highest {
            let ahead = seq - self.highest;
            report.lost += ahead - 1;
            self.seen = if ahead >= 128 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.highest = seq;
            return;
        }
        let behind = self.highest - seq;
        if seq < first {
            // Before the first number heard: never counted lost.
            report.reordered += 1;
        } else if behind >= WINDOW {
            report.reordered += 1;
            report.lost = report.lost.saturating_sub(1);
        } else if self.seen & (1 << behind) != 0 {
            report.duplicated += 1;
        } else {
            self.seen |= 1 << behind;
            report.reordered += 1;
            report.lost = report.lost.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn after(seqs: &[u64]) -> SinkReport {
        let mut arrivals = Arrivals::new(4);
        for &seq in seqs {
            arrivals.record(peer(40_000), 14, Some(seq));
        }
        assert_eq!(arrivals.total(), arrivals.report(peer(40_000)));
        arrivals.report(peer(40_000))
    }

    fn report(datagrams: u64, lost: u64, reordered: u64, duplicated: u64) -> SinkReport {
        SinkReport {
            datagrams,
            bytes: 14 * datagrams,
            lost,
            reordered,
            duplicated,
        }
    }

    #[test]
    fn gaps_swaps_and_copies_are_told_apart() {
        assert_eq!(after(&[1, 2, 3]), report(3, 0, 0, 0));
        assert_eq!(after(&[1, 2, 5]), report(3, 2, 0, 0));
        assert_eq!(after(&[1, 3, 2, 4]), report(4, 0, 1, 0));
        assert_eq!(after(&[1, 2, 2, 3, 1]), report(5, 0, 0, 2));
        assert_eq!(
            after(&[5, 6, 4]),
            report(3, 0, 1, 0),
            "before the first: not lost"
        );
        assert_eq!(
            after(&[1, 300, 2]),
            report(3, 297, 1, 0),
            "beyond the window: late"
        );
    }

    #[test]
    fn sources_are_separate_and_capped() {
        let mut arrivals = Arrivals::new(1);
        arrivals.record(peer(1), 14, Some(1));
        arrivals.record(peer(1), 14, Some(3));
        arrivals.record(peer(2), 10, Some(1));
        arrivals.record(peer(1), 5, None);
        assert_eq!(
            arrivals.report(peer(1)),
            SinkReport {
                datagrams: 3,
                bytes: 33,
                lost: 1,
                reordered: 0,
                duplicated: 0
            }
        );
        assert_eq!(
            arrivals.report(peer(2)),
            SinkReport::default(),
            "not tracked"
        );
        assert_eq!(
            (arrivals.total().datagrams, arrivals.total().bytes),
            (4, 43)
        );
    }
}
