//! The binary with `--workers N` (several SO_REUSEPORT sockets on one address), and the batched
//! receive's one exception, `--once`.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::binary::{signal, sigterm, spawn};
use crate::{Result, peer_for};

/// Peers on different ports, each asking `per_peer` times; returns every access number.
fn ask_from_many_ports(server: SocketAddr, peers: usize, per_peer: usize) -> Result<Vec<u64>> {
    let handles: Vec<_> = (0..peers)
        .map(|_| {
            thread::spawn(move || -> std::result::Result<Vec<u64>, String> {
                let peer = peer_for(server).map_err(|e| e.to_string())?;
                let mut numbers = Vec::new();
                let mut buf = [0; 64];
                for n in 0..per_peer {
                    peer.send_to(format!("hello {n}").as_bytes(), server)
                        .map_err(|e| e.to_string())?;
                    let (len, from) = peer.recv_from(&mut buf).map_err(|e| e.to_string())?;
                    if from != server {
                        return Err(format!("answer from {from}, not {server}"));
                    }
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    let number = text
                        .strip_prefix("Access count: ")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("unexpected answer {text:?}"))?;
                    numbers.push(number);
                }
                Ok(numbers)
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.join().map_err(|_| "a peer thread panicked")??);
    }
    Ok(all)
}

/// The lines of `err` that are summaries.
fn summaries(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("summary: ")).collect()
}

fn serves_with_two_workers(bind: &str) -> Result {
    let server = spawn(&["--bind", bind, "--workers", "2", "--quiet"])?;
    let (peers, per_peer) = (8, 25);
    let numbers = ask_from_many_ports(server.addr, peers, per_peer)?;
    let total = (peers * per_peer) as u64;
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(unique.len(), numbers.len(), "every access number is unique");
    assert_eq!(unique, (1..=total).collect(), "and none is skipped");
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    assert_eq!(
        summaries(&err),
        [format!(
            "summary: received {total}, counted {total}, duplicates 0, malformed 0, rate-limited 0, \
             busy 0, loops 0, truncated 0, peers {peers}"
        )],
        "one summary for the whole server: {err}"
    );
    Ok(())
}

/// Numbers unique and exact across workers, one summary, SIGTERM ends all workers.
#[test]
fn two_workers_count_exactly_once_with_one_summary() -> Result {
    serves_with_two_workers("127.0.0.1:0")
}

#[test]
fn two_workers_on_ipv6_loopback() -> Result {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP two_workers_on_ipv6_loopback: this machine has no ::1");
        return Ok(());
    }
    serves_with_two_workers("[::1]:0")
}

/// With several workers each socket has SO_REUSEPORT, but the first is bound without it: an
/// address held by another program, or by another udptalk server with workers, is refused.
#[test]
fn workers_still_get_address_in_use() -> Result {
    let taken = UdpSocket::bind("127.0.0.1:0")?;
    let held = spawn(&["--bind", "127.0.0.1:0", "--workers", "2", "--quiet"])?;
    for addr in [taken.local_addr()?.to_string(), held.addr.to_string()] {
        let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
            .args(["--bind", &addr, "--workers", "2"])
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{addr}");
        assert_eq!(
            String::from_utf8(output.stderr)?,
            format!(
                "error: udp address {addr} is already in use (is another server running?); stop \
                 it, or pick another address with --bind, e.g. --bind 127.0.0.1:0 for any free port\n"
            )
        );
    }
    Ok(())
}

#[test]
fn once_with_workers_is_bad_usage() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args(["--bind", "127.0.0.1:0", "--once", "--workers", "2"])
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8(output.stderr)?;
    assert!(
        err.starts_with("error: --once takes exactly one datagram"),
        "{err}"
    );
    Ok(())
}

/// Two datagrams already queued when the server reads: `--once` takes one, answers one.
#[test]
fn once_takes_exactly_one_of_two_queued_datagrams() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--once", "--quiet"])?;
    let peer = peer_for(server.addr)?;
    // Stopped, the server cannot read until both datagrams are queued.
    signal(server.child.id(), "STOP")?;
    peer.send_to(b"first", server.addr)?;
    peer.send_to(b"second", server.addr)?;
    signal(server.child.id(), "CONT")?;
    let mut buf = [0; 64];
    let (len, _) = peer.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"Access count: 1");
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    assert!(
        err.starts_with("summary: received 1, counted 1,"),
        "one datagram taken: {err}"
    );
    peer.set_read_timeout(Some(Duration::from_millis(300)))?;
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "the second datagram was never answered"
    );
    Ok(())
}

/// `--idle` counts datagrams on every worker: one busy worker keeps the server up, and once
/// all are quiet the server ends with one summary.
#[test]
fn idle_means_no_datagram_on_any_worker() -> Result {
    let server = spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--idle",
        "700ms",
        "--quiet",
    ])?;
    let peer = peer_for(server.addr)?;
    let started = Instant::now();
    // One peer reaches one worker; the other worker sees nothing all along.
    for _ in 0..10 {
        crate::ask(&peer, server.addr, b"still here")?;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "longer than --idle in all"
    );
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    assert_eq!(summaries(&err).len(), 1, "{err}");
    assert!(err.contains("summary: received 10, counted 10,"), "{err}");
    Ok(())
}

