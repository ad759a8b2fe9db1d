//! `--bind [::]:PORT` serves IPv4 too, unless `--ipv6-only`: the binary bound to the IPv6
//! wildcard, asked over 127.0.0.1 and ::1. Skipped, saying why, on a machine without ::1.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::binary::{sigterm, spawn};
use crate::{Result, ask, peer_for};

/// Whether this machine has IPv6 loopback; says why the test is skipped when it has not.
fn has_ipv6_loopback(test: &str) -> bool {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test}: no IPv6 loopback here (binding [::1]:0: {e})");
            false
        }
    }
}

/// The server's port asked at `ip` (a loopback address of either family).
fn at(ip: &str, server: SocketAddr) -> Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse()?, server.port()))
}

#[test]
fn the_ipv6_wildcard_serves_ipv4_too() -> Result {
    if !has_ipv6_loopback("the_ipv6_wildcard_serves_ipv4_too") {
        return Ok(());
    }
    let server = spawn(&["--bind", "[::]:0", "--quiet"])?;
    let expected = format!("listening on udp [::]:{} (IPv4 too)", server.addr.port());
    assert_eq!(server.announce, expected);
    for (ip, count) in [("127.0.0.1", 1), ("::1", 2)] {
        let addr = at(ip, server.addr)?;
        let peer = peer_for(addr)?;
        let answer = ask(&peer, addr, b"both")?;
        assert_eq!(
            answer,
            format!("Access count: {count}").as_bytes(),
            "{addr}"
        );
    }
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("summary: received 2, counted 2"), "{err}");
    Ok(())
}

#[test]
fn ipv6_only_serves_ipv6_alone_and_says_so() -> Result {
    if !has_ipv6_loopback("ipv6_only_serves_ipv6_alone_and_says_so") {
        return Ok(());
    }
    let server = spawn(&["--bind", "[::]:0", "--ipv6-only", "--quiet"])?;
    assert!(
        server.announce.ends_with(" (IPv6 only)"),
        "{}",
        server.announce
    );
    let v6 = at("::1", server.addr)?;
    assert_eq!(ask(&peer_for(v6)?, v6, b"six")?, b"Access count: 1");
    // Nothing listens on the IPv4 side of the port: a connected socket hears the refusal
    // (ICMP port unreachable), or nothing at all; never an answer.
    let v4 = at("127.0.0.1", server.addr)?;
    let peer = peer_for(v4)?;
    peer.set_read_timeout(Some(Duration::from_millis(500)))?;
    peer.connect(v4)?;
    peer.send(b"four")?;
    let mut buf = [0; 64];
    match peer.recv(&mut buf) {
        Ok(len) => return Err(format!("an IPv4 answer came: {:?}", &buf[..len]).into()),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("summary: received 1, counted 1"), "{err}");
    Ok(())
}
