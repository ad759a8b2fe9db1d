//! The socket options of `--source`, `--interface`, `--ttl`, `--tos`, `--dont-fragment`,
//! `--broadcast`, `--multicast-ttl` and `--multicast-if`: what the user asked, checked, for
//! `sys.rs` to set on the socket before it connects (or sends, to a group); and the reading of
//! the address forms `--server` and `--source` accept (`[fe80::1%eth0]:P`, `[fe80::1%2]:P`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Options set on the client's socket; the default sets none (what the tutorial did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `--source`: the local address (and port: 0 for any) bound before connecting.
    pub source: Option<SocketAddr>,
    /// `--interface`: the interface the socket is bound to (SO_BINDTODEVICE).
    pub interface: Option<String>,
    /// `--ttl` / `--hop-limit`: the unicast TTL or hop limit.
    pub ttl: Option<u8>,
    /// `--tos`: IP_TOS (IPv4) or IPV6_TCLASS (IPv6).
    pub tos: Option<u8>,
    /// `--dont-fragment`: IP_PMTUDISC_DO (IPv4) or IPV6_DONTFRAG (IPv6): a datagram over the
    /// path MTU is refused, never fragmented.
    pub dont_fragment: bool,
    /// `--broadcast`: SO_BROADCAST; replies are collected from any address.
    pub broadcast: bool,
    /// `--multicast-ttl`: the TTL or hop limit of datagrams to a group.
    pub multicast_ttl: Option<u8>,
    /// `--multicast-if`: the interface datagrams to a group leave by.
    pub multicast_if: Option<String>,
}

impl SocketOptions {
    /// Whether datagrams to `peer` go to many hosts (a group, or a broadcast address with
    /// `--broadcast`): the socket is then not connected and replies come from any address.
    pub fn collects(&self, peer: SocketAddr) -> bool {
        peer.ip().is_multicast() || (self.broadcast && peer.is_ipv4())
    }
}

/// Whether `ip` is the limited broadcast address, 255.255.255.255 (a subnet's broadcast
/// address is only known from the interfaces: the kernel refuses it without SO_BROADCAST).
pub(crate) fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Whether an IPv6 address means nothing without an interface: link-local unicast (fe80::/10)
/// and interface- or link-local multicast (ff01::/16, ff02::/16).
pub(crate) fn needs_scope(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    (first & 0xffc0) == 0xfe80 || (first & 0xff0f) == 0xff01 || (first & 0xff0f) == 0xff02
}

/// An address written `[ADDR%SCOPE]:PORT` (or, with `port_optional`, `[ADDR%SCOPE]` and
/// `ADDR%SCOPE`), its scope an interface name or index: `None` when `text` has no `%`; the
/// address with the scope left as written otherwise, for the caller to resolve the name.
pub(crate) fn split_scoped(
    text: &str,
    port_optional: bool,
) -> Option<Result<(Ipv6Addr, String, u16), String>> {
    if !text.contains('%') {
        return None;
    }
    let (inside, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, "")) if port_optional => (inside, Some(0)),
            Some((inside, after)) => match after.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(port)) => (inside, Some(port)),
                _ => (inside, None),
            },
            None => return Some(Err("the `[` has no `]`".to_owned())),
        },
        None if port_optional => (text, Some(0)),
        None => (text, None),
    };
    let Some(port) = port else {
        return Some(Err(
            "it has no port; write [ADDR%IFNAME]:PORT, e.g. [fe80::1%eth0]:50000".to_owned(),
        ));
    };
    let Some((addr, scope)) = inside.split_once('%') else {
        return Some(Err("the `%` is outside the brackets".to_owned()));
    };
    let Ok(addr) = addr.parse::<Ipv6Addr>() else {
        return Some(Err(format!(
            "{addr} is not an IPv6 address (a scope `%{scope}` is for IPv6 link-local addresses)"
        )));
    };
    if scope.is_empty() {
        return Some(Err(
            "the scope after `%` is empty; write an interface's name or index, e.g. %eth0 or %2"
                .to_owned(),
        ));
    }
    Some(Ok((addr, scope.to_owned(), port)))
}

/// `ADDR%SCOPE` with the scope resolved by `index_of` (a number is taken as it is).
pub(crate) fn scoped(
    addr: Ipv6Addr,
    scope: &str,
    port: u16,
    index_of: impl Fn(&str) -> Option<u32>,
) -> Result<SocketAddr, String> {
    let index = match scope.parse::<u32>() {
        Ok(index) => index,
        Err(_) => index_of(scope).ok_or_else(|| {
            format!(
                "there is no interface named {scope} on this host; `ip link` lists them \
                 (write %NAME or %INDEX)"
            )
        })?,
    };
    Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, index)))
}