/// A broadcast datagram reaches every socket of a SO_REUSEPORT group: with --answer-group the
/// server answers and counts it once. Loopback has a broadcast address (127.255.255.255) on
/// Linux, which only a wildcard bind receives; where the system refuses to send to it, the
/// test says so and skips.
#[test]
fn a_broadcast_is_answered_and_counted_once_by_two_workers() -> Result {
    let server = spawn(&[
        "--bind",
        "0.0.0.0:0",
        "--workers",
        "2",
        "--quiet",
        "--answer-group",
    ])?;
    let peer = UdpSocket::bind("127.0.0.1:0")?;
    peer.set_broadcast(true)?;
    let broadcast = SocketAddr::from(([127, 255, 255, 255], server.addr.port()));
    let rounds = 5;
    for n in 1..=rounds {
        if let Err(e) = peer.send_to(format!("anyone there? {n}").as_bytes(), broadcast) {
            eprintln!(
                "SKIP a_broadcast_is_answered_and_counted_once: cannot send to {broadcast}: {e}"
            );
            return Ok(());
        }
        // Each broadcast gets exactly one answer: the next one read is this round's.
        peer.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0; 64];
        let (len, from) = peer.recv_from(&mut buf)?;
        assert_eq!(&buf[..len], format!("Access count: {n}").as_bytes());
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], server.addr.port())));
    }
    // Time for a wrongly answered copy to arrive.
    peer.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0; 64];
    if let Ok((len, _)) = peer.recv_from(&mut buf) {
        return Err(format!(
            "a second answer: {:?}",
            String::from_utf8_lossy(&buf[..len])
        )
        .into());
    }
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    assert!(
        err.contains(&format!("summary: received {rounds}, counted {rounds},")),
        "{err}"
    );
    Ok(())
}

/// Without --answer-group, a broadcast datagram is not answered: it is counted once (two
/// workers get a copy each) as group-ignored, and the books still balance.
#[test]
fn a_broadcast_is_ignored_and_counted_once_without_answer_group() -> Result {
    let server = spawn(&["--bind", "0.0.0.0:0", "--workers", "2", "--quiet"])?;
    let peer = UdpSocket::bind("127.0.0.1:0")?;
    peer.set_broadcast(true)?;
    let broadcast = SocketAddr::from(([127, 255, 255, 255], server.addr.port()));
    let rounds = 3;
    for n in 1..=rounds {
        if let Err(e) = peer.send_to(format!("anyone there? {n}").as_bytes(), broadcast) {
            eprintln!("SKIP a_broadcast_is_ignored: cannot send to {broadcast}: {e}");
            return Ok(());
        }
    }
    // A unicast datagram after them is answered: the server is there, and it has read the
    // broadcasts before it (one peer, one worker, in order).
    let unicast = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    peer.send_to(b"and you?", unicast)?;
    peer.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0; 64];
    let (len, from) = peer.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"Access count: 1");
    assert_eq!(from, unicast);
    peer.set_read_timeout(Some(Duration::from_millis(300)))?;
    if let Ok((len, _)) = peer.recv_from(&mut buf) {
        return Err(format!(
            "a broadcast was answered: {:?}",
            String::from_utf8_lossy(&buf[..len])
        )
        .into());
    }
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    // received = counted + duplicates + malformed + rate-limited + busy + loops + group-ignored
    assert!(
        err.contains(&format!(
            "summary: received {}, counted 1, duplicates 0, malformed 0, rate-limited 0, \
             busy 0, loops 0, group-ignored {rounds}, truncated 0,",
            rounds + 1
        )),
        "{err}"
    );
    Ok(())
}

/// A client with 32 datagrams of 16 KiB in flight loses none while the server is not
/// scheduled: the server asks for a receive buffer that holds them (the system's default
/// holds about a dozen). A sink, so that only the server's buffer is tested. Skipped, with the reason, where `net.core.rmem_max` caps the request
/// below what 32 of them take.
#[test]
fn a_window_of_large_datagrams_waits_whole_in_the_receive_buffer() -> Result {
    const WINDOW: u64 = 32;
    const SIZE: usize = 16 << 10;
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    // Each datagram takes its payload plus a few hundred bytes of bookkeeping; Linux doubles
    // the size granted for that bookkeeping.
    if rmem_max * 2 < WINDOW as usize * (SIZE + 1024) {
        eprintln!("skipped: net.core.rmem_max is {rmem_max} bytes, too small for 32 × 16 KiB");
        return Ok(());
    }
    let server = spawn(&["--bind", "127.0.0.1:0", "--mode", "sink", "--quiet"])?;
    let peer = peer_for(server.addr)?;
    signal(server.child.id(), "STOP")?;
    let datagram = vec![b'x'; SIZE];
    for _ in 0..WINDOW {
        peer.send_to(&datagram, server.addr)?;
    }
    signal(server.child.id(), "CONT")?;
    // The report query comes after the 32 in the same queue: its answer means all were read.
    peer.send_to(proto::probe::SINK_REPORT_QUERY, server.addr)?;
    let mut buf = [0; 256];
    let (len, _) = peer.recv_from(&mut buf)?;
    let report = proto::probe::SinkReport::decode(&buf[..len]).ok_or("not a sink report")?;
    assert_eq!(report.datagrams, WINDOW, "{report}");
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0);
    assert!(
        err.starts_with(&format!(
            "summary: received {n}, counted {n},",
            n = WINDOW + 1
        )),
        "{err}"
    );
    Ok(())
}
