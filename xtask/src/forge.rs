//! Datagrams with a forged source: one UDP datagram that claims to come from another program's
//! address and port, for the faults that show what a spoofed datagram can (not) make udptalk do.
//!
//! A [`Forger`] is a raw `IPPROTO_UDP` socket (`socket2`, as `std` opens none): we write the
//! 8-byte UDP header ourselves, so the source port is whatever we say, and the kernel writes the
//! IP header. Its source address is the address the raw socket is bound to, and every address in
//! 127.0.0.0/8 is local on Linux, so binding to the forged address forges it without writing
//! the IPv4 header (`IP_HDRINCL`) ourselves; over IPv6 the only loopback address is `::1`. The
//! checksum is computed in both families: IPv4 allows 0 ("none"), IPv6 does not (RFC 8200
//! §8.1), and the kernel does not fill it in for raw sockets.
//!
//! Both ends must be on loopback (127.0.0.0/8 or `::1`): a forger refuses anything else, so no
//! forged datagram can leave the machine. Raw sockets need root (`CAP_NET_RAW`); without it
//! [`Forger::new`] returns [`ForgeError::NotPermitted`] and the rows that need it are skipped.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// IANA's protocol number of UDP, as the pseudo-headers carry it.
const UDP_PROTOCOL: u8 = 17;

/// The UDP header's length: source port, destination port, length, checksum, 2 bytes each.
const UDP_HEADER: usize = 8;

/// Why a datagram could not be forged.
#[derive(Debug)]
pub enum ForgeError {
    /// Occurs when the system refuses us a raw socket (`EPERM`/`EACCES`): not root, or no
    /// `CAP_NET_RAW`. Rows that need forging are skipped with this reason.
    NotPermitted(String),
    /// Occurs on anything else: an address off loopback, families that differ, a send that
    /// failed.
    Failed(String),
}

impl fmt::Display for ForgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForgeError::NotPermitted(why) | ForgeError::Failed(why) => f.write_str(why),
        }
    }
}

impl From<ForgeError> for String {
    fn from(error: ForgeError) -> String {
        error.to_string()
    }
}

/// A raw socket that sends UDP datagrams from one forged loopback address and port.
pub struct Forger {
    socket: Socket,
    from: SocketAddr,
}

impl Forger {
    /// Opens a raw UDP socket whose datagrams claim to come from `from`, which must be on
    /// loopback.
    pub fn new(from: SocketAddr) -> Result<Forger, ForgeError> {
        check_loopback(from)?;
        let domain = match from {
            SocketAddr::V4(_) => Domain::IPV4,
            SocketAddr::V6(_) => Domain::IPV6,
        };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::UDP)).map_err(|e| {
            let why = format!("cannot open a raw UDP socket to forge datagrams: {e}");
            match e.kind() {
                io::ErrorKind::PermissionDenied => ForgeError::NotPermitted(format!(
                    "{why}; forging a source address needs root or CAP_NET_RAW"
                )),
                _ => ForgeError::Failed(why),
            }
        })?;
        // The bound address is the IP source of what we send. The port means nothing to a raw
        // socket: ours is in the UDP header we write.
        socket
            .bind(&SockAddr::from(SocketAddr::new(from.ip(), 0)))
            .map_err(|e| {
                ForgeError::Failed(format!("cannot bind a raw socket to {}: {e}", from.ip()))
            })?;
        // A raw UDP socket also receives a copy of every UDP datagram the host gets, and we
        // never read them: the smallest buffer keeps that cheap. Failing to shrink it is harmless.
        let _ = socket.set_recv_buffer_size(0);
        Ok(Forger { socket, from })
    }

    /// Sends `payload` to `to` as one UDP datagram from [`Forger::from`].
    pub fn send(&self, to: SocketAddr, payload: &[u8]) -> Result<(), ForgeError> {
        check_loopback(to)?;
        let segment = udp_segment(self.from, to, payload)?;
        // Raw sockets take no port: Linux reads an IPv6 one as a protocol number, so 0.
        let sent = self
            .socket
            .send_to(&segment, &SockAddr::from(SocketAddr::new(to.ip(), 0)))
            .map_err(|e| {
                ForgeError::Failed(format!(
                    "cannot send a forged datagram {} → {to}: {e}",
                    self.from
                ))
            })?;
        if sent == segment.len() {
            Ok(())
        } else {
            Err(ForgeError::Failed(format!(
                "a forged datagram {} → {to} went out short: {sent} of {} bytes",
                self.from,
                segment.len()
            )))
        }
    }
}

