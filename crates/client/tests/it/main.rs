//! Client tests: the `udptalk-client` binary spawned as a user runs it, against small
//! `std::net::UdpSocket` peers on loopback that answer, stay silent, or misbehave on purpose.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::{Envelope, ErrorCode};

mod capture;
mod encoding;
mod hostile;
mod measure;
mod paths;
mod retries;
mod shell;
mod stops;
#[cfg(unix)]
mod terminal;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A scripted server on loopback, port 0: `answer` is called for each datagram received, until
/// [`Peer::received`] stops it.
struct Peer {
    addr: SocketAddr,
    socket: UdpSocket,
    thread: JoinHandle<Vec<Vec<u8>>>,
}

fn peer(
    ip: &str,
    answer: impl Fn(&UdpSocket, SocketAddr, &[u8]) -> std::io::Result<()> + Send + 'static,
) -> Result<Peer> {
    let socket = UdpSocket::bind(format!("{ip}:0"))?;
    // Only a safety net for a test that fails before it stops its peer: never waited out.
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let addr = socket.local_addr()?;
    let own = socket.try_clone()?;
    let thread = thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0; 65_536];
        while let Ok((len, from)) = own.recv_from(&mut buf) {
            // A datagram from the peer's own address is `received` asking it to stop.
            if from == addr {
                break;
            }
            seen.push(buf[..len].to_vec());
            if answer(&own, from, &buf[..len]).is_err() {
                break;
            }
        }
        seen
    });
    Ok(Peer {
        addr,
        socket,
        thread,
    })
}

impl Peer {
    /// Stops the peer and returns every datagram it received. Called once the client has
    /// exited, everything the client sent is queued ahead of the stop: nothing is waited for.
    fn received(self) -> Result<Vec<Vec<u8>>> {
        self.socket.send_to(b"stop", self.addr)?;
        Ok(self.thread.join().map_err(|_| "peer panicked")?)
    }
}

