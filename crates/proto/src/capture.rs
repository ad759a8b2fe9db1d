//! What `--pcap` and `--hexdump` show of a datagram: a capture record, or a hex dump.
//!
//! A capture is a classic pcap file (not pcapng) with LINKTYPE_RAW (101) frames: each datagram
//! as the IPv4 or IPv6 packet that carried it, its headers made up here (the programs never see
//! them) with the real addresses and ports, valid lengths and checksums (the IPv4 header
//! checksum; the UDP checksum over the pseudo-header, which IPv6 requires), and the payload
//! whole. Wireshark and `tshark -r` read it as if it had been captured on the wire, without
//! root or libpcap. The file format is pcap-file's and the headers are etherparse's.
//!
//! Like the rest of proto this does no I/O: [`Pcap`] writes the file's header and its records
//! into the caller's buffer, with the timestamp the caller read; each program decides where the
//! bytes go (the client to a buffered file, the server through a bounded queue to a writer
//! thread). [`hexdump`] writes a datagram's lines for a terminal. [`read_capture`] reads a
//! capture back from its bytes, checking every length and checksum (the programs' tests use it).
//!
//! Nothing here panics, whatever the addresses, the payload or its length.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use byteorder_slice::LittleEndian;
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, UdpHeader};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapParser};
use pcap_file::{DataLink, Endianness, TsResolution};

/// The capture's snapshot length: 262,144 bytes, tcpdump's default. It must hold the longest
/// frame whole: an IPv6 packet of 40 + 65,535 bytes is longer than the 65,535 of older tools.
pub const SNAPLEN: u32 = 262_144;

/// Hop limit (IPv4 TTL) of the made-up headers: 64, Linux's default for what it sends.
pub const HOP_LIMIT: u8 = 64;

/// Bytes of the IPv4 (20, no options) and UDP (8) headers in front of a payload.
pub const V4_HEADERS: usize = Ipv4Header::MIN_LEN + UdpHeader::LEN;

/// Bytes of the IPv6 (40) and UDP (8) headers in front of a payload.
pub const V6_HEADERS: usize = Ipv6Header::LEN + UdpHeader::LEN;

/// Writes a capture file's records: the file header once, then one record per datagram.
#[derive(Debug, Default)]
pub struct Pcap {
    /// One frame (headers and payload), reused from record to record.
    frame: Vec<u8>,
}

impl Pcap {
    /// A writer of records.
    pub fn new() -> Pcap {
        Pcap::default()
    }

    /// Appends the file's header to `out`: pcap 2.4, microsecond timestamps, little-endian,
    /// [`SNAPLEN`], LINKTYPE_RAW (an IPv4 or IPv6 packet, told apart by its first byte).
    pub fn file_header(out: &mut Vec<u8>) {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        // Writing into a Vec cannot fail.
        let _ = header.write_to(out);
    }

    /// Appends to `out` the record of a datagram that went from `src` to `dst` at `at` (since
    /// the Unix epoch): `payload` is what was kept of it and `len` its real length, more than
    /// `payload.len()` when the receiver cut it (then the record says so, as a capture cut by
    /// its snapshot length does, and the UDP checksum, which needs every byte, is 0).
    pub fn record(
        &mut self,
        at: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        len: usize,
        out: &mut Vec<u8>,
    ) {
        self.frame.clear();
        let orig_len = frame(src, dst, payload, len, &mut self.frame);
        // pcap's seconds are 32 bits: a clock past 2106 is recorded as that year.
        let at = at.min(Duration::from_secs(u64::from(u32::MAX)));
        let packet = PcapPacket::new(at, u32::try_from(orig_len).unwrap_or(u32::MAX), &self.frame);
        let start = out.len();
        // The only refusals are a frame longer than SNAPLEN or than its original length, which
        // `frame` never makes; a record is then left out whole rather than written half.
        if packet
            .write_to::<_, LittleEndian>(out, TsResolution::MicroSecond, SNAPLEN)
            .is_err()
        {
            out.truncate(start);
        }
    }
}

