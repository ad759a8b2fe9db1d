//! What an ICMP error read from the socket's error queue (IP_RECVERR / IPV6_RECVERR) says:
//! who sent it, and what it means for the user — nothing listens on the server (exit 4), a
//! host on the way refused (exit 7), or the datagram is over the path MTU.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One entry of the error queue (`sock_extended_err` and the offender's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathError {
    /// Who sent the ICMP error (`None` when the kernel gave no address).
    pub offender: Option<IpAddr>,
    /// Where the error came from.
    pub origin: Origin,
    /// The ICMP type (0 for a local error).
    pub icmp_type: u8,
    /// The ICMP code.
    pub code: u8,
    /// `ee_info`: the MTU for "fragmentation needed" / "packet too big" and local EMSGSIZE.
    pub info: u32,
}

/// `ee_origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The local kernel (SO_EE_ORIGIN_LOCAL): e.g. a datagram over the MTU it already knows.
    Local,
    /// An ICMP (IPv4) message.
    Icmp,
    /// An ICMPv6 message.
    Icmp6,
    /// Anything else (timestamps, zero-copy).
    Other,
}

/// What a [`PathError`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Port unreachable: nothing listens (when the server itself says it).
    PortUnreachable,
    /// Communication administratively prohibited: a firewall's `reject`.
    AdminProhibited,
    /// Host or network unreachable (no route, no neighbour).
    Unreachable,
    /// The datagram is over the path MTU, which is this many bytes.
    TooBig(u32),
    /// TTL or hop limit exceeded in transit (`--ttl` too low, or a routing loop).
    TimeExceeded,
    /// Another ICMP error.
    Other,
}

impl PathError {
    /// What it means.
    pub fn meaning(&self) -> Meaning {
        match (self.origin, self.icmp_type, self.code) {
            // Local EMSGSIZE: the kernel knows the datagram is over the MTU.
            (Origin::Local, _, _) if self.info > 0 => Meaning::TooBig(self.info),
            (Origin::Icmp, 3, 3) | (Origin::Icmp6, 1, 4) => Meaning::PortUnreachable,
            (Origin::Icmp, 3, 4) | (Origin::Icmp6, 2, _) => Meaning::TooBig(self.info),
            (Origin::Icmp, 3, 9 | 10 | 13) | (Origin::Icmp6, 1, 1 | 5 | 6) => {
                Meaning::AdminProhibited
            }
            (Origin::Icmp, 3, _) | (Origin::Icmp6, 1, _) => Meaning::Unreachable,
            (Origin::Icmp, 11, _) | (Origin::Icmp6, 3, _) => Meaning::TimeExceeded,
            _ => Meaning::Other,
        }
    }

    /// Whether it is the server's own word that nothing listens on `peer` (exit 4), rather
    /// than a refusal by a host on the way (exit 7).
    pub fn is_from_server(&self, peer: SocketAddr) -> bool {
        self.meaning() == Meaning::PortUnreachable
            && self
                .offender
                .is_none_or(|offender| offender.to_canonical() == peer.ip().to_canonical())
    }

    /// ` (ICMP … from ADDR)`, or, for the kernel's own EMSGSIZE, where its MTU came from.
    pub fn said_by(&self) -> String {
        match self.origin {
            Origin::Local => {
                " (learned earlier from an ICMP error, and kept by this host's kernel for about \
                 10 minutes)"
                    .to_owned()
            }
            _ => format!(" ({self} from {})", self.who()),
        }
    }

    /// The offender's address, or words for none.
    pub fn who(&self) -> String {
        match self.offender {
            Some(ip) => ip.to_string(),
            None => "an unknown host".to_owned(),
        }
    }
}

/// `ICMP port unreachable (type 3, code 3)`.
impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.origin == Origin::Icmp6;
        let name = match self.meaning() {
            Meaning::PortUnreachable => "port unreachable",
            Meaning::AdminProhibited => "communication administratively prohibited",
            Meaning::Unreachable => match (v6, self.code) {
                (false, 0) | (true, 0) => "network unreachable (no route)",
                (false, 1) | (true, 3) => "host unreachable",
                (false, 2) => "protocol unreachable",
                _ => "destination unreachable",
            },
            Meaning::TooBig(_) if v6 => "packet too big",
            Meaning::TooBig(_) if self.origin == Origin::Local => "message too long",
            Meaning::TooBig(_) => "fragmentation needed",
            Meaning::TimeExceeded if v6 => "hop limit exceeded in transit",
            Meaning::TimeExceeded => "time to live exceeded in transit",
            Meaning::Other => "error",
        };
        match self.origin {
            Origin::Icmp => write!(
                f,
                "ICMP {name} (type {}, code {})",
                self.icmp_type, self.code
            ),
            Origin::Icmp6 => write!(
                f,
                "ICMPv6 {name} (type {}, code {})",
                self.icmp_type, self.code
            ),
            Origin::Local | Origin::Other => write!(f, "{name} (said by this host's kernel)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn icmp(offender: [u8; 4], icmp_type: u8, code: u8) -> PathError {
        PathError {
            offender: Some(IpAddr::V4(Ipv4Addr::from(offender))),
            origin: Origin::Icmp,
            icmp_type,
            code,
            info: 0,
        }
    }

    #[test]
    fn only_the_server_saying_port_unreachable_means_nothing_listens() {
        let server = SocketAddr::from(([198, 51, 100, 2], 9));
        assert!(icmp([198, 51, 100, 2], 3, 3).is_from_server(server));
        // A firewall's `reject` on the router: port unreachable, but from the router.
        assert!(!icmp([192, 0, 2, 1], 3, 3).is_from_server(server));
        // `reject with icmpx admin-prohibited`, from anyone.
        let prohibited = icmp([198, 51, 100, 2], 3, 13);
        assert!(!prohibited.is_from_server(server));
        assert_eq!(prohibited.meaning(), Meaning::AdminProhibited);
        assert_eq!(
            prohibited.to_string(),
            "ICMP communication administratively prohibited (type 3, code 13)"
        );
    }

    #[test]
    fn too_big_carries_the_path_mtu() {
        let mut frag = icmp([192, 0, 2, 1], 3, 4);
        frag.info = 1280;
        assert_eq!(frag.meaning(), Meaning::TooBig(1280));
        let v6 = PathError {
            origin: Origin::Icmp6,
            icmp_type: 2,
            code: 0,
            info: 1280,
            offender: None,
        };
        assert_eq!(v6.meaning(), Meaning::TooBig(1280));
        assert_eq!(v6.to_string(), "ICMPv6 packet too big (type 2, code 0)");
        let local = PathError {
            origin: Origin::Local,
            icmp_type: 0,
            code: 0,
            info: 1280,
            offender: None,
        };
        assert_eq!(local.meaning(), Meaning::TooBig(1280));
        let v6_prohibited = PathError {
            origin: Origin::Icmp6,
            icmp_type: 1,
            code: 1,
            info: 0,
            offender: None,
        };
        assert_eq!(v6_prohibited.meaning(), Meaning::AdminProhibited);
    }
}