/// Whether this machine has an IPv6 loopback; says `skipped: …` on stderr when it has not.
fn ipv6_loopback() -> Result<bool> {
    match UdpSocket::bind("[::1]:0") {
        Ok(_) => Ok(true),
        // EADDRNOTAVAIL, or EAFNOSUPPORT (97 on Linux): no IPv6 here.
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97) =>
        {
            eprintln!("skipped: no IPv6 loopback ({e})");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
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
        match input.write_all(bytes) {
            // The client may stop reading (and exit) before the end: that is its answer.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    drop(input);
    Ok(child.wait_with_output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn messages_are_udp_client1() -> Result {
    let peer = peer("127.0.0.1", |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let out = client(
        &["--server", &peer.addr.to_string(), "Hello Server!!"],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: Hello Client!!\n"
    );
    assert_eq!(
        (out.status.code(), text(&out.stderr).as_str()),
        (Some(0), "")
    );
    assert_eq!(peer.received()?, vec![b"Hello Server!!".to_vec()]);
    Ok(())
}

#[test]
fn stdin_lines_are_udp_client2_byte_for_byte() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| {
        s.send_to(format!("Access count: {}", got.len()).as_bytes(), from)
            .map(drop)
    })?;
    let out = client(
        &["--server", &peer.addr.to_string()],
        Some(b"one\r\n\ntw\xffo\n\xe3\x81\x82"),
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nAccess count: 3\nSent a message.\nAccess count: 0\n\
         Sent a message.\nAccess count: 4\nSent a message.\nAccess count: 3\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        peer.received()?,
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
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let addr = peer.addr;
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
        peer.received()?,
        [b"a".to_vec(), b"b".to_vec()],
        "plain mode never resends"
    );
    Ok(())
}

#[test]
fn replies_from_other_addresses_are_ignored() -> Result {
    let peer = peer("127.0.0.1", |_, from, _| {
        let stranger = UdpSocket::bind("127.0.0.1:0")?;
        stranger.send_to(b"Access count: 999", from).map(drop)
    })?;
    let out = client(
        &[
            "--server",
            &peer.addr.to_string(),
            "--timeout",
            "300ms",
            "hi",
        ],
        None,
    )?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "the stranger's datagram is no answer"
    );
    assert_eq!(text(&out.stdout), "Sent a message.\n");
    peer.received()?;
    Ok(())
}

#[test]
fn long_replies_are_cut_and_reported() -> Result {
    let peer = peer("127.0.0.1", |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let out = client(
        &["--server", &peer.addr.to_string(), "--buffer", "5", "x"],
        None,
    )?;
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: Hello\n"
    );
    assert!(
        text(&out.stderr)
            .contains("reply cut to 5 of 14 bytes; raise --buffer (now 5) to see all of it"),
        "{}",
        text(&out.stderr)
    );
    peer.received()?;
    Ok(())
}

#[test]
fn oversize_message_is_refused_before_sending() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let big = "a".repeat(proto::MAX_PAYLOAD_V4 + 1);
    let out = client(&["--server", &peer.addr.to_string(), "small", &big], None)?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "",
        "nothing is sent when one message cannot be"
    );
    assert!(
        text(&out.stderr).contains(
            "message 2 is 65,508 bytes, over the UDP payload limit of 65,507 bytes towards \
             this server; nothing was sent: split it into shorter messages"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(peer.received()?.is_empty());
    Ok(())
}

/// A JSON peer answering each request with its body.
fn echo(s: &UdpSocket, from: SocketAddr, got: &[u8]) -> std::io::Result<()> {
    let Ok(Envelope::Request { id, body, .. }) = Envelope::decode(got, 65_535) else {
        return Err(std::io::ErrorKind::InvalidData.into());
    };
    s.send_to(&Envelope::Reply { id, body }.encode_to_vec(), from)
        .map(drop)
}

/// A line too long for an envelope stops the run, saying what was sent and what the limit for
/// a line is (the payload limit less the envelope around it).
#[test]
fn json_line_over_the_limit_says_what_was_sent() -> Result {
    let peer = peer("127.0.0.1", echo)?;
    let mut input = b"one\ntwo\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 70_000));
    input.extend(b"\nthree\n");
    let out = client(
        &["--server", &peer.addr.to_string(), "--encoding", "json"],
        Some(&input),
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\none\nSent a message.\ntwo\n"
    );
    let err = text(&out.stderr);
    // The envelope's size depends on the random id's digits: the limit is 65,4xx bytes.
    assert!(
        err.contains("error: input line 3 is 70,000 bytes, over the 65,4"),
        "{err}"
    );
    assert!(
        err.contains(
            " bytes a JSON envelope can carry towards this server; lines 1-2 were sent, this \
             line and the rest were not: split it into shorter lines"
        ),
        "{err}"
    );
    assert_eq!(peer.received()?.len(), 2);
    Ok(())
}

/// Escaping makes a body longer on the wire than on the line: the refusal says both sizes.
#[test]
fn json_escaping_counts_towards_the_limit() -> Result {
    let closed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let mut config = client::Config::new(closed);
    config.encoding = client::Encoding::Json;
    let mut json = client::Client::connect(&config)?;
    let quotes = vec![b'"'; 40_000];
    let refused = json
        .prepare(&quotes, client::Which::Message(1))
        .map(drop)
        .map_err(|e| e.to_string());
    let Err(refused) = refused else {
        return Err("40,000 quotes (80,000 bytes escaped) fit in one envelope".into());
    };
    assert!(
        refused
            .starts_with("message 1 is 40,000 bytes, 80,000 once escaped as JSON, over the 65,4"),
        "{refused}"
    );
    assert!(refused.contains("; nothing was sent"), "{refused}");
    Ok(())
}

/// A JSON peer that first answers with a stale id, then with the right one.
#[test]
fn json_mode_matches_reply_ids() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| {
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
            &peer.addr.to_string(),
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
    peer.received()?;
    Ok(())
}

#[test]
fn json_error_envelope_exits_6() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| {
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
        &[
            "--server",
            &peer.addr.to_string(),
            "--encoding",
            "json",
            "x",
        ],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer error: too_large: too big\n"
    );
    assert_eq!(out.status.code(), Some(6));
    peer.received()?;
    Ok(())
}

/// Plain text and an envelope the client cannot read are different news, with different
/// remedies: drop --encoding json, or bring both sides to one version.
#[test]
fn json_mode_tells_plain_text_from_an_unreadable_envelope() -> Result {
    for (answer, expected, not_expected) in [
        (
            &b"Access count: 1"[..],
            "is not a JSON envelope",
            "cannot read",
        ),
        (
            br#"{"v":2,"id":1,"kind":"reply","body":"hi"}"#,
            "answered an envelope of version 2, and this client reads version 1; update one side",
            "drop --encoding json",
        ),
        (
            br#"{"v":1,"id":1,"kind":"shout","body":"hi"}"#,
            "answered an envelope this client cannot read (unknown_kind: ",
            "plain text",
        ),
    ] {
        let peer = peer("127.0.0.1", move |s, from, _| {
            s.send_to(answer, from).map(drop)
        })?;
        let out = client(
            &[
                "--server",
                &peer.addr.to_string(),
                "--encoding",
                "json",
                "x",
            ],
            None,
        )?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(not_expected), "{err}");
        if expected.contains("JSON envelope") {
            assert!(err.contains("the server speaks plain text: drop --encoding json"));
        }
        peer.received()?;
    }
    Ok(())
}