/// Appends to `out` the packet that carried a UDP datagram from `src` to `dst`: an IPv4 header
/// when both addresses are IPv4 (IPv4-mapped IPv6 addresses count as IPv4, as a dual-stack
/// socket reports them), else IPv6 (an IPv4 address then mapped), the UDP header and `payload`.
/// `len` is the datagram's real length (at least `payload.len()`; it is cut to the largest
/// payload the family carries). Returns the packet's real length: what a capture calls the
/// original length, more than the bytes appended when `payload` was cut.
pub fn frame(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    len: usize,
    out: &mut Vec<u8>,
) -> usize {
    let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
    match (src_ip, dst_ip) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            let len = len.max(payload.len()).min(crate::MAX_PAYLOAD_V4);
            let payload = &payload[..payload.len().min(len)];
            let mut ip = Ipv4Header {
                // At most 65,535: `len` is at most MAX_PAYLOAD_V4.
                total_len: (V4_HEADERS + len) as u16,
                time_to_live: HOP_LIMIT,
                protocol: IpNumber::UDP,
                source: source.octets(),
                destination: destination.octets(),
                // Made-up headers say nothing about fragmentation.
                dont_fragment: false,
                ..Ipv4Header::default()
            };
            ip.header_checksum = ip.calc_header_checksum();
            let mut udp = udp_header(src.port(), dst.port(), len);
            if payload.len() == len {
                udp.checksum = udp.calc_checksum_ipv4(&ip, payload).unwrap_or(0);
            }
            out.extend_from_slice(&ip.to_bytes());
            out.extend_from_slice(&udp.to_bytes());
            out.extend_from_slice(payload);
            V4_HEADERS + len
        }
        (source, destination) => {
            let len = len.max(payload.len()).min(crate::MAX_PAYLOAD_V6);
            let payload = &payload[..payload.len().min(len)];
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                // At most 65,535: `len` is at most MAX_PAYLOAD_V6.
                payload_length: (UdpHeader::LEN + len) as u16,
                next_header: IpNumber::UDP,
                hop_limit: HOP_LIMIT,
                source: v6(source).octets(),
                destination: v6(destination).octets(),
            };
            let mut udp = udp_header(src.port(), dst.port(), len);
            if payload.len() == len {
                udp.checksum = udp.calc_checksum_ipv6(&ip, payload).unwrap_or(0);
            }
            out.extend_from_slice(&ip.to_bytes());
            out.extend_from_slice(&udp.to_bytes());
            out.extend_from_slice(payload);
            V6_HEADERS + len
        }
    }
}