/// Sends one datagram from the forged `from` to `to`, both on loopback.
pub fn send_one(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Result<(), ForgeError> {
    Forger::new(from)?.send(to, payload)
}

/// Whether this process may forge: `Err` with the reason to print when it may not.
pub fn available() -> Result<(), String> {
    match Forger::new(SocketAddr::from(([127, 0, 0, 1], 0))) {
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

/// Refuses any address outside 127.0.0.0/8 and `::1`.
fn check_loopback(addr: SocketAddr) -> Result<(), ForgeError> {
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if loopback {
        Ok(())
    } else {
        Err(ForgeError::Failed(format!(
            "refusing to forge a datagram with {addr}: only 127.0.0.0/8 and ::1 are allowed"
        )))
    }
}

/// The UDP header followed by `payload`, its checksum computed over the pseudo-header of the
/// family (RFC 768 for IPv4, RFC 8200 §8.1 for IPv6).
pub fn udp_segment(
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, ForgeError> {
    let length = u16::try_from(UDP_HEADER + payload.len()).map_err(|_| {
        ForgeError::Failed(format!(
            "a payload of {} bytes does not fit in one UDP datagram",
            payload.len()
        ))
    })?;
    let mut pseudo = Vec::with_capacity(40);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, UDP_PROTOCOL]);
            pseudo.extend_from_slice(&length.to_be_bytes());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&u32::from(length).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, UDP_PROTOCOL]);
        }
        _ => {
            return Err(ForgeError::Failed(format!(
                "cannot forge {from} → {to}: the addresses are of different families"
            )));
        }
    }
    let mut segment = Vec::with_capacity(usize::from(length));
    segment.extend_from_slice(&from.port().to_be_bytes());
    segment.extend_from_slice(&to.port().to_be_bytes());
    segment.extend_from_slice(&length.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(payload);
    // A computed 0 is sent as 0xFFFF (RFC 768): 0 means "no checksum" over IPv4 and is invalid
    // over IPv6; in one's complement both are zero.
    let checksum = match internet_checksum(&[&pseudo, &segment]) {
        0 => 0xFFFF,
        sum => sum,
    };
    segment[6..8].copy_from_slice(&checksum.to_be_bytes());
    Ok(segment)
}

