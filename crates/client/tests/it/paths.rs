//! Real paths (issue 10): the source address and port, the socket options (--ttl, --tos,
//! --dont-fragment) as traced, the address forms --server refuses with a hint, and the
//! collecting of replies from any address (--broadcast). What needs a router, a firewall or a
//! smaller MTU is the lab's (`cargo xtask lab`): loopback has none.

use std::net::UdpSocket;

use super::{Result, client, ipv6_loopback, peer, text};

/// A peer that answers each datagram with the address it came from.
fn who_sent() -> Result<super::Peer> {
    peer("127.0.0.1", |s, from, _| {
        s.send_to(from.to_string().as_bytes(), from).map(drop)
    })
}

#[test]
fn the_server_sees_the_source_asked_for() -> Result {
    let peer = who_sent()?;
    let server = peer.addr.to_string();
    let out = client(&["--server", &server, "--source", "127.0.0.2", "hi"], None)?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("Server message: 127.0.0.2:"), "{stdout}");
    // With a port: a port free a moment ago on 127.0.0.2.
    let port = UdpSocket::bind("127.0.0.2:0")?.local_addr()?.port();
    let source = format!("127.0.0.2:{port}");
    let out = client(&["--server", &server, "--source", &source, "hi"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Sent a message.\nServer message: {source}\n")
    );
    assert_eq!(peer.received()?.len(), 2);
    Ok(())
}

#[test]
fn a_source_that_is_not_ours_or_of_another_family_is_refused() -> Result {
    let peer = who_sent()?;
    let server = peer.addr.to_string();
    // 192.0.2.1 (TEST-NET-1) is no address of this host: bind fails, nothing is sent.
    for (source, says) in [
        ("192.0.2.1", "not an address of this host"),
        ("[::1]:4000", "IPv6 address and --server"),
        ("nohost", "127.0.0.2:4000"),
    ] {
        let out = client(&["--server", &server, "--source", source, "hi"], None)?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{source}: {err}");
        assert!(err.contains(says), "{source}: {err}");
    }
    assert!(peer.received()?.is_empty());
    Ok(())
}