/// A host name may resolve to several addresses (`localhost` to ::1 and 127.0.0.1, in either
/// order): a refusal from one moves the message on to the next. Driven through the library,
/// since this machine's resolver may give only one address for `localhost`.
#[test]
fn a_refused_address_moves_on_to_the_next() -> Result {
    if !ipv6_loopback()? {
        return Ok(());
    }
    let closed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let peer = peer("[::1]", |s, from, _| {
        s.send_to(b"Hello Client!!", from).map(drop)
    })?;
    let mut config = client::Config::new(closed);
    config.servers.push(peer.addr);
    let input = client::Input::Messages(vec!["one".into(), "two".into()]);
    let mut out = Vec::new();
    let (report, end) = client::run(&config, input, &mut out, &client::Stop::new());
    assert_eq!(end?, client::End::Finished);
    assert_eq!(
        text(&out),
        "Sent a message.\nServer message: Hello Client!!\nSent a message.\nServer message: Hello Client!!\n"
    );
    assert_eq!((report.answered, report.lost), (2, 0));
    assert_eq!(peer.received()?, vec![b"one".to_vec(), b"two".to_vec()]);
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

/// A duration past what a clock can hold used to panic when added to the present (exit 101):
/// anything over a year is refused up front, naming the limit.
#[test]
fn durations_over_the_limit_are_refused() -> Result {
    // A port of this test's, never read: should a value be accepted, nothing leaves loopback
    // and the run still ends (--timeout 2s by default).
    let silent = UdpSocket::bind("127.0.0.1:0")?;
    let server = silent.local_addr()?.to_string();
    for option in ["--timeout", "--deadline"] {
        for value in ["18446744073709551615s", "366days"] {
            let out = client(&["--server", &server, option, value, "x"], None)?;
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{option} {value}: {err}");
            assert!(err.contains("365 days"), "{option} {value}: {err}");
            assert!(!err.contains("panicked"), "{option} {value}: {err}");
        }
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

/// A learner who sends a server's own words is told why no udptalk server answers them.
#[test]
fn sending_a_servers_answer_warns_that_it_will_not_be_answered() -> Result {
    let closed = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let out = client(
        &[
            "--server",
            &closed.to_string(),
            "--timeout",
            "5s",
            "Hello Client!!",
        ],
        None,
    )?;
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: `Hello Client!!` is what a server answers"),
        "{err}"
    );
    Ok(())
}
