//! The server library in a thread: counting rule, encodings, and the summary's books.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use proto::{Envelope, ErrorCode, Id};
use server::{Config, Encoding, Mode, Server, Summary};

use crate::{Result, ask, peer_for};

/// Runs a server with `config` (bound to port 0 on `ip`), lets `talk` exchange datagrams with it,
/// then stops it and returns its summary.
fn with_server(
    ip: &str,
    adjust: impl FnOnce(&mut Config),
    talk: impl FnOnce(SocketAddr) -> Result,
) -> Result<Summary> {
    let mut config = Config::new(format!("{ip}:0").parse()?);
    config.quiet = true;
    adjust(&mut config);
    let server = Server::bind(config)?;
    let addr = server.local_addr();
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let running = scope.spawn(|| server.run(&stop));
        let talked = talk(addr);
        stop.store(true, Ordering::Relaxed);
        let summary = running.join().map_err(|_| "the server thread panicked")??;
        talked.map(|()| summary)
    })
}

fn request(id: u64, body: &str) -> Vec<u8> {
    request_with(id, body, None)
}

fn request_with(id: u64, body: &str, ack: Option<Id>) -> Vec<u8> {
    Envelope::Request {
        id: Id::new(id).unwrap_or(Id::MIN),
        body: body.into(),
        ack,
    }
    .encode_to_vec()
}

#[test]
fn counts_every_plain_datagram_whatever_its_bytes() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |_| {},
        |addr| {
            let peer = peer_for(addr)?;
            assert_eq!(ask(&peer, addr, b"Hello Server!!")?, b"Access count: 1");
            assert_eq!(ask(&peer, addr, b"\xff\xfe")?, b"Access count: 2");
            assert_eq!(ask(&peer, addr, b"")?, b"Access count: 3");
            assert_eq!(
                ask(&peer, addr, "こんにちは".as_bytes())?,
                b"Access count: 4"
            );
            Ok(())
        },
    )?;
    assert_eq!(
        summary,
        Summary {
            received: 4,
            counted: 4,
            peers: 1,
            ..Summary::default()
        }
    );
    Ok(())
}

#[test]
fn refused_envelopes_get_an_error_and_are_not_counted() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |_| {},
        |addr| {
            let peer = peer_for(addr)?;
            let answer = Envelope::decode(&ask(&peer, addr, br#"{"v":2,"id":5}"#)?, 65_535)?;
            assert!(
                matches!(&answer, Envelope::Error { id: Some(id), code: ErrorCode::BadVersion, .. } if id.get() == 5),
                "{answer:?}"
            );
            let answer = Envelope::decode(&ask(&peer, addr, &request(9, "hi"))?, 65_535)?;
            assert_eq!(
                answer,
                Envelope::Reply {
                    id: Id::new(9).unwrap(),
                    body: "Access count: 1".into()
                }
            );
            // A reply sent to the server is never answered, so two servers cannot ping-pong.
            peer.send_to(br#"{"v":1,"id":3,"kind":"reply","body":"x"}"#, addr)?;
            assert_eq!(ask(&peer, addr, b"plain")?, b"Access count: 2");
            Ok(())
        },
    )?;
    assert_eq!(
        summary,
        Summary {
            received: 4,
            counted: 2,
            malformed: 2,
            peers: 1,
            ..Summary::default()
        }
    );
    Ok(())
}

#[test]
fn json_mode_answers_plain_text_with_bad_json() -> Result {
    with_server(
        "127.0.0.1",
        |c| c.encoding = Encoding::Json,
        |addr| {
            let peer = peer_for(addr)?;
            for (datagram, code) in [
                (&b"Hello Server!!"[..], ErrorCode::BadJson),
                (b"\xff", ErrorCode::NotUtf8),
                (b"", ErrorCode::BadJson),
            ] {
                match Envelope::decode(&ask(&peer, addr, datagram)?, 65_535)? {
                    Envelope::Error {
                        id: None,
                        code: got,
                        ..
                    } => assert_eq!(got, code),
                    other => panic!("expected an error envelope, got {other:?}"),
                }
            }
            Ok(())
        },
    )?;
    Ok(())
}

#[test]
fn plain_mode_takes_json_as_text() -> Result {
    with_server(
        "127.0.0.1",
        |c| {
            c.encoding = Encoding::Plain;
            c.mode = Mode::Echo
        },
        |addr| {
            let peer = peer_for(addr)?;
            let json = request(1, "x");
            assert_eq!(ask(&peer, addr, &json)?, json);
            Ok(())
        },
    )?;
    Ok(())
}

#[test]
fn cuts_to_the_buffer_and_counts_the_cut() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |c| {
            c.buffer = 4096;
            c.mode = Mode::Echo
        },
        |addr| {
            let peer = peer_for(addr)?;
            let long = vec![b'x'; proto::MAX_PAYLOAD_V4];
            assert_eq!(ask(&peer, addr, &long)?.len(), 4096);
            assert_eq!(ask(&peer, addr, &long[..4096])?.len(), 4096);
            let envelope = request(4, &"y".repeat(5000));
            match Envelope::decode(&ask(&peer, addr, &envelope)?, 65_535)? {
                Envelope::Error {
                    id,
                    code: ErrorCode::TooLarge,
                    ..
                } => assert_eq!(id, Id::new(4)),
                other => panic!("expected too_large, got {other:?}"),
            }
            Ok(())
        },
    )?;
    assert_eq!(
        summary,
        Summary {
            received: 3,
            counted: 2,
            malformed: 1,
            truncated: 1,
            peers: 1,
            ..Summary::default()
        }
    );
    Ok(())
}

