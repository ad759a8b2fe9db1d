//! Resends, ids and the run's bounds: a JSON client against peers that lose, duplicate or
//! refuse on purpose. Timing is checked by counting datagrams, with wide margins on time.

use std::net::UdpSocket;
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
    let peer = peer("127.0.0.1", move |s, from, got| {
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
            &peer.addr.to_string(),
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
        err.contains("summary: 1 message sent in 3 datagrams, answered 1, retried 1, lost 0"),
        "{err}"
    );
    assert!(
        !err.contains("rtt"),
        "a retried request has no RTT (Karn's rule): {err}"
    );
    let received = peer.received()?;
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
    let first_peer = peer("127.0.0.1", |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)
    })?;
    let out = client(
        &[
            "--server",
            &first_peer.addr.to_string(),
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
        .received()?
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
    let peer2 = peer("127.0.0.1", |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)
    })?;
    client(
        &[
            "--server",
            &peer2.addr.to_string(),
            "--encoding",
            "json",
            "a",
        ],
        None,
    )?;
    let again = peer2.received()?;
    assert_ne!(
        request(&again[0]).map(|r| r.0),
        Some(first),
        "the first id is random"
    );
    Ok(())
}

#[test]
fn duplicated_answers_are_printed_once() -> Result {
    let peer = peer("127.0.0.1", |s, from, got| {
        let (id, _, body) = request(got).ok_or(std::io::ErrorKind::InvalidData)?;
        reply(s, from, id, &body)?;
        reply(s, from, id, &body)
    })?;
    let out = client(
        &[
            "--server",
            &peer.addr.to_string(),
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
    peer.received()?;
    Ok(())
}

#[test]
fn a_silent_peer_gets_exactly_one_plus_retries_attempts() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let started = Instant::now();
    let out = client(
        &[
            "--server",
            &peer.addr.to_string(),
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
        err.contains(&format!(
            "no reply from {} to 4 attempts over 1s 500ms",
            peer.addr
        )),
        "{err}"
    );
    assert!(
        err.contains("summary: 1 message sent in 4 datagrams, answered 0, retried 1, lost 1"),
        "{err}"
    );
    assert_eq!(
        peer.received()?.len(),
        4,
        "one send and three resends, no more"
    );
    Ok(())
}

#[test]
fn busy_is_retried_after_the_backoff() -> Result {
    let seen = AtomicUsize::new(0);
    let peer = peer("127.0.0.1", move |s, from, got| {
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
            &peer.addr.to_string(),
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
    assert_eq!(peer.received()?.len(), 2);
    Ok(())
}

/// A JSON envelope carries text: bytes that are not UTF-8 are refused, never changed.
#[test]
fn json_mode_refuses_bytes_that_are_not_text() -> Result {
    let peer = peer("127.0.0.1", |_, _, _| Ok(()))?;
    let out = client(
        &["--server", &peer.addr.to_string(), "--encoding", "json"],
        Some(b"caf\xe9\n"),
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not UTF-8 text (first bad byte at offset 3)"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--encoding plain"));
    assert!(peer.received()?.is_empty(), "nothing was sent");
    Ok(())
}
