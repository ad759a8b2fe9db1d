//! The `udptalk-server` binary as a user runs it: the announce line, the tutorial's lines,
//! the summary, exit codes and messages.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Result, ask, peer_for};

/// A spawned server: its address from the announce line, killed if the test fails early.
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// The first stderr line, without its line ending.
    pub(crate) announce: String,
    stderr: Option<BufReader<ChildStderr>>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn(args: &[&str]) -> Result<Spawned> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut first = String::new();
    stderr.read_line(&mut first)?;
    // `listening on udp ADDR`, and on [::] a note after the address: `(IPv4 too)`.
    let addr = first
        .strip_prefix("listening on udp ")
        .map(str::split_whitespace);
    let Some(addr) = addr.and_then(|mut words| words.next()) else {
        let _ = child.kill();
        return Err(format!("unexpected first line: {first:?}").into());
    };
    Ok(Spawned {
        addr: addr.parse()?,
        announce: first.trim_end().to_owned(),
        child,
        stderr: Some(stderr),
    })
}

impl Spawned {
    /// Waits (at most 10 s) for the server to exit; returns its exit code, stdout and the rest of stderr.
    pub(crate) fn finish(mut self) -> Result<(i32, String, String)> {
        let (done, wait) = mpsc::channel();
        let mut stdout = self.child.stdout.take().ok_or("no stdout")?;
        let mut stderr = self.stderr.take().ok_or("no stderr")?;
        thread::spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = done.send((out, err));
        });
        let (out, err) = wait.recv_timeout(Duration::from_secs(10))?;
        let status = self.child.wait()?;
        Ok((status.code().unwrap_or(-1), out, err))
    }
}

pub(crate) fn sigterm(pid: u32) -> Result {
    signal(pid, "TERM")
}

pub(crate) fn signal(pid: u32, name: &str) -> Result {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()?;
    assert!(status.success(), "kill -{name} failed");
    Ok(())
}

#[test]
fn hello_once_is_udp_server1() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--mode", "hello", "--once"])?;
    let peer = peer_for(server.addr)?;
    assert_eq!(
        ask(&peer, server.addr, b"Hello Server!!")?,
        b"Hello Client!!"
    );
    let port = peer.local_addr()?.port();
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("Message received from 127.0.0.1:{port}.\nThe message is [ Hello Server!! ].\n")
    );
    assert_eq!(
        err,
        "summary: received 1, counted 1, duplicates 0, malformed 0, rate-limited 0, busy 0, loops 0, truncated 0, peers 1\n"
    );
    Ok(())
}

#[test]
fn count_mode_prints_the_tutorial_lines_escaped_and_the_cut() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--buffer", "4096"])?;
    let peer = peer_for(server.addr)?;
    assert_eq!(ask(&peer, server.addr, b"\x1b[2J\xff")?, b"Access count: 1");
    assert_eq!(ask(&peer, server.addr, &[b'a'; 5000])?, b"Access count: 2");
    sigterm(server.child.id())?;
    let port = peer.local_addr()?.port();
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0, "SIGTERM ends the server cleanly");
    let a4096 = "a".repeat(4096);
    assert_eq!(
        out,
        format!(
            "New access.(access count: 1)\nMessage received from 127.0.0.1:{port}.\n\
             The message is [ \\x1b[2J\\xff ].\n\n\
             New access.(access count: 2)\nMessage received from 127.0.0.1:{port}.\n\
             The message is [ {a4096} ].\nmessage cut to 4096 of 5000 bytes; --buffer is 4096\n\n"
        )
    );
    assert_eq!(
        err,
        "summary: received 2, counted 2, duplicates 0, malformed 0, rate-limited 0, busy 0, loops 0, truncated 1, peers 1\n"
    );
    Ok(())
}