/// The Internet checksum (RFC 1071) of the concatenated `parts`: the one's complement of the
/// one's complement sum of their 16-bit big-endian words, an odd last byte padded with zero.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes = parts.iter().flat_map(|part| part.iter().copied());
    let mut sum: u32 = 0;
    let mut high: Option<u8> = None;
    for byte in bytes {
        match high.take() {
            None => high = Some(byte),
            Some(first) => sum += u32::from(u16::from_be_bytes([first, byte])),
        }
    }
    if let Some(first) = high {
        sum += u32::from(u16::from_be_bytes([first, 0]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// RFC 1071 §3's worked example: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's
    /// complement), so the checksum is its complement, 220d.
    #[test]
    fn checksum_matches_rfc_1071() {
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
    }

    /// An odd length is padded with a zero byte, wherever the parts split.
    #[test]
    fn checksum_pads_an_odd_byte() {
        assert_eq!(internet_checksum(&[&[0x12]]), !0x1200);
        assert_eq!(
            internet_checksum(&[&[0x12], &[0x34, 0x56]]),
            internet_checksum(&[&[0x12, 0x34, 0x56]])
        );
    }

    /// 127.0.0.1:1000 → 127.0.0.1:2000, "hi", worked by hand: pseudo-header 7f00 0001 7f00 0001
    /// 0011 000a, header 03e8 07d0 000a 0000 (checksum zeroed), payload 6869; the sum is
    /// 0x17248, folded 0x7249, complemented 0x8db6.
    #[test]
    fn ipv4_udp_checksum_known_vector() -> Result<(), String> {
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 1000));
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 2000));
        let segment = udp_segment(from, to, b"hi")?;
        assert_eq!(
            segment,
            [0x03, 0xe8, 0x07, 0xd0, 0x00, 0x0a, 0x8d, 0xb6, b'h', b'i']
        );
        Ok(())
    }

    /// [::1]:1000 → [::1]:2000, "hi", by hand: the pseudo-header's words are 0001 twice (the
    /// addresses), 000a (the length, in 32 bits) and 0011 (next header), the rest zero; with
    /// the header and payload the sum is 0x7448, complemented 0x8bb7.
    #[test]
    fn ipv6_udp_checksum_known_vector() -> Result<(), String> {
        let from = SocketAddr::from((Ipv6Addr::LOCALHOST, 1000));
        let to = SocketAddr::from((Ipv6Addr::LOCALHOST, 2000));
        let segment = udp_segment(from, to, b"hi")?;
        assert_eq!(segment.get(6..8), Some(&[0x8b, 0xb7][..]));
        Ok(())
    }

    /// A segment with its checksum in place sums, with its pseudo-header, to 0xFFFF: the
    /// receiver's check.
    #[test]
    fn a_checksummed_segment_verifies() -> Result<(), String> {
        let from = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 9), 40_000));
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 53_211));
        let payload = br#"{"v":1,"id":5,"kind":"request","body":"hi"}"#;
        let segment = udp_segment(from, to, payload)?;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[127, 0, 0, 9, 127, 0, 0, 1, 0, 17]);
        pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        assert_eq!(internet_checksum(&[&pseudo, &segment]), 0);
        Ok(())
    }

    #[test]
    fn addresses_off_loopback_are_refused() {
        let outside = SocketAddr::from(([192, 0, 2, 1], 9));
        let inside = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(matches!(Forger::new(outside), Err(ForgeError::Failed(_))));
        assert!(matches!(
            send_one(inside, outside, b"x"),
            Err(ForgeError::Failed(_) | ForgeError::NotPermitted(_))
        ));
        let v6_outside = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9));
        assert!(check_loopback(v6_outside).is_err());
        assert!(check_loopback(SocketAddr::from((Ipv6Addr::LOCALHOST, 9))).is_ok());
    }

    /// End to end, where raw sockets are allowed: a socket on loopback receives the forged
    /// datagram with the forged source, in both families (IPv6 only where `::1` exists).
    #[test]
    fn a_forged_datagram_arrives_from_the_forged_source() -> Result<(), String> {
        use std::net::UdpSocket;
        use std::time::Duration;
        for (claimed, ip) in [
            (
                SocketAddr::from(([127, 0, 0, 5], 4242)),
                IpAddr::from(Ipv4Addr::LOCALHOST),
            ),
            (
                SocketAddr::from((Ipv6Addr::LOCALHOST, 4243)),
                IpAddr::from(Ipv6Addr::LOCALHOST),
            ),
        ] {
            let Ok(socket) = UdpSocket::bind((ip, 0)) else {
                eprintln!("skipped {ip}: cannot bind it here");
                continue;
            };
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let to = socket.local_addr().map_err(|e| e.to_string())?;
            match send_one(claimed, to, b"forged") {
                Err(ForgeError::NotPermitted(why)) => {
                    eprintln!("skipped: {why}");
                    return Ok(());
                }
                other => other?,
            }
            let mut buf = [0; 64];
            let (len, source) = socket
                .recv_from(&mut buf)
                .map_err(|e| format!("{to}: {e}"))?;
            assert_eq!(source, claimed);
            assert_eq!(buf.get(..len), Some(&b"forged"[..]));
        }
        Ok(())
    }
}
