//! Probes: the payloads `ping` and `bench` send, each carrying its sequence number, and the sink
//! report a `--mode sink` server gives the sender that asks for it.
//!
//! A probe is plain text, so that every server can take it, the tutorial's included:
//!
//! ```text
//! seq 1.........        (14 bytes: the tutorial's `Hello Server!!` is 14 bytes too)
//! seq 4294967296        (the number grows into the padding)
//! ```
//!
//! `seq `, the number in decimal, then `.` up to the size asked for. An echo server sends it
//! back, so the reply says which request it answers; a sink reads the numbers to tell loss and
//! reordering. In a JSON envelope the probe is the request's body.
//!
//! A sink answers nothing but [`SINK_REPORT_QUERY`]: to that it answers, to the asker's address
//! only, what arrived from that address ([`SinkReport`]), so that an open-loop sender learns the
//! receiver's own count.

use std::fmt;
use std::io::Write as _;

/// What every probe starts with.
pub const PROBE_TAG: &[u8] = b"seq ";

/// The byte that pads a probe to its size.
pub const PROBE_PAD: u8 = b'.';

/// The smallest probe size that holds every sequence number below 10^10 (`seq ` and ten
/// digits): 14 bytes, the length of the tutorial's `Hello Server!!`.
pub const MIN_PROBE_SIZE: usize = PROBE_TAG.len() + 10;

/// The plain datagram that asks a sink for its [`SinkReport`] on the asker.
pub const SINK_REPORT_QUERY: &[u8] = b"udptalk sink report?";

/// What a sink's report starts with.
pub const SINK_REPORT_PREFIX: &str = "udptalk sink report: ";

/// Writes probe `seq`, padded with [`PROBE_PAD`] to `size` bytes, into `out` (cleared first).
/// A probe is never shorter than its number needs: with `size` below that, it is as long as
/// the number needs (below 10^10, [`MIN_PROBE_SIZE`] always suffices).
pub fn write_probe(seq: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(PROBE_TAG);
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(seq).as_bytes());
    if out.len() < size {
        out.resize(size, PROBE_PAD);
    }
}

/// The sequence number of a probe, or `None` if `payload` is not one. A probe's body in an
/// envelope is read the same way.
pub fn probe_seq(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(PROBE_TAG)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || rest[digits..].iter().any(|&b| b != PROBE_PAD) {
        return None;
    }
    // At most 20 ASCII digits: UTF-8, and a u64 unless it overflows (then not a probe).
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// What a sink received from one sender, as it reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Datagrams received (probes or not).
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Probes missing: numbers below the highest seen that never arrived.
    pub lost: u64,
    /// Probes that arrived after a higher number had.
    pub reordered: u64,
    /// Probes whose number had already arrived.
    pub duplicated: u64,
}

impl SinkReport {
    /// Writes the report's datagram into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{SINK_REPORT_PREFIX}{self}");
    }

    /// Reads a report's datagram, or `None` if `datagram` is not one.
    pub fn decode(datagram: &[u8]) -> Option<SinkReport> {
        let text = std::str::from_utf8(datagram).ok()?;
        let rest = text.strip_prefix(SINK_REPORT_PREFIX)?;
        let mut report = SinkReport::default();
        let mut seen = 0;
        for part in rest.split(", ") {
            let (name, value) = part.split_once(' ')?;
            let value: u64 = value.parse().ok()?;
            let field = match name {
                "datagrams" => &mut report.datagrams,
                "bytes" => &mut report.bytes,
                "lost" => &mut report.lost,
                "reordered" => &mut report.reordered,
                "duplicated" => &mut report.duplicated,
                _ => return None,
            };
            *field = value;
            seen += 1;
        }
        (seen == 5).then_some(report)
    }
}

impl fmt::Display for SinkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagrams {}, bytes {}, lost {}, reordered {}, duplicated {}",
            self.datagrams, self.bytes, self.lost, self.reordered, self.duplicated
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_carry_their_number_at_any_size() {
        let mut out = Vec::new();
        write_probe(1, MIN_PROBE_SIZE, &mut out);
        assert_eq!(out, b"seq 1.........");
        assert_eq!(probe_seq(&out), Some(1));
        write_probe(9_999_999_999, MIN_PROBE_SIZE, &mut out);
        assert_eq!(out.len(), MIN_PROBE_SIZE);
        assert_eq!(probe_seq(&out), Some(9_999_999_999));
        write_probe(u64::MAX, 3, &mut out);
        assert_eq!(probe_seq(&out), Some(u64::MAX));
        write_probe(7, 16 << 10, &mut out);
        assert_eq!((out.len(), probe_seq(&out)), (16 << 10, Some(7)));
    }

    #[test]
    fn other_payloads_are_not_probes() {
        for payload in [
            &b"Hello Server!!"[..],
            b"seq ",
            b"seq .",
            b"seq 1x",
            b"seq 99999999999999999999",
            b"seq -1",
            b"Seq 1",
        ] {
            assert_eq!(probe_seq(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn sink_reports_read_back() {
        let report = SinkReport {
            datagrams: 10,
            bytes: 140,
            lost: 2,
            reordered: 1,
            duplicated: 3,
        };
        let mut out = Vec::new();
        report.encode(&mut out);
        assert_eq!(
            out,
            b"udptalk sink report: datagrams 10, bytes 140, lost 2, reordered 1, duplicated 3"
        );
        assert_eq!(SinkReport::decode(&out), Some(report));
        assert_eq!(SinkReport::decode(b"udptalk sink report: datagrams 1"), None);
        assert_eq!(SinkReport::decode(SINK_REPORT_QUERY), None);
    }
}