#[test]
fn idle_ends_the_server() -> Result {
    let started = Instant::now();
    let server = spawn(&["--bind", "127.0.0.1:0", "--idle", "200ms", "--quiet"])?;
    let (code, out, err) = server.finish()?;
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(err.starts_with("summary: received 0"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "--idle 200ms took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn port_in_use_says_so_and_suggests_bind() -> Result {
    let taken = UdpSocket::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args(["--bind", &addr])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8(output.stderr)?;
    assert_eq!(
        err,
        format!(
            "error: udp address {addr} is already in use (is another server running?); stop it, \
             or pick another address with --bind, e.g. --bind 127.0.0.1:0 for any free port\n"
        )
    );
    Ok(())
}

#[test]
fn bad_usage_exits_2_with_a_hint() -> Result {
    for args in [
        &["--bind", "localhost"][..],
        &["--bind", "127.0.0.1:0", "--buffer", "0"],
        &["--bind", "127.0.0.1:0", "--idle", "0s"],
        &["--bind", "127.0.0.1:0", "--idle", "18446744073709551615s"],
        &["--bind", "127.0.0.1:0", "--idle", "366d"],
        &["--bind", "127.0.0.1:0", "--mode", "shout"],
        &["--bind", "127.0.0.1:0", "--ipv6-only"],
    ] {
        // Spawned with port 0 and waited for at most 10 s: a server that wrongly accepted the
        // arguments would serve, and is then killed rather than waited for.
        let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
            .args(args)
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
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args(["--bind", "nonsense"])
        .output()?;
    assert!(String::from_utf8(output.stderr)?.contains("write e.g. 127.0.0.1:50000 or [::1]:0"));
    Ok(())
}

/// `--help` is what users read first: a snapshot, so that a change to it is a reviewed change
/// (`UPDATE_EXPECT=1 cargo test` refreshes it).
#[test]
fn help_says_what_the_server_does() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .arg("--help")
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    expect_test::expect_file!["help.txt"].assert_eq(&String::from_utf8(output.stdout)?);
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM are how a server is stopped: exit 0, with the summary.
#[test]
fn sigint_and_sigterm_exit_0_with_the_summary() -> Result {
    for name in ["INT", "TERM"] {
        let server = spawn(&["--bind", "127.0.0.1:0", "--quiet"])?;
        let peer = peer_for(server.addr)?;
        assert_eq!(ask(&peer, server.addr, b"hi")?, b"Access count: 1");
        signal(server.child.id(), name)?;
        let (code, _, err) = server.finish()?;
        assert_eq!(code, 0, "SIG{name}");
        assert!(err.starts_with("summary: received 1, counted 1"), "{err}");
    }
    Ok(())
}

/// A server whose stdout nobody reads (`udptalk-server | sleep 30`, a terminal paused with
/// Ctrl-S) still answers everything, and SIGTERM still ends it within a second, its summary
/// counting the lines it dropped.
#[test]
fn a_stalled_stdout_never_stops_service() -> Result {
    // stdout is a pipe whose read end this test holds and never reads.
    let server = spawn(&["--bind", "127.0.0.1:0"])?;
    let peer = peer_for(server.addr)?;
    // 2 MB of lines in all: more than the pipe (64 KiB) and the queue (1 MiB) hold.
    let body = "x".repeat(2_000);
    for id in 1..=1_000_u64 {
        let request = format!(r#"{{"v":1,"id":{id},"kind":"request","body":"{body}","ack":{id}}}"#);
        let answer = ask(&peer, server.addr, request.as_bytes())?;
        let expected = format!(r#"{{"v":1,"id":{id},"kind":"reply","body":"Access count: {id}"}}"#);
        assert_eq!(String::from_utf8(answer)?, expected);
    }
    let started = Instant::now();
    sigterm(server.child.id())?;
    let mut server = server;
    let status = wait_at_most(&mut server.child, Duration::from_secs(10))?;
    let took = started.elapsed();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit 0 on SIGTERM");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    let mut err = String::new();
    server
        .stderr
        .take()
        .ok_or("no stderr")?
        .read_to_string(&mut err)?;
    assert!(
        err.contains("warning: stdout is not keeping up"),
        "one warning says so: {err}"
    );
    let summary = err
        .lines()
        .find(|line| line.starts_with("summary: "))
        .ok_or("no summary")?;
    assert!(
        summary.starts_with("summary: received 1000, counted 1000,"),
        "{summary}"
    );
    assert!(summary.contains(", lines dropped "), "{summary}");
    Ok(())
}

/// Waits for `child` to exit, at most `timeout`; `None` if it has not.
pub(crate) fn wait_at_most(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(None)
}

/// Everything a peer sends is escaped wherever the server shows it: the per-datagram lines,
/// the error messages that quote a value, and log lines at every level.
#[test]
fn hostile_bytes_are_escaped_on_every_output() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "-vv"])?;
    let peer = peer_for(server.addr)?;
    let hostile = "\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\u{200b}\u{2028}\u{e000}";
    let escaped_json = "\\u001b[2J\u{9b}31m\u{7f}\u{202e}\u{200b}\u{2028}\u{e000}";
    let mut datagrams: Vec<Vec<u8>> = vec![
        format!("{hostile}\u{ff}").into_bytes(),
        [hostile.as_bytes(), b"\xff\xfe"].concat(),
    ];
    for member in ["v", "kind", "id", "ack"] {
        let mut members = vec![
            ("v", "1".to_owned()),
            ("id", "7".to_owned()),
            ("kind", "\"request\"".to_owned()),
            ("body", "\"x\"".to_owned()),
        ];
        let value = format!("\"{escaped_json}\"");
        match members.iter_mut().find(|(name, _)| *name == member) {
            Some(slot) => slot.1 = value,
            None => members.push((member, value)),
        }
        let inner: Vec<String> = members
            .iter()
            .map(|(name, value)| format!("\"{name}\":{value}"))
            .collect();
        datagrams.push(format!("{{{}}}", inner.join(",")).into_bytes());
    }
    for datagram in &datagrams {
        ask(&peer, server.addr, datagram)?;
    }
    sigterm(server.child.id())?;
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0);
    assert!(out.contains("Rejected: bad_version"), "{out}");
    for (stream, text) in [("stdout", &out), ("stderr", &err)] {
        for c in [
            '\u{1b}', '\u{9b}', '\u{7f}', '\u{202e}', '\u{200b}', '\u{2028}', '\u{e000}',
        ] {
            assert!(
                !text.contains(c),
                "{stream} carries U+{:04X} raw:\n{text}",
                c as u32
            );
        }
        assert!(!text.contains('\u{fffd}'), "{stream} hid a byte as U+FFFD");
    }
    assert!(out.contains("\\u{202e}"), "{out}");
    assert!(
        err.contains("\\u{202e}"),
        "the debug log shows it escaped: {err}"
    );
    Ok(())
}

/// Over `--rate-limit`, datagrams are dropped unanswered and one log line names the sources
/// (once, with what to try, and with its name said once).
#[test]
fn the_rate_limit_says_so_once_with_what_to_try() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--rate-limit", "1", "--quiet"])?;
    let peer = peer_for(server.addr)?;
    assert_eq!(ask(&peer, server.addr, b"a")?, b"Access count: 1");
    assert_eq!(ask(&peer, server.addr, b"b")?, b"Access count: 2");
    // The third in a burst of two is dropped: the answer to the fourth (after the bucket
    // refills, a second later at most) is the third access.
    peer.send_to(b"c", server.addr)?;
    // Each try waits 300 ms: the bucket refills one datagram a second.
    peer.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut answer = Vec::new();
    for _ in 0..30 {
        peer.send_to(b"d", server.addr)?;
        let mut buf = [0; 64];
        if let Ok((len, _)) = peer.recv_from(&mut buf) {
            answer = buf[..len].to_vec();
            break;
        }
    }
    assert_eq!(answer, b"Access count: 3");
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    // The report comes at most once a second, after a batch: "c" and the first "d" may arrive
    // in one batch and be reported together.
    let report = err
        .lines()
        .find(|line| line.starts_with("warning: rate limit: refused "))
        .ok_or("no rate-limit report")?;
    assert!(
        report.contains(" datagram")
            && report.contains("; most from 127.0.0.1 (")
            && report.ends_with("; if they are real clients, raise --rate-limit (0 turns it off)"),
        "{err}"
    );
    assert!(!err.contains("rate limit: rate limit"), "{err}");
    Ok(())
}

