//! `cargo xtask demo --pcap FILE`: the captures both programs wrote (`--pcap`) in every part,
//! merged into one pcap file in time order, as a capture on the loopback interface would show
//! the demo.
//!
//! Both programs record a datagram that went between them: the sender when it sent it, the
//! receiver when it got it. A capture on the wire holds it once, so the two records are paired
//! (same source, destination and length, within [`PAIR_WINDOW`], each record paired at most
//! once, so a datagram really sent twice stays twice) and one is kept: the one with more of the
//! payload (a receiver with a small `--buffer` records the datagram cut), else the earlier.
//! Datagrams from or to a peer outside the programs (the demo's own sockets, the lossy proxy)
//! are recorded by one program only and are kept as they are.

use std::time::Duration;

use proto::capture::{Captured, Pcap, read_capture};

/// How far apart two programs' records of one datagram may be.
const PAIR_WINDOW: Duration = Duration::from_secs(1);

/// Merges the captures `files` (each the bytes of one program's pcap file) into one pcap
/// file's bytes. A file that is not a capture is an error naming its index.
pub fn merge(files: &[Vec<u8>]) -> Result<(Vec<u8>, usize), String> {
    let mut all: Vec<(usize, Captured)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let records =
            read_capture(file).map_err(|e| format!("capture {} of the demo: {e}", index + 1))?;
        all.extend(records.into_iter().map(|r| (index, r)));
    }
    all.sort_by_key(|(_, r)| r.at);
    let mut kept: Vec<(usize, Captured, bool)> = Vec::new();
    for (source, record) in all {
        let pair = kept.iter().position(|(from, other, paired)| {
            !paired
                && *from != source
                && other.src == record.src
                && other.dst == record.dst
                && other.len == record.len
                && record.at.saturating_sub(other.at) <= PAIR_WINDOW
        });
        match pair {
            Some(i) => {
                let (_, other, paired) = &mut kept[i];
                *paired = true;
                if record.payload.len() > other.payload.len() {
                    other.payload = record.payload;
                }
            }
            None => kept.push((source, record, false)),
        }
    }
    let mut out = Vec::new();
    Pcap::file_header(&mut out);
    let mut pcap = Pcap::new();
    for (_, record, _) in &kept {
        pcap.record(
            record.at,
            record.src,
            record.dst,
            &record.payload,
            record.len,
            &mut out,
        );
    }
    Ok((out, kept.len()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn capture(records: &[(u64, SocketAddr, SocketAddr, &[u8], usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        Pcap::file_header(&mut out);
        let mut pcap = Pcap::new();
        for (ms, src, dst, payload, len) in records {
            pcap.record(
                Duration::from_millis(1_700_000_000_000 + ms),
                *src,
                *dst,
                payload,
                *len,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn one_datagram_seen_by_both_programs_is_kept_once_whole_and_in_time_order()
    -> Result<(), String> {
        let client: SocketAddr = ([127, 0, 0, 1], 5000).into();
        let server: SocketAddr = ([127, 0, 0, 1], 4000).into();
        let stranger: SocketAddr = ([127, 0, 0, 1], 6000).into();
        let long = b"This message is longer than sixteen bytes.";
        let client_file = capture(&[
            (0, client, server, long, long.len()),
            (5, server, client, b"This message is ", 16),
            // Really sent twice: both stay.
            (7, client, server, b"again", 5),
            (8, client, server, b"again", 5),
        ]);
        let server_file = capture(&[
            (1, client, server, &long[..16], long.len()),
            (3, server, client, b"This message is ", 16),
            (4, stranger, server, b"raw", 3),
            (7, client, server, b"again", 5),
            (8, client, server, b"again", 5),
        ]);
        let (merged, count) = merge(&[client_file, server_file])?;
        let records = read_capture(&merged)?;
        assert_eq!(count, records.len());
        let shown: Vec<(u16, Vec<u8>)> = records
            .iter()
            .map(|r| (r.src.port(), r.payload.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (5000, long.to_vec()),
                (4000, b"This message is ".to_vec()),
                (6000, b"raw".to_vec()),
                (5000, b"again".to_vec()),
                (5000, b"again".to_vec()),
            ]
        );
        assert!(records.iter().all(|r| r.valid));
        assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
        Ok(())
    }

    #[test]
    fn a_file_that_is_not_a_capture_is_named() {
        let result = merge(&[b"not a pcap".to_vec()]);
        assert!(result.is_err_and(|e| e.contains("capture 1")));
    }
}
