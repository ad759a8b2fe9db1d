//! Resends, ids and the run's bounds: a JSON client against peers that lose, duplicate or
//! refuse on purpose. Timing is checked by counting datagrams, with wide margins on time.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proto::{Envelope, ErrorCode, Id};

use crate::{Result, client, peer, text};

fn request(datagram: &[u8]) -> Option<(Id, Option<Id>, String)> {
    match Envelope::decode(datagram, 65_535) {
        Ok(Envelope::Request { id, body, ack }) => Some((id, ack, body)),
        _ => None,
    }
}

fn reply(socket: &UdpSocket, to: std::net::SocketAddr, id: Id, body: &str) -> std::io::Result<()> {
    let answer = Envelope::Reply {
        id,
        body: body.into(),
    };
    socket.send_to(&answer.encode_to_vec(), to).map(drop)
}

#[test]
fn lost_requests_are_resent_with_the_same_id() -> Result {
    let seen = AtomicUsize::new(0);
    let (addr, peer) = peer("127.0.0.1", 3, move |s, from, got| {
        // Lose the first two datagrams, answer the third.
        if seen.fetch_add(1, Ordering::Relaxed) < 2 {
            return Ok(());
        }
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &format!("re: {body}"))
    })?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "--timeout",
            "100ms",
            "hi",
        ],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: re: hi\n"
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("summary: sent 1 (3 datagrams), answered 1, retried 1, lost 0"),
        "{err}"
    );
    assert!(
        !err.contains("rtt"),
        "a retried request has no RTT (Karn's rule): {err}"
    );
    let received = peer.join().map_err(|_| "peer panicked")?;
    let ids: Vec<Id> = received
        .iter()
        .filter_map(|d| request(d))
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every resend repeats its id: {ids:?}"
    );
    Ok(())
}

#[test]
fn ids_start_at_random_and_count_up_with_acks() -> Result {
    let (addr, first_peer) = peer("127.0.0.1", 3, |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)
    })?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "a",
            "b",
            "c",
        ],
        None,
    )?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let requests: Vec<_> = first_peer
        .join()
        .map_err(|_| "peer panicked")?
        .iter()
        .filter_map(|d| request(d))
        .collect();
    assert_eq!(requests.len(), 3);
    let first = requests[0].0;
    for (n, (id, ack, _)) in requests.iter().enumerate() {
        assert_eq!(*id, first.wrapping_add(n as u64), "ids count up by one");
        assert_eq!(
            *ack,
            Some(*id),
            "one request at a time: the one sent is the lowest awaited"
        );
    }
    // Two runs starting at the same id would be a 1 in 2^53 event: a fixed start would show here.
    let (addr2, peer2) = peer("127.0.0.1", 1, |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)
    })?;
    client(
        &["--server", &addr2.to_string(), "--encoding", "json", "a"],
        None,
    )?;
    let again = peer2.join().map_err(|_| "peer panicked")?;
    assert_ne!(
        request(&again[0]).map(|r| r.0),
        Some(first),
        "the first id is random"
    );
    Ok(())
}

#[test]
fn duplicated_answers_are_printed_once() -> Result {
    let (addr, peer) = peer("127.0.0.1", 2, |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)?;
        reply(s, from, id, &body)
    })?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "-v",
            "one",
            "two",
        ],
        None,
    )?;
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: one\nSent a message.\nServer message: two\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("answered 2, retried 0, lost 0, duplicates dropped 1"),
        "{err}"
    );
    assert!(err.contains("rtt min/median/max"), "{err}");
    peer.join().map_err(|_| "peer panicked")?;
    Ok(())
}

#[test]
fn a_silent_peer_gets_exactly_one_plus_retries_attempts() -> Result {
    let (addr, peer) = peer("127.0.0.1", 10, |_, _, _| Ok(()))?;
    let started = Instant::now();
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "--timeout",
            "100ms",
            "--retries",
            "3",
            "x",
        ],
        None,
    )?;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3));
    // 100 + 200 + 400 + 800 ms, each plus up to 25% jitter: never under 1.5 s, and far under 15 s.
    assert!(
        took >= Duration::from_millis(1_500),
        "gave up after {took:?}, before the schedule"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("no reply from {addr} to 4 attempts over 1s 500ms")),
        "{err}"
    );
    assert!(
        err.contains("summary: sent 1 (4 datagrams), answered 0, retried 1, lost 1"),
        "{err}"
    );
    // The peer waits 5 s for a fifth datagram that never comes.
    assert_eq!(peer.join().map_err(|_| "peer panicked")?.len(), 4);
    Ok(())
}

#[test]
fn busy_is_retried_after_the_backoff() -> Result {
    let seen = AtomicUsize::new(0);
    let (addr, peer) = peer("127.0.0.1", 2, move |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        if seen.fetch_add(1, Ordering::Relaxed) == 0 {
            let busy = Envelope::Error {
                id: Some(id),
                code: ErrorCode::Busy,
                message: "busy".into(),
            };
            return s.send_to(&busy.encode_to_vec(), from).map(drop);
        }
        reply(s, from, id, &body)
    })?;
    let out = client(
        &[
            "--server",
            &addr.to_string(),
            "--encoding",
            "json",
            "--timeout",
            "100ms",
            "x",
        ],
        None,
    )?;
    assert_eq!(text(&out.stdout), "Sent a message.\nServer message: x\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(peer.join().map_err(|_| "peer panicked")?.len(), 2);
    Ok(())
}

#[test]
fn the_deadline_bounds_the_whole_run() -> Result {
    let (addr, _peer) = peer("127.0.0.1", 1, |_, _, _| Ok(()))?;
    let started = Instant::now();
    let out = client(
        &[
            "--server",
            &addr.to_string(),
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
    assert!(
        text(&out.stderr).contains("the --deadline of 300ms passed"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn ctrl_c_prints_the_summary_and_exits_130() -> Result {
    let (received, wait) = std::sync::mpsc::channel();
    let (addr, _peer) = peer("127.0.0.1", 1, move |_, _, _| {
        received
            .send(())
            .map_err(|_| std::io::ErrorKind::Other.into())
    })?;
    let child = Command::new(env!("CARGO_BIN_EXE_udptalk-client"))
        .args(["--server", &addr.to_string(), "--timeout", "30s", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait for the send (the peer's receive), then interrupt.
    wait.recv_timeout(Duration::from_secs(10))?;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(130));
    assert!(
        text(&out.stderr).contains("summary: sent 0 (0 datagrams)"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

/// A JSON envelope carries text: bytes that are not UTF-8 are refused, never changed.
#[test]
fn json_mode_refuses_bytes_that_are_not_text() -> Result {
    let (addr, peer) = peer("127.0.0.1", 1, |_, _, _| Ok(()))?;
    let out = client(
        &["--server", &addr.to_string(), "--encoding", "json"],
        Some(b"caf\xe9\n"),
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not UTF-8 text (first bad byte at offset 3)"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--encoding plain"));
    assert!(
        peer.join().map_err(|_| "peer panicked")?.is_empty(),
        "nothing was sent"
    );
    Ok(())
}