/// `--mode sink` answers nothing but the report query, which tells the asker what arrived from
/// it: here probes 1-6 with 3 lost and 5 and 4 swapped; the summary adds the totals.
#[test]
fn a_sink_answers_only_its_report_with_the_gaps_and_swaps() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--mode", "sink"])?;
    let peer = peer_for(server.addr)?;
    for seq in [1, 2, 5, 4, 6] {
        peer.send_to(format!("seq {seq}.........").as_bytes(), server.addr)?;
    }
    peer.send_to(
        br#"{"v":1,"id":9,"kind":"request","body":"seq 7"}"#,
        server.addr,
    )?;
    peer.send_to(b"not a probe", server.addr)?;
    // Nothing comes back for those; the query's answer is the first datagram received.
    let report = ask(&peer, server.addr, b"udptalk sink report?")?;
    assert_eq!(
        String::from_utf8(report)?,
        "udptalk sink report: datagrams 7, bytes 127, lost 1, reordered 1, duplicated 0"
    );
    sigterm(server.child.id())?;
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0);
    assert!(
        err.contains(
            "summary: received 8, counted 8, duplicates 0, malformed 0, rate-limited 0, busy 0, \
             loops 0, truncated 0, peers 1, sink: datagrams 7, bytes 127, lost 1, reordered 1, \
             duplicated 0"
        ),
        "{err}"
    );
    // The lines of echo and hello modes: no `New access.` line.
    assert!(out.starts_with("Message received from 127.0.0.1:"), "{out}");
    assert!(
        out.contains("The message is [ seq 1......... ].\n"),
        "{out}"
    );
    assert!(!out.contains("New access."), "{out}");
    Ok(())
}

/// Ping-pong puts the socket in one-datagram-per-receive mode (`recvfrom`); a stop must end
/// that wait as cleanly as a batched one's (the woken receive brings 0 bytes from no sender).
/// std's `recv_from` panicked on that empty address in release builds (it reads the address
/// the system did not write), which is why sys reads it with nix.
#[test]
fn a_stop_during_ping_pong_ends_with_the_summary() -> Result {
    // 20 exchanges: whatever the mode's period, some receives are single ones before the stop.
    for exchanges in [3_u64, 20, 21] {
        let server = spawn(&["--bind", "127.0.0.1:0", "--quiet"])?;
        let peer = peer_for(server.addr)?;
        for n in 1..=exchanges {
            assert_eq!(
                ask(&peer, server.addr, b"Hello Server!!")?,
                format!("Access count: {n}").into_bytes()
            );
        }
        sigterm(server.child.id())?;
        let (code, _, err) = server.finish()?;
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&format!(
                "summary: received {exchanges}, counted {exchanges},"
            )),
            "{err}"
        );
    }
    Ok(())
}