/// A server bound to a wildcard address answers from the address each request was sent to, so
/// a client connected to 127.0.0.2 (or a host's second address) accepts the answer.
#[test]
fn wildcard_server_answers_from_the_address_asked() -> Result {
    let summary = with_server(
        "0.0.0.0",
        |_| {},
        |addr| {
            let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
            client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            client.connect(("127.0.0.2", addr.port()))?;
            client.send(b"Hello Server!!")?;
            let mut buf = [0; 64];
            let len = client.recv(&mut buf)?;
            assert_eq!(&buf[..len], b"Access count: 1");
            Ok(())
        },
    )?;
    assert_eq!(summary.counted, 1);
    Ok(())
}

/// A request that acknowledges every id before `ack`.
fn request_acking(id: u64, ack: u64) -> Vec<u8> {
    request_with(id, "again", Id::new(ack))
}

/// At most once: a resend gets the same answer and is not counted again; a copy of a request
/// its sender has acknowledged is recognised as done and not answered.
#[test]
fn resends_are_answered_again_but_counted_once() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |_| {},
        |addr| {
            let peer = peer_for(addr)?;
            let first = ask(&peer, addr, &request_acking(100, 100))?;
            assert_eq!(
                ask(&peer, addr, &request_acking(100, 100))?,
                first,
                "a resend, same answer"
            );
            let second = ask(&peer, addr, &request_acking(101, 101))?;
            assert!(String::from_utf8(second)?.contains("Access count: 2"));
            // A late network copy of id 100, after the sender acknowledged it (ack 101): no answer.
            peer.send_to(&request_acking(100, 100), addr)?;
            // Another peer's id 100 is another request.
            let other = peer_for(addr)?;
            let third = ask(&other, addr, &request_acking(100, 100))?;
            assert!(String::from_utf8(third)?.contains("Access count: 3"));
            // The late copy got no answer: the next datagram's answer is the next one asked.
            assert_eq!(ask(&peer, addr, b"plain")?, b"Access count: 4");
            Ok(())
        },
    )?;
    assert_eq!(
        (summary.received, summary.counted, summary.duplicates),
        (6, 4, 2)
    );
    assert_eq!(summary.peers, 2);
    Ok(())
}

#[test]
fn full_caps_answer_busy_and_count_nothing() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |c| {
            c.cache = server::CacheLimits {
                per_peer: 2,
                ..server::CacheLimits::default()
            }
        },
        |addr| {
            let peer = peer_for(addr)?;
            // No acks: every answer must be kept for the whole retry window.
            for id in [1, 2] {
                let answer = Envelope::decode(&ask(&peer, addr, &request(id, "x"))?, 65_535)?;
                assert!(matches!(answer, Envelope::Reply { .. }), "{answer:?}");
            }
            match Envelope::decode(&ask(&peer, addr, &request(3, "x"))?, 65_535)? {
                Envelope::Error {
                    id,
                    code: ErrorCode::Busy,
                    ..
                } => assert_eq!(id, Id::new(3)),
                other => panic!("expected busy, got {other:?}"),
            }
            // The live entries were not evicted: a resend of 1 is still answered from the cache.
            let again = Envelope::decode(&ask(&peer, addr, &request(1, "x"))?, 65_535)?;
            assert!(matches!(again, Envelope::Reply { body, .. } if body == "Access count: 1"));
            Ok(())
        },
    )?;
    assert_eq!(
        (
            summary.received,
            summary.counted,
            summary.duplicates,
            summary.busy
        ),
        (4, 2, 1, 1)
    );
    Ok(())
}

#[test]
fn over_the_rate_limit_datagrams_are_dropped_and_counted() -> Result {
    let summary = with_server(
        "127.0.0.1",
        |c| {
            c.rate_limit = Some(server::RateLimit {
                per_second: 1,
                burst: 2,
            })
        },
        |addr| {
            let peer = peer_for(addr)?;
            assert_eq!(ask(&peer, addr, b"a")?, b"Access count: 1");
            assert_eq!(ask(&peer, addr, b"b")?, b"Access count: 2");
            peer.send_to(b"c", addr)?;
            peer.set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
            let mut buf = [0; 64];
            assert!(
                peer.recv_from(&mut buf).is_err(),
                "the third datagram in a burst of 2 gets no answer"
            );
            Ok(())
        },
    )?;
    assert_eq!(
        (summary.received, summary.counted, summary.rate_limited),
        (3, 2, 1)
    );
    Ok(())
}
