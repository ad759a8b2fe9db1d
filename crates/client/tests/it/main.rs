//! Client tests: the `udptalk-client` binary spawned as a user runs it, against small
//! `std::net::UdpSocket` peers on loopback that answer, stay silent, or misbehave on purpose.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::{Envelope, ErrorCode};

mod retries;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A scripted server: for each datagram received (at most `expect` of them, waiting at most 5 s
/// for each), `answer` returns the datagrams to send back. Returns what it received.
fn peer(
    ip: &str,
    expect: usize,
    answer: impl Fn(&UdpSocket, SocketAddr, &[u8]) -> std::io::Result<()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<Vec<Vec<u8>>>)> {
    let socket = UdpSocket::bind(format!("{ip}:0"))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let addr = socket.local_addr()?;
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0; 65_536];
        while seen.len() < expect {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                break;
            };
            seen.push(buf[..len].to_vec());
            if answer(&socket, from, &buf[..len]).is_err() {
                break;
            }
        }
        seen
    });
    Ok((addr, handle))
}

fn client(args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    if let Some(bytes) = stdin {
        input.write_all(bytes)?;
    }
    drop(input);
    Ok(child.wait_with_output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn messages_are_udp_client1() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let out = client(&["--server", &addr.to_string(), "Hello Server!!"], None)?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: Hello Client!!\n"
    );
    assert_eq!(
        (out.status.code(), text(&out.stderr).as_str()),
        (Some(0), "")
    );
    assert_eq!(
        peer.join().map_err(|_| "peer panicked")?,
        vec![b"Hello Server!!".to_vec()]
    );
    Ok(())
}

#[test]
fn stdin_lines_are_udp_client2_byte_for_byte() -> Result {
    let (addr, peer) = peer("127.0.0.1", 4, |s, from, got| {
        s.send_to(format!("Access count: {}", got.len()).as_bytes(), from)
            .map(drop)
    })?;
    let out = client(
        &["--server", &addr.to_string()],
        Some(b"one\r\n\ntw\xffo\n\xe3\x81\x82"),
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nAccess count: 3\nSent a message.\nAccess count: 0\n\
         Sent a message.\nAccess count: 4\nSent a message.\nAccess count: 3\n"
    );
    assert_eq!(out.status.code(), Some(0));
    let seen = peer.join().map_err(|_| "peer panicked")?;
    assert_eq!(
        seen,
        vec![
            b"one".to_vec(),
            vec![],
            b"tw\xffo".to_vec(),
            "あ".as_bytes().to_vec()
        ]
    );
    Ok(())
}

#[test]
fn closed_port_exits_4_at_once() -> Result {
    let closed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let started = Instant::now();
    let out = client(
        &[
            "--server",
            &closed.to_string(),
            "--timeout",
            "30s",
            "a",
            "b",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(4));
    // A refusal comes back from the kernel at once: far under the 30 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        text(&out.stderr).contains(&format!("no server is listening on {closed}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\n",
        "the run ends at the first refusal"
    );
    Ok(())
}

#[test]
fn silent_port_exits_3_after_one_send_per_message() -> Result {
    let (addr, peer) = peer("127.0.0.1", 3, |_, _, _| Ok(()))?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--timeout",
            "200ms",
            "a",
            "b",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert_eq!(
        err.matches(&format!("error: no reply from {addr} within 200ms"))
            .count(),
        2,
        "{err}"
    );
    assert_eq!(
        peer.join().map_err(|_| "peer panicked")?.len(),
        2,
        "plain mode never resends"
    );
    Ok(())
}

#[test]
fn replies_from_other_addresses_are_ignored() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |_, from, _| {
        let stranger = UdpSocket::bind("127.0.0.1:0")?;
        stranger.send_to(b"Access count: 999", from).map(drop)
    })?;
    let out = client(
        &["--server", &addr.to_string(), "--timeout", "300ms", "hi"],
        None,
    )?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "the stranger's datagram is no answer"
    );
    assert_eq!(text(&out.stdout), "Sent a message.\n");
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

#[test]
fn long_replies_are_cut_and_reported() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let out = client(&["--server", &addr.to_string(), "--buffer", "5", "x"], None)?;
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: Hello\n"
    );
    assert!(
        text(&out.stderr).contains("truncated: 14 bytes, buffer 5"),
        "{}",
        text(&out.stderr)
    );
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