/// `--source ADDR[:PORT]`: `192.0.2.1`, `192.0.2.1:4000`, `[2001:db8::1]:4000`, `2001:db8::1`,
/// `[fe80::1%eth0]:4000`; no port means any (0).
pub(crate) fn parse_source(
    text: &str,
    index_of: impl Fn(&str) -> Option<u32>,
) -> Result<SocketAddr, String> {
    let text = text.trim();
    let hint = "write ADDR or ADDR:PORT, e.g. 127.0.0.2, 127.0.0.2:4000 or [::1]:4000";
    if let Some(scoped_addr) = split_scoped(text, true) {
        let (addr, scope, port) = scoped_addr.map_err(|reason| format!("{reason}; {hint}"))?;
        return scoped(addr, &scope, port, index_of);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    if let Some(inside) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
        && let Ok(ip) = inside.parse::<Ipv6Addr>()
    {
        return Ok(SocketAddr::new(IpAddr::V6(ip), 0));
    }
    Err(format!("{text} is not a local address; {hint}"))
}

/// The address family `source` must share with the server, worded for a refusal.
pub(crate) fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// The unspecified address of `peer`'s family.
pub(crate) fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0(name: &str) -> Option<u32> {
        (name == "eth0").then_some(7)
    }

    #[test]
    fn scope_ids_are_names_or_indexes() {
        let parsed = |text| {
            split_scoped(text, false)
                .map(|r| r.and_then(|(addr, scope, port)| scoped(addr, &scope, port, eth0)))
        };
        let Some(Ok(SocketAddr::V6(v6))) = parsed("[fe80::1%eth0]:9") else {
            panic!("named scope refused");
        };
        assert_eq!(
            (v6.to_string(), v6.scope_id()),
            ("[fe80::1%7]:9".to_owned(), 7)
        );
        let Some(Ok(SocketAddr::V6(v6))) = parsed("[fe80::1%2]:50000") else {
            panic!("numeric scope refused");
        };
        assert_eq!((v6.scope_id(), v6.port()), (2, 50000));
        let Some(Ok(SocketAddr::V6(v6))) = parsed("[ff02::1%eth0]:9") else {
            panic!("multicast scope refused");
        };
        assert_eq!(
            (*v6.ip(), v6.scope_id()),
            ("ff02::1".parse().unwrap_or(Ipv6Addr::LOCALHOST), 7)
        );
        assert_eq!(parsed("[::1]:9"), None);
        for (text, why) in [
            ("[fe80::1%nosuch]:9", "ip link"),
            ("[fe80::1%eth0]", "no port"),
            ("[fe80::1%]:9", "empty"),
            ("[fe80::1%eth0:9", "no `]`"),
            ("[192.0.2.1%eth0]:9", "not an IPv6"),
        ] {
            let got = parsed(text);
            assert!(
                matches!(&got, Some(Err(e)) if e.contains(why)),
                "{text}: {got:?}"
            );
        }
    }

    #[test]
    fn sources_take_an_address_with_or_without_a_port() {
        let ok = |text: &str| parse_source(text, eth0).map(|a| a.to_string());
        assert_eq!(ok("127.0.0.2"), Ok("127.0.0.2:0".to_owned()));
        assert_eq!(ok("127.0.0.2:4000"), Ok("127.0.0.2:4000".to_owned()));
        assert_eq!(ok("::1"), Ok("[::1]:0".to_owned()));
        assert_eq!(ok("[::1]"), Ok("[::1]:0".to_owned()));
        assert_eq!(ok("[::1]:4000"), Ok("[::1]:4000".to_owned()));
        assert_eq!(ok("[fe80::1%eth0]:4000"), Ok("[fe80::1%7]:4000".to_owned()));
        assert_eq!(ok("fe80::1%eth0"), Ok("[fe80::1%7]:0".to_owned()));
        assert!(ok("localhost").is_err_and(|e| e.contains("127.0.0.2:4000")));
    }

    #[test]
    fn link_local_and_small_scope_groups_need_a_scope() {
        for (text, needs) in [
            ("fe80::1", true),
            ("febf::1", true),
            ("ff02::1", true),
            ("ff12::1", true),
            ("ff01::1", true),
            ("ff05::1", false),
            ("ff0e::1", false),
            ("2001:db8::1", false),
            ("::1", false),
        ] {
            let ip: Ipv6Addr = text.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
            assert_eq!(needs_scope(ip), needs, "{text}");
        }
    }
}
