//! `ping` and `bench`, spawned as users run them, against peers on loopback that answer as
//! udptalk-server's modes do (count, echo, hello; plain and JSON), stay silent, or act as a
//! sink; and against the real `udptalk-server` when it has been built beside this binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::probe::{SINK_REPORT_QUERY, SinkReport, probe_seq};
use proto::{Envelope, RECV_BUFFER};

use crate::{Peer, Result, client, peer, text};

/// The server modes a peer can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Count,
    Echo,
    Hello,
}

/// A peer that answers as `udptalk-server --mode MODE` does, in the encoding each datagram
/// came in (a JSON envelope is answered with a reply envelope of the same id).
fn server(mode: Mode) -> Result<Peer> {
    let count = Arc::new(AtomicU64::new(0));
    peer("127.0.0.1", move |s, from, got| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = |body: &[u8]| -> Vec<u8> {
            match mode {
                Mode::Count => format!("Access count: {n}").into_bytes(),
                Mode::Echo => body.to_vec(),
                Mode::Hello => b"Hello Client!!".to_vec(),
            }
        };
        let reply = match Envelope::decode(got, RECV_BUFFER) {
            Ok(Envelope::Request { id, body, .. }) => Envelope::Reply {
                id,
                body: String::from_utf8_lossy(&answer(body.as_bytes())).into_owned(),
            }
            .encode_to_vec(),
            _ => answer(got),
        };
        s.send_to(&reply, from).map(drop)
    })
}

/// A peer that answers nothing but the sink's report query, as `--mode sink` does.
fn sink() -> Result<Peer> {
    let datagrams = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    peer("127.0.0.1", move |s, from, got| {
        if got == SINK_REPORT_QUERY {
            let report = SinkReport {
                datagrams: datagrams.load(Ordering::SeqCst),
                bytes: bytes.load(Ordering::SeqCst),
                ..SinkReport::default()
            };
            let mut out = Vec::new();
            report.encode(&mut out);
            return s.send_to(&out, from).map(drop);
        }
        datagrams.fetch_add(1, Ordering::SeqCst);
        bytes.fetch_add(got.len() as u64, Ordering::SeqCst);
        Ok(())
    })
}

/// The `bench` line of `--output json` (an `exit` line follows it).
fn json_output(stdout: &[u8]) -> Result<serde_json::Value> {
    for line in String::from_utf8_lossy(stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if value["event"] == "bench" {
            return Ok(value);
        }
    }
    Err(format!("no bench line in {}", String::from_utf8_lossy(stdout)).into())
}

/// Runs `bench --server SERVER ARGS --output json`, checks that it exits `code`, and returns
/// its result object.
fn bench_json(server: SocketAddr, args: &[&str], code: i32) -> Result<serde_json::Value> {
    let server = server.to_string();
    let mut all = vec!["bench", "--server", &server];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = client(&all, None)?;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        text(&out.stderr)
    );
    json_output(&out.stdout)
}

fn number(value: &serde_json::Value, key: &str) -> Result<u64> {
    Ok(value[key].as_u64().ok_or(format!("no {key} in {value}"))?)
}

#[test]
fn ping_works_against_every_mode_and_encoding() -> Result {
    for mode in [Mode::Count, Mode::Echo, Mode::Hello] {
        for encoding in ["plain", "json"] {
            let what = format!("{mode:?} {encoding}");
            let peer = server(mode)?;
            let size = if encoding == "json" { "100" } else { "14" };
            let server = peer.addr.to_string();
            let out = client(
                &[
                    "ping",
                    "--server",
                    &server,
                    "--encoding",
                    encoding,
                    "-c",
                    "3",
                    "-i",
                    "0.05",
                    "--size",
                    size,
                ],
                None,
            )?;
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}: {stdout}{}",
                text(&out.stderr)
            );
            assert!(
                stdout.starts_with(&format!("PING {server}: {size} data bytes")),
                "{what}: {stdout}"
            );
            for seq in 1..=3 {
                assert!(
                    stdout.contains(&format!("from {server}: seq={seq} time=")),
                    "{what}: {stdout}"
                );
            }
            assert!(
                stdout.contains(&format!(
                    "--- {server} ping statistics ---\n3 packets transmitted, 3 received, 0% \
                     packet loss, time "
                )),
                "{what}: {stdout}"
            );
            assert!(
                stdout.contains("rtt min/avg/max/mdev = "),
                "{what}: {stdout}"
            );
            assert!(
                stdout.contains("rtt p50/p90/p99 = ")
                    && stdout.contains("0 duplicated, 0 reordered"),
                "{what}: {stdout}"
            );
            let received = peer.received()?;
            assert_eq!(received.len(), 3, "{what}");
            // Probes carry their number, and are the size asked for on the wire.
            for (i, datagram) in received.iter().enumerate() {
                assert_eq!(datagram.len().to_string(), size, "{what}");
                let seq = match Envelope::decode(datagram, RECV_BUFFER) {
                    Ok(Envelope::Request { body, ack, id }) => {
                        assert!(ack.is_some_and(|ack| !id.precedes(ack)), "{what}");
                        probe_seq(body.as_bytes())
                    }
                    _ => probe_seq(datagram),
                };
                assert_eq!(seq, Some(i as u64 + 1), "{what}");
            }
        }
    }
    Ok(())
}