#[test]
fn oversize_message_is_refused_before_sending() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |_, _, _| Ok(()))?;
    let big = "a".repeat(proto::MAX_PAYLOAD_V4 + 1);
    let out = client(&["--server", &addr.to_string(), "small", &big], None)?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "",
        "nothing is sent when one message cannot be"
    );
    assert!(text(&out.stderr).contains("over the UDP payload limit of 65507 bytes"));
    assert!(peer.join().map_err(|_| "peer panicked")?.is_empty());
    Ok(())
}

/// A JSON peer that first answers with a stale id, then with the right one.
#[test]
fn json_mode_matches_reply_ids() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |s, from, got| {
        let Ok(Envelope::Request { id, body, .. }) = Envelope::decode(got, 65_535) else {
            return s.send_to(b"not a request", from).map(drop);
        };
        let stale = Envelope::Reply {
            id: id.next(),
            body: "stale".into(),
        };
        s.send_to(&stale.encode_to_vec(), from)?;
        s.send_to(
            &Envelope::Reply {
                id,
                body: format!("re: {body}"),
            }
            .encode_to_vec(),
            from,
        )
        .map(drop)
    })?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "こんにちは",
        ],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: re: こんにちは\n"
    );
    assert_eq!(out.status.code(), Some(0));
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

#[test]
fn json_error_envelope_exits_6() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |s, from, got| {
        let error = Envelope::Error {
            id: Envelope::decode(got, 65_535)
                .ok()
                .and_then(|request| request.id()),
            code: ErrorCode::TooLarge,
            message: "too big".into(),
        };
        s.send_to(&error.encode_to_vec(), from).map(drop)
    })?;
    let out = client(
        &["--server", &addr.to_string(), "--encoding", "json", "x"],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer error: too_large: too big\n"
    );
    assert_eq!(out.status.code(), Some(6));
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

#[test]
fn json_mode_says_when_the_server_speaks_plain() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |s, from, _| {
        s.send_to(b"Access count: 1", from).map(drop)
    })?;
    let out = client(
        &["--server", &addr.to_string(), "--encoding", "json", "x"],
        None,
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a JSON envelope"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("drop --encoding json"));
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

/// A host name may resolve to several addresses (`localhost` to ::1 and 127.0.0.1, in either
/// order): a refusal from one moves the message on to the next. Driven through the library,
/// since this machine's resolver may give only one address for `localhost`.
#[test]
fn a_refused_address_moves_on_to_the_next() -> Result {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => {}
        // No IPv6 on this machine (EADDRNOTAVAIL, or EAFNOSUPPORT: 97 on Linux): nothing to test.
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97) =>
        {
            eprintln!("skipped: this machine has no IPv6 loopback ({e})");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let closed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let (addr, peer) = peer("[::1]", 2, |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let mut config = client::Config::new(closed);
    config.servers.push(addr);
    let input = client::Input::Messages(vec!["one".into(), "two".into()]);
    let mut out = Vec::new();
    let report = client::run(&config, input, &mut out)?;
    assert_eq!(
        text(&out),
        "Sent a message.\nServer message: Hello Client!!\nSent a message.\nServer message: Hello Client!!\n"
    );
    assert_eq!((report.answered, report.exit_code()), (2, 0));
    assert_eq!(
        peer.join().map_err(|_| "peer panicked")?,
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    Ok(())
}

#[test]
fn bad_usage_exits_2() -> Result {
    for args in [
        &["--server", "nohost"][..],
        &["--timeout", "0s"],
        &["--buffer", "70000"],
        &["--server", "0.0.0.0:5"],
    ] {
        let out = client(args, None)?;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    Ok(())
}

/// `--help` is what users read first: a snapshot, so that a change to it is a reviewed change
/// (`UPDATE_EXPECT=1 cargo test` refreshes it).
#[test]
fn help_says_what_the_client_does() -> Result {
    let out = client(&["--help"], None)?;
    assert_eq!(out.status.code(), Some(0));
    expect_test::expect_file!["help.txt"].assert_eq(&text(&out.stdout));
    Ok(())
}