#[test]
fn ttl_tos_and_dont_fragment_are_set_and_traced() -> Result {
    let peer = who_sent()?;
    let server = peer.addr.to_string();
    let out = client(
        &[
            "--server",
            &server,
            "--ttl",
            "7",
            "--tos",
            "184",
            "--dont-fragment",
            "--trace",
            "hi",
        ],
        None,
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for call in [
        "setsockopt(IP_TTL, 7)",
        "setsockopt(IP_TOS, 184)",
        "setsockopt(IP_MTU_DISCOVER, IP_PMTUDISC_DO)",
        "setsockopt(IP_RECVERR, 1)",
    ] {
        assert!(err.contains(call), "{call} not in: {err}");
    }
    // Set before bind and connect, as the kernel wants them.
    let at = |what: &str| err.find(what).unwrap_or(usize::MAX);
    assert!(
        at("IP_TTL") < at("bind(") && at("bind(") < at("connect("),
        "{err}"
    );
    assert_eq!(peer.received()?.len(), 1);
    Ok(())
}

#[test]
fn hop_limit_and_traffic_class_over_ipv6() -> Result {
    if !ipv6_loopback()? {
        return Ok(());
    }
    let peer = peer("::1", |s, from, _| {
        s.send_to(from.to_string().as_bytes(), from).map(drop)
    })?;
    let server = peer.addr.to_string();
    let out = client(
        &[
            "--server",
            &server,
            "--hop-limit",
            "9",
            "--tos",
            "32",
            "--dont-fragment",
            "--trace",
            "hi",
        ],
        None,
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for call in [
        "setsockopt(IPV6_UNICAST_HOPS, 9)",
        "setsockopt(IPV6_TCLASS, 32)",
        "setsockopt(IPV6_DONTFRAG, 1)",
        "setsockopt(IPV6_RECVERR, 1)",
    ] {
        assert!(err.contains(call), "{call} not in: {err}");
    }
    assert_eq!(peer.received()?.len(), 1);
    Ok(())
}

#[test]
fn an_unknown_interface_is_named_with_how_to_list_them() -> Result {
    let peer = who_sent()?;
    let server = peer.addr.to_string();
    for flag in ["--interface", "--multicast-if"] {
        let out = client(&["--server", &server, flag, "nosuch0", "hi"], None)?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains("no interface named nosuch0") && err.contains("`ip link`"),
            "{flag}: {err}"
        );
    }
    assert!(peer.received()?.is_empty());
    Ok(())
}

#[test]
fn address_forms_that_cannot_work_say_what_to_write() -> Result {
    for (server, says) in [
        ("::1", "[::1]:PORT"),
        ("127.0.0.1", "127.0.0.1:PORT"),
        ("[ff02::1]:9", "[ff02::1%IFNAME]:9"),
        ("[fe80::1]:9", "%IFNAME"),
        ("[fe80::1%nosuch0]:9", "`ip link`"),
        ("255.255.255.255:9", "--broadcast"),
    ] {
        let out = client(&["--server", server, "hi"], None)?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{server}: {err}");
        assert!(err.contains(says), "{server}: {err}");
        assert!(text(&out.stdout).is_empty(), "{server}: sent anyway");
    }
    Ok(())
}

#[test]
fn a_link_local_scope_by_name_or_index_is_accepted() -> Result {
    // `lo` has no link-local address: the datagram cannot go, but the address is read (the
    // error is the system's, not a refusal of the form).
    for server in ["[fe80::1%lo]:9", "[fe80::1%1]:9"] {
        let out = client(&["--server", server, "--timeout", "100ms", "hi"], None)?;
        let err = text(&out.stderr);
        assert!(!err.contains("cannot use --server"), "{server}: {err}");
    }
    Ok(())
}

/// With --broadcast the socket is not connected: replies from any address are printed, each
/// with who sent it (on loopback, a peer answering from two addresses stands for two hosts).
#[test]
fn with_broadcast_replies_from_every_address_are_collected() -> Result {
    let other = UdpSocket::bind("127.0.0.3:0")?;
    let other_addr = other.local_addr()?;
    let peer = peer("127.0.0.1", move |s, from, got| {
        s.send_to(got, from)?;
        other.send_to(b"second host", from).map(drop)
    })?;
    let server = peer.addr.to_string();
    let out = client(
        &[
            "--server",
            &server,
            "--broadcast",
            "--timeout",
            "300ms",
            "hi",
        ],
        None,
    )?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("Reply from {server}: hi\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Reply from {other_addr}: second host\n")),
        "{stdout}"
    );
    // JSON Lines: one group_reply per host.
    let out = client(
        &[
            "--server",
            &server,
            "--broadcast",
            "--timeout",
            "300ms",
            "--output",
            "json",
            "hi",
        ],
        None,
    )?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let from: Vec<String> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["event"] == "group_reply")
        .map(|v| v["from"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(from, [server.clone(), other_addr.to_string()]);
    assert_eq!(peer.received()?.len(), 2);
    Ok(())
}

#[test]
fn with_broadcast_and_no_reply_the_exit_is_3() -> Result {
    let silent = UdpSocket::bind("127.0.0.1:0")?;
    let server = silent.local_addr()?.to_string();
    let out = client(
        &[
            "--server",
            &server,
            "--broadcast",
            "--timeout",
            "200ms",
            "hi",
        ],
        None,
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no reply from any host") && err.contains("--answer-group"),
        "{err}"
    );
    Ok(())
}

#[test]
fn ping_and_bench_set_the_same_options() -> Result {
    let peer = who_sent()?;
    let server = peer.addr.to_string();
    for command in [
        &["ping", "-c", "1"][..],
        &["bench", "--count", "3", "--warmup", "0", "--duration", "2s"],
    ] {
        let mut args = command.to_vec();
        args.extend([
            "--server",
            &server,
            "--source",
            "127.0.0.2",
            "--ttl",
            "3",
            "--tos",
            "8",
            "--trace",
        ]);
        let out = client(&args, None)?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command:?}: {err}");
        for call in [
            "setsockopt(IP_TTL, 3)",
            "setsockopt(IP_TOS, 8)",
            "bind(127.0.0.2:0)",
        ] {
            assert!(err.contains(call), "{command:?}: {call} not in: {err}");
        }
    }
    peer.received()?;
    Ok(())
}