#[test]
fn ping_against_a_silent_peer_reports_total_loss_and_exits_3() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let started = Instant::now();
    let out = client(
        &[
            "ping",
            "--server",
            &peer.addr.to_string(),
            "-c",
            "2",
            "-i",
            "0.1",
            "--timeout",
            "200ms",
        ],
        None,
    )?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("2 packets transmitted, 0 received, 100% packet loss"),
        "{stdout}"
    );
    // Two probes 0.1 s apart, the last awaited 0.2 s: 10 s is a wide margin.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(peer.received()?.len(), 2);
    Ok(())
}

/// Ctrl-C ends ping normally: the statistics, and exit 0 since replies came.
#[cfg(unix)]
#[test]
fn ping_interrupted_prints_the_statistics_and_exits_0() -> Result {
    use std::io::{BufRead, BufReader};
    let peer = server(Mode::Echo)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
        .args(["ping", "--server", &peer.addr.to_string(), "-i", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The PING line, then two replies.
    for _ in 0..3 {
        lines.next().ok_or("ping ended early")??;
    }
    let status = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let rest: Vec<String> = lines.collect::<std::io::Result<_>>()?;
    let code = child.wait()?.code();
    let rest = rest.join("\n");
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains("ping statistics ---"), "{rest}");
    assert!(rest.contains("packets transmitted"), "{rest}");
    peer.received()?;
    Ok(())
}

#[test]
fn ping_refuses_a_size_that_cannot_carry_the_number() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let server = peer.addr.to_string();
    let out = client(&["ping", "--server", &server, "--size", "13"], None)?;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("the minimum is 14 bytes"), "{err}");
    let out = client(
        &[
            "ping",
            "--server",
            &server,
            "--encoding",
            "json",
            "--size",
            "14",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("with --encoding json") && err.contains("the minimum is"),
        "{err}"
    );
    assert!(peer.received()?.is_empty(), "nothing is sent");
    Ok(())
}

/// `bench --output json`'s object, its invariants checked, against every mode and encoding;
/// against a fresh count server the highest access number is the number of replies.
#[test]
fn bench_json_output_keeps_its_books() -> Result {
    for mode in [Mode::Count, Mode::Echo, Mode::Hello] {
        for (encoding, window) in [("plain", "1"), ("plain", "8"), ("json", "4")] {
            let what = format!("{mode:?} {encoding} window {window}");
            let peer = server(mode)?;
            let out = client(
                &[
                    "bench",
                    "--server",
                    &peer.addr.to_string(),
                    "--encoding",
                    encoding,
                    "--window",
                    window,
                    "--duration",
                    "300ms",
                    "--warmup",
                    "0",
                    "--output",
                    "json",
                ],
                None,
            )?;
            assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
            let v = json_output(&out.stdout)?;
            let (sent, received, lost) = (
                number(&v, "sent")?,
                number(&v, "received")?,
                number(&v, "lost")?,
            );
            assert!(received > 0, "{what}: {v}");
            assert_eq!(sent, received + lost, "{what}: {v}");
            assert_eq!(v["kind"], "bench");
            assert_eq!(v["mode"], "closed");
            assert_eq!(v["encoding"], encoding);
            assert_eq!(v["window"].to_string(), window);
            assert_eq!(v["server"], peer.addr.to_string());
            assert_eq!(v["sink"], serde_json::Value::Null);
            for key in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
                assert!(
                    v["rtt_us"][key].as_f64().is_some_and(|x| x > 0.0),
                    "{what}: {key}"
                );
            }
            assert!(v["replies_per_s"].as_f64().is_some_and(|x| x > 0.0));
            assert!(v["duration_s"].as_f64().is_some_and(|x| x > 0.0));
            for key in ["duplicated", "reordered"] {
                assert_eq!(number(&v, key)?, 0, "{what}: {key}");
            }
            let datagrams = peer.received()?;
            assert_eq!(datagrams.len() as u64, sent, "{what}");
            if mode == Mode::Count {
                assert_eq!(number(&v, "highest_access")?, received, "{what}");
            } else {
                assert_eq!(v["highest_access"], serde_json::Value::Null, "{what}");
            }
        }
    }
    Ok(())
}