fn udp_header(source_port: u16, destination_port: u16, len: usize) -> UdpHeader {
    UdpHeader {
        source_port,
        destination_port,
        // At most 65,535: `len` is at most MAX_PAYLOAD_V6.
        length: (UdpHeader::LEN + len) as u16,
        checksum: 0,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A datagram read back from a capture by [`read_capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// When it was recorded, since the Unix epoch (to the microsecond).
    pub at: Duration,
    /// Its sender.
    pub src: SocketAddr,
    /// Its receiver.
    pub dst: SocketAddr,
    /// The payload, as far as it was recorded.
    pub payload: Vec<u8>,
    /// The payload's real length, as its UDP header says.
    pub len: usize,
    /// Whether the frame is consistent: the IP and UDP lengths agree with each other and with
    /// the record's original length, and the checksums (IPv4 header, UDP over the
    /// pseudo-header) are right. A datagram recorded cut cannot have its UDP checksum checked:
    /// it must then be 0.
    pub valid: bool,
}

/// Reads the datagrams of a capture file written by [`Pcap`] (a classic pcap of LINKTYPE_RAW
/// frames, each an IPv4 or IPv6 packet carrying UDP). Fails, saying why, on anything else.
pub fn read_capture(file: &[u8]) -> Result<Vec<Captured>, String> {
    let (mut rest, parser) = PcapParser::new(file).map_err(|e| format!("not a pcap file: {e}"))?;
    let header = parser.header();
    if header.datalink != DataLink::RAW {
        return Err(format!("link type {:?}, not RAW (101)", header.datalink));
    }
    let mut datagrams = Vec::new();
    while !rest.is_empty() {
        let (after, packet) = parser
            .next_packet(rest)
            .map_err(|e| format!("record {}: {e}", datagrams.len() + 1))?;
        rest = after;
        let frame = read_frame(&packet.data, packet.orig_len as usize)
            .map_err(|e| format!("record {}: {e}", datagrams.len() + 1))?;
        datagrams.push(Captured {
            at: packet.timestamp,
            ..frame
        });
    }
    Ok(datagrams)
}

fn read_frame(data: &[u8], orig_len: usize) -> Result<Captured, String> {
    let (src, dst, udp_bytes, ip_ok, total, udp) = match data.first().map(|b| b >> 4) {
        Some(4) => {
            let (ip, rest) = Ipv4Header::from_slice(data).map_err(|e| e.to_string())?;
            if ip.protocol != IpNumber::UDP {
                return Err(format!("IPv4 protocol {:?}, not UDP", ip.protocol));
            }
            let (udp, _) = UdpHeader::from_slice(rest).map_err(|e| e.to_string())?;
            let ok = ip.header_checksum == ip.calc_header_checksum()
                && usize::from(ip.total_len) == ip.header_len() + usize::from(udp.length);
            let total = usize::from(ip.total_len);
            let src = SocketAddr::from((ip.source, udp.source_port));
            let dst = SocketAddr::from((ip.destination, udp.destination_port));
            let payload = &rest[UdpHeader::LEN..];
            let sum = udp.calc_checksum_ipv4(&ip, payload).ok();
            (src, dst, payload, ok, total, (udp, sum))
        }
        Some(6) => {
            let (ip, rest) = Ipv6Header::from_slice(data).map_err(|e| e.to_string())?;
            if ip.next_header != IpNumber::UDP {
                return Err(format!("IPv6 next header {:?}, not UDP", ip.next_header));
            }
            let (udp, _) = UdpHeader::from_slice(rest).map_err(|e| e.to_string())?;
            let ok = ip.payload_length == udp.length;
            let total = Ipv6Header::LEN + usize::from(ip.payload_length);
            let src = SocketAddr::from((ip.source, udp.source_port));
            let dst = SocketAddr::from((ip.destination, udp.destination_port));
            let payload = &rest[UdpHeader::LEN..];
            let sum = udp.calc_checksum_ipv6(&ip, payload).ok();
            (src, dst, payload, ok, total, (udp, sum))
        }
        _ => return Err("neither IPv4 nor IPv6".to_owned()),
    };
    let (udp, sum) = udp;
    let len = usize::from(udp.length).saturating_sub(UdpHeader::LEN);
    let checksum_ok = if udp_bytes.len() == len {
        sum == Some(udp.checksum)
    } else {
        udp.checksum == 0
    };
    Ok(Captured {
        at: Duration::ZERO,
        src,
        dst,
        payload: udp_bytes.to_vec(),
        len,
        valid: ip_ok && checksum_ok && total == orig_len && udp_bytes.len() <= len,
    })
}

/// Which way a datagram went, from the program's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by us to the peer (`>`, as `socat -x` marks it).
    Sent,
    /// Received from the peer (`<`).
    Received,
}

/// Appends to `out` a datagram's hex dump: a line saying which way it went, how long it is and
/// who the peer is (`> 14 bytes to 127.0.0.1:50000`, `< 14 bytes from …`), then 16 bytes a line
/// as offset, hex and ASCII, with `.` for every byte that is not printable ASCII, so nothing a
/// peer sends reaches a terminal raw (pretty-hex's lines, as `hexdump -C` groups them):
///
/// ```text
/// > 14 bytes to 127.0.0.1:50000
/// 0000:   48 65 6c 6c 6f 20 53 65  72 76 65 72 21 21           Hello Server!!
/// ```
///
/// `len` is the datagram's real length; when only `payload` of it was kept, the line says so.
pub fn hexdump(
    direction: Direction,
    peer: SocketAddr,
    payload: &[u8],
    len: usize,
    out: &mut String,
) {
    let (mark, way) = match direction {
        Direction::Sent => ('>', "to"),
        Direction::Received => ('<', "from"),
    };
    // Writing into a String cannot fail.
    let _ = write!(out, "{mark} {len} bytes {way} {peer}");
    if len > payload.len() {
        let _ = write!(out, " (the first {} shown)", payload.len());
    }
    out.push('\n');
    if payload.is_empty() {
        return;
    }
    let config = pretty_hex::HexConfig {
        title: false,
        ascii: true,
        width: 16,
        group: 8,
        chunk: 1,
        max_bytes: usize::MAX,
        display_offset: 0,
    };
    let _ = pretty_hex::hex_write(out, payload, config);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum (RFC 1071) of `words`, computed here independently of etherparse:
    /// over a header with its checksum in place it is 0.
    fn ones_complement(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn an_ipv4_frame_has_right_lengths_ports_and_checksums() {
        let mut out = Vec::new();
        let payload = b"Hello Server!!";
        let len = frame(
            addr("127.0.0.1:54321"),
            addr("127.0.0.2:50000"),
            payload,
            14,
            &mut out,
        );
        assert_eq!(len, 20 + 8 + 14);
        assert_eq!(out.len(), len);
        assert_eq!(out[0], 0x45, "IPv4, 20-byte header");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 42, "total length");
        assert_eq!(out[9], 17, "UDP");
        assert_eq!(ones_complement(&out[..20]), 0, "IPv4 header checksum");
        assert_eq!(&out[12..16], &[127, 0, 0, 1]);
        assert_eq!(&out[16..20], &[127, 0, 0, 2]);
        let udp = &out[20..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 54_321);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 50_000);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 22, "UDP length");
        let mut pseudo = out[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 22]);
        pseudo.extend_from_slice(udp);
        assert_eq!(
            ones_complement(&pseudo),
            0,
            "UDP checksum over the pseudo-header"
        );
        assert_eq!(&udp[8..], payload);
    }

    #[test]
    fn an_ipv6_frame_has_a_udp_checksum_and_mapped_addresses_stay_ipv4() {
        let mut out = Vec::new();
        let len = frame(addr("[::1]:1"), addr("[::1]:2"), b"", 0, &mut out);
        assert_eq!((len, out.len()), (48, 48));
        assert_eq!(out[0] >> 4, 6);
        assert_eq!(out[6], 17, "next header UDP");
        let mut pseudo = out[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 17]);
        pseudo.extend_from_slice(&out[40..]);
        assert_eq!(ones_complement(&pseudo), 0);
        assert_ne!(
            u16::from_be_bytes([out[46], out[47]]),
            0,
            "IPv6 needs a checksum"
        );

        out.clear();
        frame(
            addr("[::ffff:127.0.0.1]:1"),
            addr("127.0.0.1:2"),
            b"x",
            1,
            &mut out,
        );
        assert_eq!(
            out[0], 0x45,
            "a dual-stack socket's mapped peer is IPv4 on the wire"
        );
    }

    #[test]
    fn a_cut_datagram_keeps_its_real_length_and_no_checksum() {
        let mut out = Vec::new();
        let len = frame(
            addr("127.0.0.1:1"),
            addr("127.0.0.1:2"),
            b"abc",
            3000,
            &mut out,
        );
        assert_eq!(len, 28 + 3000);
        assert_eq!(out.len(), 28 + 3);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 3028);
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 0);
        // Longer than any payload: cut to the family's largest, never a wrapped length field.
        let len = frame(addr("[::1]:1"), addr("[::1]:2"), b"", usize::MAX, &mut out);
        assert_eq!(len, 48 + crate::MAX_PAYLOAD_V6);
    }

    #[test]
    fn records_follow_the_file_header() {
        let mut out = Vec::new();
        Pcap::file_header(&mut out);
        assert_eq!(out.len(), 24);
        assert_eq!(
            &out[..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "little-endian microseconds"
        );
        assert_eq!(
            u32::from_le_bytes([out[20], out[21], out[22], out[23]]),
            101
        );
        let mut pcap = Pcap::new();
        let at = Duration::new(1_800_000_000, 123_456_789);
        pcap.record(at, addr("[::1]:1"), addr("[::1]:2"), b"hi", 2, &mut out);
        let record = &out[24..];
        let word =
            |i: usize| u32::from_le_bytes([record[i], record[i + 1], record[i + 2], record[i + 3]]);
        assert_eq!(
            (word(0), word(4), word(8), word(12)),
            (1_800_000_000, 123_456, 50, 50)
        );
        assert_eq!(record.len(), 16 + 50);
    }

    #[test]
    fn a_capture_reads_back_as_written() -> Result<(), String> {
        let mut file = Vec::new();
        Pcap::file_header(&mut file);
        let mut pcap = Pcap::new();
        let at = Duration::new(1_800_000_000, 5_000);
        let (a, b) = (addr("127.0.0.1:54321"), addr("127.0.0.1:50000"));
        let (c, d) = (addr("[::1]:1"), addr("[::1]:2"));
        pcap.record(at, a, b, b"Hello Server!!", 14, &mut file);
        pcap.record(at, d, c, b"cut", 3000, &mut file);
        let read = read_capture(&file)?;
        assert_eq!(
            read,
            vec![
                Captured {
                    at,
                    src: a,
                    dst: b,
                    payload: b"Hello Server!!".to_vec(),
                    len: 14,
                    valid: true
                },
                Captured {
                    at,
                    src: d,
                    dst: c,
                    payload: b"cut".to_vec(),
                    len: 3000,
                    valid: true
                },
            ]
        );
        // One flipped payload bit breaks the first datagram's UDP checksum; the cut one has
        // none to break.
        file[24 + 16 + 28] ^= 1;
        let read = read_capture(&file)?;
        assert_eq!((read[0].valid, read[1].valid), (false, true));
        assert!(
            read_capture(&file[..30]).is_err(),
            "a record cut short is refused"
        );
        Ok(())
    }

    #[test]
    fn hexdump_shows_offsets_hex_and_printable_ascii() {
        let mut out = String::new();
        let payload = b"Hello Server!!\x1b[2J\xff and more";
        hexdump(
            Direction::Sent,
            addr("127.0.0.1:50000"),
            payload,
            payload.len(),
            &mut out,
        );
        hexdump(Direction::Received, addr("[::1]:9"), b"", 0, &mut out);
        hexdump(Direction::Received, addr("[::1]:9"), b"ab", 3000, &mut out);
        expect_test::expect![[r#"
            > 28 bytes to 127.0.0.1:50000
            0000:   48 65 6c 6c 6f 20 53 65  72 76 65 72 21 21 1b 5b   Hello Server!!.[
            0010:   32 4a ff 20 61 6e 64 20  6d 6f 72 65               2J. and more
            < 0 bytes from [::1]:9
            < 3000 bytes from [::1]:9 (the first 2 shown)
            0000:   61 62                                              ab
        "#]]
        .assert_eq(&out);
    }
}
