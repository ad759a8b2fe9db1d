//! `--pcap FILE` and `--hexdump` in every mode of the spawned client: the capture is read back
//! (`proto::capture::read_capture`) and compared with what the peer received and answered.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use proto::capture::{Captured, read_capture};

use crate::{Result, client, ipv6_loopback, peer, text};

/// A file in the tests' scratch folder, removed when the test ends, failed or not.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let thread = format!("{:?}", std::thread::current().id()).replace(['(', ')'], "");
        let unique = format!("{name}-{}-{thread}.pcap", std::process::id());
        Scratch(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique))
    }

    fn arg(&self) -> Result<&str> {
        Ok(self.0.to_str().ok_or("a scratch path that is not UTF-8")?)
    }

    fn read(&self) -> Result<Vec<Captured>> {
        Ok(read_capture(&std::fs::read(&self.0)?)?)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A peer on `ip` that answers every datagram with `re: ` and the datagram.
fn echo_peer(ip: &str) -> Result<crate::Peer> {
    peer(ip, |s, from, got| {
        let mut answer = b"re: ".to_vec();
        answer.extend_from_slice(got);
        s.send_to(&answer, from).map(drop)
    })
}

/// Checks that `captured` is, in order, each of `sent` from the client to `server` followed
/// by its answer, all with valid lengths and checksums, from one client address of `server`'s
/// family on loopback.
fn assert_exchanges(captured: &[Captured], server: SocketAddr, sent: &[Vec<u8>]) -> Result {
    assert_eq!(captured.len(), 2 * sent.len(), "{captured:?}");
    let me = captured.first().ok_or("an empty capture")?.src;
    assert_eq!(me.ip(), server.ip(), "the client's own loopback address");
    assert_ne!(me.port(), 0);
    for (pair, request) in captured.chunks(2).zip(sent) {
        let [out, back] = pair else {
            return Err("an odd frame".into());
        };
        assert_eq!(
            (out.src, out.dst, &out.payload, out.len),
            (me, server, request, request.len())
        );
        let answer = [b"re: ", &request[..]].concat();
        assert_eq!(
            (back.src, back.dst, &back.payload, back.len),
            (server, me, &answer, answer.len())
        );
        assert!(out.valid && back.valid, "lengths and checksums: {pair:?}");
        assert!(out.at <= back.at, "timestamps in order");
    }
    Ok(())
}

#[test]
fn messages_are_captured_over_ipv4_and_ipv6() -> Result {
    for ip in ["127.0.0.1", "::1"] {
        if ip == "::1" && !ipv6_loopback()? {
            continue;
        }
        let file = Scratch::new("messages");
        let peer = echo_peer(ip)?;
        let server = peer.addr.to_string();
        let out = client(
            &[
                "--server",
                &server,
                "--pcap",
                file.arg()?,
                "Hello Server!!",
                "",
            ],
            None,
        )?;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let sent = peer.received()?;
        assert_eq!(sent, [b"Hello Server!!".to_vec(), Vec::new()]);
        assert_exchanges(&file.read()?, peer_addr(&server)?, &sent)?;
    }
    Ok(())
}

fn peer_addr(server: &str) -> Result<SocketAddr> {
    Ok(server.parse()?)
}

#[test]
fn stdin_lines_and_ping_are_captured() -> Result {
    let file = Scratch::new("stdin");
    let peer = echo_peer("127.0.0.1")?;
    let addr = peer.addr;
    let out = client(
        &["--server", &addr.to_string(), "--pcap", file.arg()?],
        Some(b"line one\n\xff\x00binary\n"),
    )?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = peer.received()?;
    assert_eq!(sent.len(), 2);
    assert_exchanges(&file.read()?, addr, &sent)?;

    let file = Scratch::new("ping");
    let peer = echo_peer("127.0.0.1")?;
    let addr = peer.addr;
    let server = addr.to_string();
    let args = [
        "ping",
        "--server",
        &server,
        "--count",
        "3",
        "--interval",
        "10ms",
    ];
    let out = client(&[&args[..], &["--pcap", file.arg()?]].concat(), None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = peer.received()?;
    assert_eq!(sent.len(), 3);
    assert_exchanges(&file.read()?, addr, &sent)
}

/// bench sends in batches (`sendmmsg`) and receives in batches into 2,048-byte slots: every
/// request is captured, and a longer reply is recorded cut, with its real length.
#[test]
fn bench_batches_and_cut_replies_are_captured() -> Result {
    let file = Scratch::new("bench");
    let peer = echo_peer("127.0.0.1")?;
    let addr = peer.addr;
    let server = addr.to_string();
    let args = [
        "bench", "--server", &server, "--count", "40", "--window", "8", "--warmup", "0s",
    ];
    let out = client(
        &[&args[..], &["--size", "3000", "--pcap", file.arg()?]].concat(),
        None,
    )?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = peer.received()?;
    let captured = file.read()?;
    let (requests, replies): (Vec<&Captured>, Vec<&Captured>) =
        captured.iter().partition(|c| c.dst == addr);
    let requests: Vec<Vec<u8>> = requests.iter().map(|c| c.payload.clone()).collect();
    assert_eq!(requests, sent, "every request the peer got, in order");
    assert!(!replies.is_empty() && replies.len() <= sent.len());
    for reply in replies {
        assert_eq!(
            (reply.src, reply.len, reply.payload.len()),
            (addr, 3004, 2048)
        );
        assert!(
            sent.iter()
                .any(|s| [b"re: ", &s[..]].concat()[..2048] == reply.payload[..])
        );
        assert!(reply.valid, "a cut reply keeps its real lengths: {reply:?}");
    }
    assert!(captured.iter().all(|c| c.valid));
    Ok(())
}

#[test]
fn an_unwritable_capture_file_stops_the_run_before_anything_is_sent() -> Result {
    let peer = echo_peer("127.0.0.1")?;
    let server = peer.addr.to_string();
    for args in [
        &["--server", &server, "hello"][..],
        &["ping", "--server", &server, "--count", "1"],
        &["bench", "--server", &server, "--count", "1"],
    ] {
        let out = client(
            &[args, &["--pcap", "/nonexistent-udptalk-dir/x.pcap"][..]].concat(),
            None,
        )?;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(
                "error: cannot write the capture file /nonexistent-udptalk-dir/x.pcap: No such \
                 file or directory"
            ),
            "{args:?}: {err}"
        );
        assert!(err.contains("nothing was sent"), "{err}");
    }
    assert!(peer.received()?.is_empty());
    Ok(())
}

#[test]
fn hexdump_shows_each_datagram_beside_the_tutorial_lines() -> Result {
    let peer = echo_peer("127.0.0.1")?;
    let server = peer.addr;
    let out = client(
        &[
            "--server",
            &server.to_string(),
            "--hexdump",
            "Hello Server!!\u{7f} and more",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(matches!(server.ip(), IpAddr::V4(_)));
    assert_eq!(
        text(&out.stdout),
        format!(
            "> 24 bytes to {server}\n\
             0000:   48 65 6c 6c 6f 20 53 65  72 76 65 72 21 21 7f 20   Hello Server!!. \n\
             0010:   61 6e 64 20 6d 6f 72 65                            and more\n\
             Sent a message.\n\
             < 28 bytes from {server}\n\
             0000:   72 65 3a 20 48 65 6c 6c  6f 20 53 65 72 76 65 72   re: Hello Server\n\
             0010:   21 21 7f 20 61 6e 64 20  6d 6f 72 65               !!. and more\n\
             Server message: re: Hello Server!!\\x7f and more\n"
        )
    );
    peer.received()?;
    Ok(())
}
