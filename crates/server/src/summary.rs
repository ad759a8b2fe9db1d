//! [`Summary`]: the server's books, printed at exit.

use std::fmt;

use proto::probe::SinkReport;

/// How many distinct peers are counted exactly; past this the summary shows `≥65,536`, so
/// that a flood of spoofed sources cannot grow the tally's memory (about 3 MiB at the cap).
pub const PEER_TALLY_CAP: usize = 65_536;

/// What the server saw. The books always balance:
/// `received = counted + duplicates + malformed + rate_limited + busy + loops + group_ignored`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams received.
    pub received: u64,
    /// Accesses counted and answered: plain datagrams, and envelope requests seen for the first
    /// time. In sink mode, every datagram that passed the rate limit and the loop rule, report
    /// queries included (a sink answers only those).
    pub counted: u64,
    /// Envelope requests seen before (a resend, or a copy the network made): answered from the
    /// reply cache, or, when their sender has moved past them, recognised as done; never
    /// counted again.
    pub duplicates: u64,
    /// Envelope attempts refused (answered with an error envelope) or ignored (replies and
    /// errors sent to the server, which are never answered, so two servers cannot ping-pong).
    pub malformed: u64,
    /// Datagrams dropped unanswered because their source was over `--rate-limit`.
    pub rate_limited: u64,
    /// Envelope requests answered `busy` because the reply cache was full of live entries.
    pub busy: u64,
    /// Datagrams not answered because answering could start a loop: a server's answer, a
    /// well-known source port, or an echo of our last answer (docs/PROTOCOL.md, "Loops").
    pub loops: u64,
    /// Datagrams sent to a broadcast or multicast address, not answered (neither
    /// `--answer-group` nor `--join` asked for them): answering every such datagram would let
    /// one datagram draw an answer from every server on the link.
    pub group_ignored: u64,
    /// Counted datagrams longer than `--buffer`, cut and reported.
    pub truncated: u64,
    /// Distinct peers (address and port), exact up to [`PEER_TALLY_CAP`].
    pub peers: u64,
    /// Output lines dropped because stdout or stderr did not keep up (a blocked pipe, a paused
    /// terminal): serving never waits for output.
    pub lines_dropped: u64,
    /// Answers not sent because they would have broken a source's anti-amplification budget.
    pub amplification_dropped: u64,
    /// Answers the system would not send.
    pub send_failures: u64,
    /// Datagrams the kernel dropped before the server could receive them, its receive buffer
    /// being full (`SO_RXQ_OVFL`, Linux). Not part of `received`: these never were.
    pub kernel_dropped: u64,
    /// In sink mode, what arrived from every source (report queries left out): datagrams,
    /// bytes, and the probes lost, reordered and duplicated.
    pub sink: Option<SinkReport>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, counted {}, duplicates {}, malformed {}, rate-limited {}, busy {}, \
             loops {}, ",
            self.received,
            self.counted,
            self.duplicates,
            self.malformed,
            self.rate_limited,
            self.busy,
            self.loops,
        )?;
        // Shown only when it happened, so that the summary of a server that never saw a
        // broadcast reads as before; it belongs to the identity, so it stands by `loops`.
        if self.group_ignored > 0 {
            write!(f, "group-ignored {}, ", self.group_ignored)?;
        }
        write!(f, "truncated {}, peers ", self.truncated)?;
        if self.peers >= PEER_TALLY_CAP as u64 {
            write!(f, "≥65,536")?;
        } else {
            write!(f, "{}", self.peers)?;
        }
        for (name, value) in [
            ("lines dropped", self.lines_dropped),
            ("amplification-dropped", self.amplification_dropped),
            ("send failures", self.send_failures),
        ] {
            if value > 0 {
                write!(f, ", {name} {value}")?;
            }
        }
        if self.kernel_dropped > 0 {
            write!(
                f,
                ", dropped by the kernel {} (receive buffer full)",
                self.kernel_dropped
            )?;
        }
        if let Some(sink) = &self.sink {
            write!(f, ", sink: {sink}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_tally_saturates_in_the_summary() {
        let mut summary = Summary {
            peers: 65_535,
            ..Summary::default()
        };
        assert!(summary.to_string().ends_with("peers 65535"));
        summary.peers = PEER_TALLY_CAP as u64;
        assert!(summary.to_string().ends_with("peers ≥65,536"));
    }

    #[test]
    fn rare_figures_show_only_when_they_happened() {
        let summary = Summary {
            received: 3,
            counted: 1,
            loops: 2,
            peers: 1,
            lines_dropped: 7,
            ..Summary::default()
        };
        expect_test::expect!["received 3, counted 1, duplicates 0, malformed 0, rate-limited 0, busy 0, loops 2, truncated 0, peers 1, lines dropped 7"]
            .assert_eq(&summary.to_string());
    }

    #[test]
    fn group_ignored_stands_in_the_identity_and_kernel_drops_outside_it() {
        let summary = Summary {
            received: 5,
            counted: 2,
            group_ignored: 3,
            peers: 2,
            kernel_dropped: 40,
            ..Summary::default()
        };
        expect_test::expect!["received 5, counted 2, duplicates 0, malformed 0, rate-limited 0, busy 0, loops 0, group-ignored 3, truncated 0, peers 2, dropped by the kernel 40 (receive buffer full)"]
            .assert_eq(&summary.to_string());
    }
}