#[test]
fn bench_counts_and_warmup_are_kept_apart() -> Result {
    let peer = server(Mode::Count)?;
    let v = bench_json(
        peer.addr,
        &[
            "--count",
            "50",
            "--duration",
            "10s",
            "--warmup",
            "100ms",
            "--window",
            "4",
        ],
        0,
    )?;
    assert_eq!(number(&v, "sent")?, 50);
    // The count server counted the warm-up too: the harness check says so.
    assert_eq!(
        number(&v, "highest_access")?,
        number(&v, "received")? + number(&v, "warmup_received")?
    );
    assert_eq!(
        peer.received()?.len() as u64,
        50 + number(&v, "warmup_sent")?
    );
    Ok(())
}

#[test]
fn bench_against_a_silent_peer_loses_everything_and_exits_3() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let started = Instant::now();
    let v = bench_json(
        peer.addr,
        &[
            "--duration",
            "300ms",
            "--timeout",
            "100ms",
            "--window",
            "4",
            "--warmup",
            "0",
        ],
        3,
    )?;
    let sent = number(&v, "sent")?;
    assert!(sent >= 4);
    assert_eq!((number(&v, "received")?, number(&v, "lost")?), (0, sent));
    assert_eq!(v["rtt_us"]["p50"], serde_json::Value::Null);
    // Each lost slot is refilled after 100 ms: about 4 × 3 (+ 4) requests, never a flood.
    assert!(sent <= 40, "{sent}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(peer.received()?.len() as u64, sent);
    Ok(())
}

#[test]
fn bench_payload_hex_sends_those_bytes_and_matches_in_order() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| s.send_to(got, from).map(drop))?;
    let v = bench_json(
        peer.addr,
        &[
            "--payload-hex",
            "000000000000000100030000000e",
            "--count",
            "20",
            "--warmup",
            "0",
        ],
        0,
    )?;
    assert_eq!((number(&v, "received")?, number(&v, "size")?), (20, 14));
    let expected = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0x0e];
    assert!(peer.received()?.iter().all(|d| d == &expected));
    Ok(())
}

#[test]
fn bench_refuses_bad_hex_and_conflicting_flags_with_exit_2() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let server = peer.addr.to_string();
    for (args, says) in [
        (&["--payload-hex", "0g"][..], "is not a hex digit"),
        (&["--payload-hex", "000"][..], "odd number"),
        (&["--payload-hex", "00", "--size", "20"][..], "drop --size"),
        (
            &["--payload-hex", "00", "--encoding", "json"][..],
            "drop one of them",
        ),
        (&["--size", "3"][..], "the minimum is 14 bytes"),
    ] {
        let mut all = vec!["bench", "--server", &server];
        all.extend_from_slice(args);
        let out = client(&all, None)?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(peer.received()?.is_empty(), "nothing is sent");
    Ok(())
}

#[test]
fn open_loop_against_a_sink_asks_for_its_report() -> Result {
    let peer = sink()?;
    let v = bench_json(
        peer.addr,
        &[
            "--rate",
            "200/s",
            "--duration",
            "300ms",
            "--warmup",
            "0",
            "--timeout",
            "100ms",
        ],
        0,
    )?;
    assert_eq!(v["mode"], "open");
    let sent = number(&v, "sent")?;
    // 200/s for 0.3 s: about 60, counted with a wide margin.
    assert!((6..=600).contains(&sent), "{sent}");
    assert_eq!(number(&v["sink"], "datagrams")?, sent, "{v}");
    assert_eq!(number(&v["sink"], "bytes")?, sent * 14, "{v}");
    let datagrams = peer.received()?;
    assert_eq!(datagrams.len() as u64, sent + 1, "the probes and one query");
    Ok(())
}

#[test]
fn open_loop_against_an_echo_server_measures_replies_and_jitter() -> Result {
    let peer = server(Mode::Echo)?;
    let v = bench_json(
        peer.addr,
        &[
            "--rate",
            "500",
            "--jitter",
            "1ms",
            "--duration",
            "300ms",
            "--warmup",
            "0",
        ],
        0,
    )?;
    let (sent, received) = (number(&v, "sent")?, number(&v, "received")?);
    assert!(
        received > 0 && sent == received + number(&v, "lost")?,
        "{v}"
    );
    assert!(v["jitter_us"].as_f64().is_some(), "{v}");
    assert_eq!(
        v["sink"],
        serde_json::Value::Null,
        "no report is asked of a server that answers"
    );
    peer.received()?;
    Ok(())
}

#[test]
fn the_words_ping_and_bench_can_still_be_sent() -> Result {
    for word in ["ping", "bench"] {
        let peer = peer("127.0.0.1", |s, from, got| s.send_to(got, from).map(drop))?;
        let out = client(&["--server", &peer.addr.to_string(), "--", word], None)?;
        assert_eq!(
            text(&out.stdout),
            format!("Sent a message.\nServer message: {word}\n")
        );
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(peer.received()?, vec![word.as_bytes().to_vec()]);
    }
    Ok(())
}

