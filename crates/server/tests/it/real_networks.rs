//! Issue 10's server side on loopback, the binary spawned: the IPv4 wildcard through an IPv6
//! socket, multicast groups joined on `lo` (and the groups not joined left alone), the
//! kernel's drops for a full receive buffer, `--recv-buffer`'s shortfall, and `--join`'s
//! usage errors. Broadcast over `lo` is in `workers.rs`; real links (link-local peers, IPv6
//! multicast, subnet broadcasts) are the lab's (`cargo xtask lab`).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Result;
use crate::binary::{signal, sigterm, spawn, wait_at_most};

/// A multicast group of the organisation-local scope (239.255.0.0/16), unlikely to be used.
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 1);

/// A peer on 127.0.0.1 that sends its multicast datagrams out of `lo`.
fn multicast_peer() -> Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(socket)
}

/// `[::ffff:0.0.0.0]` is the IPv4 wildcard: the announce line says it serves IPv4 alone, and
/// a request to 127.0.0.2 is answered from 127.0.0.2, so that a connected client takes it.
#[test]
fn the_mapped_wildcard_answers_from_the_address_asked() -> Result {
    let server = spawn(&["--bind", "[::ffff:0.0.0.0]:0", "--quiet"])?;
    assert!(
        server.announce.ends_with(" (IPv4 only)"),
        "{}",
        server.announce
    );
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    client.connect(("127.0.0.2", server.addr.port()))?;
    client.send(b"Hello Server!!")?;
    let mut buf = [0; 64];
    let len = client.recv(&mut buf)?;
    assert_eq!(&buf[..len], b"Access count: 1");
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    Ok(())
}

/// A group joined with `--join GROUP%lo` is answered, from 127.0.0.1; a second server that
/// joined nothing gets nothing sent to that group on its port, though the host (the first
/// server) is a member: `IP_MULTICAST_ALL` is off. Skipped, with the reason, where `lo`
/// takes no multicast.
#[test]
fn a_joined_group_is_answered_and_a_group_not_joined_is_not_received() -> Result {
    let join = format!("{GROUP}%lo");
    let member = spawn(&["--bind", "0.0.0.0:0", "--quiet", "--join", &join])?;
    let peer = multicast_peer()?;
    if let Err(e) = peer.send_to(b"anyone there?", (GROUP, member.addr.port())) {
        eprintln!("SKIP a_joined_group_is_answered: cannot send to {GROUP} on lo: {e}");
        return Ok(());
    }
    let mut buf = [0; 64];
    let (len, from) = peer.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"Access count: 1");
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], member.addr.port())));

    let other = spawn(&["--bind", "0.0.0.0:0", "--quiet", "--answer-group"])?;
    peer.send_to(b"to the group", (GROUP, other.addr.port()))?;
    // Then a unicast datagram, answered: by then the group's, had it come, was read.
    let unicast = SocketAddr::from(([127, 0, 0, 1], other.addr.port()));
    peer.send_to(b"to you", unicast)?;
    let (len, from) = peer.recv_from(&mut buf)?;
    assert_eq!((&buf[..len], from), (&b"Access count: 1"[..], unicast));
    for server in [member, other] {
        sigterm(server.child.id())?;
        let (code, _, err) = server.finish()?;
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(
                "summary: received 1, counted 1, duplicates 0, malformed 0, \
                 rate-limited 0, busy 0, loops 0, truncated 0,"
            ),
            "{err}"
        );
    }
    Ok(())
}

