//! What ends a run early: signals (exit 128 + the signal, after the summary) and `--deadline`
//! (exit 3), whether the client waits for a reply or for a line of input.

use std::process::{Command, Stdio};
#[cfg(unix)]
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Result, client, peer, text};

/// SIGINT, SIGTERM and SIGHUP while a reply is awaited: the message in flight was sent, and is
/// counted as neither answered nor lost but interrupted. (Unix only: Windows has no such
/// signals, nor `kill`.)
#[cfg(unix)]
#[test]
fn signals_print_the_summary_and_exit_128_plus_the_signal() -> Result {
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let (received, wait) = mpsc::channel();
        let peer = peer("127.0.0.1", move |_, _, _| {
            received
                .send(())
                .map_err(|_| std::io::ErrorKind::Other.into())
        })?;
        let child = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
            .args(["--server", &peer.addr.to_string(), "--timeout", "30s", "x"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Wait for the send (the peer's receive), then signal.
        wait.recv_timeout(Duration::from_secs(10))?;
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()?;
        assert!(status.success(), "kill -s {signal}");
        let out = child.wait_with_output()?;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {err}");
        // The client looks at the signal flag every 100 ms: 10 s is a wide margin.
        assert!(started.elapsed() < Duration::from_secs(10), "SIG{signal}");
        assert_eq!(text(&out.stdout), "Sent a message.\n", "SIG{signal}");
        assert!(
            err.contains(
                "summary: 1 message sent in 1 datagram, answered 0, retried 0, lost 0, interrupted 1, \
                 duplicates dropped 0"
            ),
            "SIG{signal}: {err}"
        );
        assert_eq!(peer.received()?.len(), 1, "SIG{signal}");
    }
    Ok(())
}

#[test]
fn the_deadline_bounds_the_whole_run() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let started = Instant::now();
    let out = client(
        &[
            "--server",
            &peer.addr.to_string(),
            "--timeout",
            "30s",
            "--deadline",
            "300ms",
            "x",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("error: the --deadline of 300ms passed"),
        "{err}"
    );
    assert!(
        err.contains(
            "summary: 1 message sent in 1 datagram, answered 0, retried 0, lost 0, interrupted 1"
        ),
        "{err}"
    );
    assert_eq!(peer.received()?.len(), 1);
    Ok(())
}

/// A terminal that never sends a line still cannot outlast --deadline: stdin is read by a
/// thread of its own, and the run stops while that thread is blocked.
#[test]
fn the_deadline_ends_a_run_blocked_on_stdin() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
        .args(["--server", &peer.addr.to_string(), "--deadline", "300ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Kept open and never written until the client has exited.
    let stdin = child.stdin.take();
    let out = child.wait_with_output()?;
    drop(stdin);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("error: the --deadline of 300ms passed"),
        "{err}"
    );
    assert!(
        err.contains("summary: 0 messages sent in 0 datagrams"),
        "{err}"
    );
    assert!(peer.received()?.is_empty());
    Ok(())
}

/// The library side of a stop: a run told to stop before it starts sends nothing.
#[test]
fn a_stopped_run_sends_nothing_more() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let stop = ::client::Stop::new();
    stop.interrupt(::client::Signal::Terminate);
    let input = ::client::Input::Messages(vec!["one".into()]);
    let mut out = Vec::new();
    let (report, end) = ::client::run(&::client::Config::new(peer.addr), input, &mut out, &stop);
    assert_eq!(
        end?,
        ::client::End::Interrupted(::client::Interruption::Signal(::client::Signal::Terminate))
    );
    assert_eq!((report.sent, out.len()), (0, 0));
    assert!(peer.received()?.is_empty());
    Ok(())
}