/// The real `udptalk-server`, when built beside this binary (`cargo build -p server`, or the
/// xtask matrix): the client's tests never build it themselves (the crates stay independent).
fn udptalk_server() -> Option<PathBuf> {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_udptalk-client"));
    let server = client.with_file_name(format!("udptalk-server{}", std::env::consts::EXE_SUFFIX));
    if server.exists() {
        Some(server)
    } else {
        eprintln!(
            "skipped: no {} (run `cargo build -p server` to test against the real server)",
            server.display()
        );
        None
    }
}

/// Starts `udptalk-server` on port 0 and reads the port it announces.
fn spawn_server(path: &PathBuf, mode: &str) -> Result<(Child, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(path)
        .args(["--bind", "127.0.0.1:0", "--mode", mode, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first)?;
    let addr = first
        .trim()
        .strip_prefix("listening on udp ")
        .ok_or(format!("unexpected first line: {first}"))?
        .parse()?;
    Ok((child, addr))
}

#[test]
fn ping_and_bench_against_the_real_server() -> Result {
    let Some(path) = udptalk_server() else {
        return Ok(());
    };
    for mode in ["count", "echo", "hello"] {
        for encoding in ["plain", "json"] {
            let what = format!("{mode} {encoding}");
            let (mut server, addr) = spawn_server(&path, mode)?;
            let addr = addr.to_string();
            let size = if encoding == "json" { "100" } else { "14" };
            let ping = client(
                &[
                    "ping",
                    "--server",
                    &addr,
                    "--encoding",
                    encoding,
                    "-c",
                    "2",
                    "-i",
                    "0.05",
                    "--size",
                    size,
                ],
                None,
            )?;
            let bench = client(
                &[
                    "bench",
                    "--server",
                    &addr,
                    "--encoding",
                    encoding,
                    "--window",
                    "4",
                    "--duration",
                    "200ms",
                    "--warmup",
                    "0",
                    "--output",
                    "json",
                ],
                None,
            )?;
            server.kill()?;
            server.wait()?;
            assert_eq!(
                ping.status.code(),
                Some(0),
                "{what}: {}",
                text(&ping.stdout)
            );
            assert!(
                text(&ping.stdout).contains("2 packets transmitted, 2 received"),
                "{what}"
            );
            assert_eq!(
                bench.status.code(),
                Some(0),
                "{what}: {}",
                text(&bench.stderr)
            );
            let v = json_output(&bench.stdout)?;
            let received = number(&v, "received")?;
            assert_eq!(
                number(&v, "sent")?,
                received + number(&v, "lost")?,
                "{what}"
            );
            if mode == "count" {
                // The ping's two came first.
                assert_eq!(number(&v, "highest_access")?, received + 2, "{what}: {v}");
            }
        }
    }
    Ok(())
}

#[test]
fn ping_marks_late_and_duplicated_replies() -> Result {
    let first = Arc::new(AtomicU64::new(0));
    let peer = peer("127.0.0.1", move |s, from, got| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            // The first reply comes after its 100 ms timeout (the next probe is due at 300 ms).
            std::thread::sleep(Duration::from_millis(180));
            s.send_to(got, from).map(drop)
        } else {
            s.send_to(got, from)?;
            s.send_to(got, from).map(drop)
        }
    })?;
    let out = client(
        &[
            "ping",
            "--server",
            &peer.addr.to_string(),
            "-c",
            "3",
            "-i",
            "0.3",
            "--timeout",
            "100ms",
        ],
        None,
    )?;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(": seq=1 time=") && stdout.contains(" ms (late)\n"),
        "{stdout}"
    );
    // The second copy of the last reply may come after ping has ended, as with ping(8).
    assert!(stdout.contains(": seq=2 (DUP!)\n"), "{stdout}");
    assert!(
        stdout.contains("3 packets transmitted, 3 received, +")
            && stdout.contains(" duplicates, 0% packet loss"),
        "{stdout}"
    );
    assert!(stdout.contains(" duplicated, 0 reordered"), "{stdout}");
    peer.received()?;
    Ok(())
}

#[test]
fn a_closed_port_ends_bench_with_4_and_ping_counts_it_lost() -> Result {
    // A port nobody listens on: bind one, note it, and close it.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let out = client(
        &[
            "bench",
            "--server",
            &addr,
            "--duration",
            "1s",
            "--warmup",
            "0",
        ],
        None,
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("no server is listening"), "{err}");
    let out = client(
        &[
            "ping",
            "--server",
            &addr,
            "-c",
            "2",
            "-i",
            "0.05",
            "--timeout",
            "100ms",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("port unreachable"));
    assert!(text(&out.stdout).contains("2 packets transmitted, 0 received, 100% packet loss"));
    Ok(())
}