/// Datagrams that find the receive buffer full are dropped by the kernel before the server
/// sees them: the summary counts them apart from `received` (`SO_RXQ_OVFL`), and the two add
/// up to what was sent (loopback loses nothing else). The server is stopped (SIGSTOP) while
/// 200 datagrams of 1,000 bytes arrive into a buffer of 4 KiB.
#[test]
fn datagrams_the_kernel_dropped_are_counted_apart() -> Result {
    const SENT: u64 = 200;
    let server = spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--mode",
        "sink",
        "--quiet",
        "--recv-buffer",
        "4096",
        "--output",
        "json",
    ])?;
    let peer = UdpSocket::bind("127.0.0.1:0")?;
    signal(server.child.id(), "STOP")?;
    for _ in 0..SENT {
        peer.send_to(&[b'x'; 1000], server.addr)?;
    }
    signal(server.child.id(), "CONT")?;
    std::thread::sleep(Duration::from_millis(300));
    sigterm(server.child.id())?;
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    let summary = err
        .lines()
        .find_map(|line| line.strip_prefix("summary: "))
        .ok_or("no summary")?;
    let figure = |after: &str| -> Result<u64> {
        let rest = summary
            .split(after)
            .nth(1)
            .ok_or_else(|| format!("no `{after}` in {summary}"))?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Ok(digits.parse()?)
    };
    let received = figure("received ")?;
    let dropped = figure("dropped by the kernel ")?;
    assert!(dropped > 0, "{summary}");
    assert_eq!(received + dropped, SENT, "{summary}");
    assert!(summary.contains(&format!(
        "dropped by the kernel {dropped} (receive buffer full)"
    )));
    assert!(
        out.contains(&format!("\"kernel_dropped\":{dropped},")),
        "{out}"
    );
    Ok(())
}

/// `--recv-buffer` above the kernel's cap is granted the cap, and the server says so after
/// the announce line, with the sysctl to raise. Skipped where the cap is too high to pass.
#[test]
fn a_receive_buffer_over_the_cap_is_named_with_the_sysctl() -> Result {
    let Some(rmem_max) = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
    else {
        eprintln!("SKIP a_receive_buffer_over_the_cap: no /proc/sys/net/core/rmem_max");
        return Ok(());
    };
    let asked = rmem_max * 2 + 4096;
    if asked > i32::MAX as usize {
        eprintln!("SKIP a_receive_buffer_over_the_cap: net.core.rmem_max is {rmem_max}");
        return Ok(());
    }
    let asked = asked.to_string();
    let server = spawn(&["--bind", "127.0.0.1:0", "--quiet", "--recv-buffer", &asked])?;
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    let warning = err.lines().next().unwrap_or_default();
    assert!(
        warning.contains(&format!("--recv-buffer {asked}: the kernel granted "))
            && warning.contains("sysctl -w net.core.rmem_max="),
        "{err}"
    );
    Ok(())
}

/// `--join` refuses what cannot work before serving: usage errors exit 2 and say what to
/// write; an interface that does not exist exits 1 and says how to list them.
#[test]
fn join_mistakes_are_named() -> Result {
    for (args, says) in [
        (&["--join", "192.0.2.1%lo"][..], "not a multicast address"),
        (&["--join", "239.1.2.3"], "names no interface"),
        (&["--join", "239.1.2.3%"], "names no interface"),
        (
            &["--bind", "127.0.0.1:0", "--join", "239.1.2.3%lo"],
            "bind a wildcard address",
        ),
        (
            &["--bind", "0.0.0.0:0", "--join", "ff12::1%lo"],
            "an IPv6 group needs an IPv6 socket",
        ),
        (
            &["--bind", "[::]:0", "--ipv6-only", "--join", "239.1.2.3%lo"],
            "an IPv4 group needs a socket that serves IPv4",
        ),
        (
            &["--bind", "[::ffff:0.0.0.0]:0", "--ipv6-only"],
            "drop --ipv6-only",
        ),
        (&["--recv-buffer", "12"], "between 1024 and"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
            .args(args)
            .args(["--idle", "1s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let status = wait_at_most(&mut child, Duration::from_secs(10))?;
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .ok_or("no stderr")?
            .read_to_string(&mut err)?;
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args([
            "--bind",
            "0.0.0.0:0",
            "--join",
            "239.1.2.3%no-such-if0",
            "--idle",
            "1s",
        ])
        .output()?;
    let err = String::from_utf8(output.stderr)?;
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--join 239.1.2.3%no-such-if0") && err.contains("ip link"),
        "{err}"
    );
    Ok(())
}
