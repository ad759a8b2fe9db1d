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
struct Spawned {
    child: Child,
    addr: SocketAddr,
    stderr: Option<BufReader<ChildStderr>>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Result<Spawned> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut first = String::new();
    stderr.read_line(&mut first)?;
    let Some(addr) = first.trim_end().strip_prefix("listening on udp ") else {
        let _ = child.kill();
        return Err(format!("unexpected first line: {first:?}").into());
    };
    Ok(Spawned {
        addr: addr.parse()?,
        child,
        stderr: Some(stderr),
    })
}

impl Spawned {
    /// Waits (at most 10 s) for the server to exit; returns its exit code, stdout and the rest of stderr.
    fn finish(mut self) -> Result<(i32, String, String)> {
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

fn sigterm(pid: u32) -> Result {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success(), "kill -TERM failed");
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
        "summary: received 1, counted 1, duplicates 0, malformed 0, rate-limited 0, busy 0, truncated 0, peers 1\n"
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
             The message is [ {a4096} ].\ntruncated: 5000 bytes, buffer 4096\n\n"
        )
    );
    assert_eq!(
        err,
        "summary: received 2, counted 2, duplicates 0, malformed 0, rate-limited 0, busy 0, truncated 1, peers 1\n"
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
        &["--buffer", "0"],
        &["--idle", "0s"],
        &["--mode", "shout"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
            .args(args)
            .output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
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
