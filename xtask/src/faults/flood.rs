//! The flood: 100,000 datagrams of garbage and hostile JSON from 8 sockets at once, then proof
//! that the server still serves, kept exact books and stayed small.
//!
//! The datagrams come from a small xorshift generator with fixed seeds, so every run sends the
//! same ones: random bytes, invalid UTF-8, empty datagrams, a few of the largest IPv4 payload
//! (65,507 bytes; about 1%, or the flood would be mostly copying), hostile JSON (10,000-deep
//! nesting, `1e999999`, ids of the wrong type or out of range, unknown kinds, replies and
//! errors sent to the server) and valid requests. The kernel drops what the server cannot read
//! in time and counts it in the `drops` column of `/proc/net/udp`, so every datagram sent is
//! either received by the server or dropped for its port: sent = received + drops, exactly.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    ACCESS_COUNT, Checks, HELLO, Rng, access_count, json_request, peak_rss_kib, socket_stats,
    start_server, stop_server, wait_drained,
};
use crate::Bins;
use crate::peers;

/// Sockets flooding at once, each from its own thread.
const SENDERS: u64 = 8;

/// Datagrams per socket: 8 × 12,500 = 100,000.
const PER_SENDER: u64 = 12_500;

/// Datagrams per second from each sender: 8 × 4,000 = 32,000/s, about what a debug-build
/// server reads, so that most of the hostile datagrams are parsed rather than dropped by the
/// kernel (the books must balance either way). 100,000 datagrams take about 3 s.
const PACE_PER_SENDER: u64 = 4_000;

/// The flood stops early if it runs this long.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The server's peak resident set must stay under this (32 MiB).
const RSS_LIMIT_KIB: u64 = 32 * 1024;

/// The largest UDP payload over IPv4: 65,535 − 20 (IPv4 header) − 8 (UDP header).
const OVERSIZE: usize = 65_507;

/// How deep the nested JSON goes.
const DEPTH: usize = 10_000;

/// 2^53 − 1, the largest envelope id (JSON numbers are exact up to there).
const MAX_ID: u64 = (1 << 53) - 1;

/// The id of the JSON probe after the flood.
const PROBE_ID: u64 = 4242;

/// Hostile JSON: numbers no float holds, ids of the wrong type or out of 1..=2^53−1, unknown
/// kinds, versions, members, envelopes the server must not answer (replies, errors), truncation.
const HOSTILE: [&str; 30] = [
    r#"{"v":1,"id":1e999999,"kind":"request","body":"x"}"#,
    r#"{"v":1,"id":1e400}"#,
    r#"{"v":"1","id":[],"kind":{},"body":7}"#,
    r#"{"v":1,"id":0,"kind":"request","body":"zero"}"#,
    r#"{"v":1,"id":-1,"kind":"request","body":"minus one"}"#,
    r#"{"v":1,"id":9007199254740992,"kind":"request","body":"2^53"}"#,
    r#"{"v":1,"id":18446744073709551616,"kind":"request","body":"2^64"}"#,
    r#"{"v":1,"id":1.5,"kind":"request","body":"x"}"#,
    r#"{"v":1,"id":"7","kind":"request","body":"x"}"#,
    r#"{"v":1,"id":null,"kind":"request","body":"x"}"#,
    r#"{"v":1,"id":5,"kind":"reply","body":"x"}"#,
    r#"{"v":1,"id":6,"kind":"error","code":"busy","message":"x"}"#,
    r#"{"v":1,"id":7,"kind":"shout","body":"x"}"#,
    r#"{"v":1,"id":8,"kind":"","body":"x"}"#,
    r#"{"v":2,"id":9,"kind":"request","body":"x"}"#,
    r#"{"v":1e999999,"id":10,"kind":"request","body":"x"}"#,
    r#"{"v":1,"id":11,"kind":"request","body":"x","ack":-5}"#,
    r#"{"v":1,"id":12,"kind":"request","body":"x","ack":1e999}"#,
    r#"{"v":1,"id":13,"kind":"request","body":null}"#,
    r#"{"v":1,"id":14,"id":15,"kind":"request","body":"twice"}"#,
    r#"{"v":1,"id":16,"kind":"request","body":"\ud800 lone surrogate"}"#,
    r#"{"v":1,"id":17,"kind":"request","body":"x"} trailing"#,
    r#"{"v":1,"id":18,"kind":"request","body":"x""#,
    r#"{"v":1}"#,
    "{}",
    "[]",
    "null",
    "1e999999",
    "-0",
    r#""v""#,
];

/// Invalid UTF-8: a lone continuation byte, an overlong `/`, a surrogate, bytes no UTF-8 has,
/// a sequence cut short, a code point over U+10FFFF.
const NOT_UTF8: [&[u8]; 7] = [
    b"\x80",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xff\xfe",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"{\"v\":1,\"id\":3,\"kind\":\"request\",\"body\":\"\xff\"}",
];

/// The large datagrams, built once and shared by the senders.
struct Corpus {
    /// 65,507 bytes each: random bytes, a JSON request with a huge body, 65,507 `[`.
    oversize: [Vec<u8>; 3],
    /// 10,000-deep arrays, objects, and a request whose body is a deep array.
    deep: [Vec<u8>; 3],
}

impl Corpus {
    fn new() -> Corpus {
        let mut rng = Rng::new(0xF100D);
        let head = r#"{"v":1,"id":99,"kind":"request","body":""#;
        let body = "x".repeat(OVERSIZE - head.len() - 2);
        Corpus {
            oversize: [
                rng.bytes(OVERSIZE),
                format!("{head}{body}\"}}").into_bytes(),
                vec![b'['; OVERSIZE],
            ],
            deep: [
                "[".repeat(DEPTH).into_bytes(),
                r#"{"a":"#.repeat(DEPTH).into_bytes(),
                format!(
                    r#"{{"v":1,"id":20,"kind":"request","body":{}"#,
                    "[".repeat(DEPTH)
                )
                .into_bytes(),
            ],
        }
    }

    /// The next datagram: per mille, 10 oversize, 240 random bytes, 150 invalid UTF-8, 50
    /// empty, 250 hostile JSON, 150 random envelopes, 150 valid requests.
    fn datagram(&self, rng: &mut Rng) -> Cow<'_, [u8]> {
        let roll = rng.below(1000);
        if roll < 10 {
            Cow::Borrowed(rng.pick(&self.oversize).as_slice())
        } else if roll < 250 {
            let len = 1 + rng.below(1472) as usize;
            Cow::Owned(rng.bytes(len))
        } else if roll < 400 {
            let mut datagram = b"caf".to_vec();
            let bad: &[u8] = rng.pick::<&[u8]>(&NOT_UTF8);
            datagram.extend_from_slice(bad);
            datagram.extend_from_slice(b" ok");
            Cow::Owned(datagram)
        } else if roll < 450 {
            Cow::Borrowed(&[])
        } else if roll < 700 {
            if rng.below(10) == 0 {
                Cow::Borrowed(rng.pick(&self.deep).as_slice())
            } else {
                Cow::Borrowed(rng.pick(&HOSTILE).as_bytes())
            }
        } else if roll < 850 {
            Cow::Owned(random_envelope(rng).into_bytes())
        } else if rng.below(2) == 0 {
            Cow::Borrowed(HELLO.as_bytes())
        } else {
            let id = 1 + rng.below(MAX_ID);
            Cow::Owned(json_request(id, HELLO).into_bytes())
        }
    }
}

/// An envelope with fields drawn from valid and invalid values.
fn random_envelope(rng: &mut Rng) -> String {
    let v = rng.pick(&["1", "1", "1", "0", "2", "\"1\"", "-1"]);
    let id = match rng.below(6) {
        0 => "0".to_owned(),
        1 => "-1".to_owned(),
        2 => (MAX_ID + 1).to_string(),
        3 => MAX_ID.to_string(),
        4 => rng.next().to_string(),
        _ => (1 + rng.below(MAX_ID)).to_string(),
    };
    let kind = rng.pick(&["request", "request", "reply", "error", "ack", "", "REQUEST"]);
    let body: String = (0..rng.below(40))
        .map(|_| char::from(b' ' + rng.below(95) as u8))
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    format!(r#"{{"v":{v},"id":{id},"kind":"{kind}","body":"{body}","ack":{id}}}"#)
}

/// What one sender did.
#[derive(Default)]
struct Sent {
    /// Sends that returned `Ok`: the datagram left.
    ok: u64,
    /// Sends that failed.
    failed: u64,
    last_error: Option<String>,
    /// It hit [`TIME_LIMIT`].
    cut: bool,
}

/// One sender: a socket on 127.0.0.1 connected to the server, [`PER_SENDER`] datagrams at most.
/// The socket is returned so that it outlives the checks: the server's answers to it still
/// find a socket.
fn flood(
    server: SocketAddr,
    seed: u64,
    corpus: &Corpus,
    started: Instant,
) -> (Sent, Option<UdpSocket>) {
    let mut sent = Sent::default();
    let socket = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|socket| {
        socket.connect(server)?;
        Ok(socket)
    }) {
        Ok(socket) => socket,
        Err(e) => {
            sent.last_error = Some(format!("cannot bind and connect a sender: {e}"));
            return (sent, None);
        }
    };
    let mut rng = Rng::new(seed);
    for n in 0..PER_SENDER {
        if started.elapsed() > TIME_LIMIT {
            sent.cut = true;
            break;
        }
        if n % 100 == 0 {
            let due = started + Duration::from_micros(n * 1_000_000 / PACE_PER_SENDER);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let datagram = corpus.datagram(&mut rng);
        match socket.send(&datagram) {
            Ok(_) => sent.ok += 1,
            Err(e) => {
                sent.failed += 1;
                sent.last_error = Some(e.to_string());
            }
        }
    }
    (sent, Some(socket))
}

/// Datagrams the kernel dropped before they reached any socket, summed over CPUs: the second
/// column of `/proc/net/softnet_stat` (the backlog was full). Loopback traffic goes through it,
/// so a drop there would be missing from both the server's books and its socket's drops.
fn backlog_drops() -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        })
        .sum()
}

/// The row.
pub fn run(bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = start_server(bins, "127.0.0.1:0", &[], &mut checks)?;
    let addr = server.addr;
    let corpus = Corpus::new();
    let backlog_before = backlog_drops();

    let started = Instant::now();
    let results: Vec<(Sent, Option<UdpSocket>)> = thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|seed| {
                let corpus = &corpus;
                scope.spawn(move || flood(addr, seed + 1, corpus, started))
            })
            .collect();
        senders
            .into_iter()
            .filter_map(|sender| sender.join().ok())
            .collect()
    });
    let duration = started.elapsed();
    let sent: u64 = results.iter().map(|(sent, _)| sent.ok).sum();
    let failed: u64 = results.iter().map(|(sent, _)| sent.failed).sum();
    checks.check(results.len() == SENDERS as usize, || {
        format!(
            "{} of the {SENDERS} sender threads panicked",
            SENDERS as usize - results.len()
        )
    });
    let unbound: Vec<&String> = results
        .iter()
        .filter(|(_, socket)| socket.is_none())
        .filter_map(|(sent, _)| sent.last_error.as_ref())
        .collect();
    checks.check(unbound.is_empty(), || {
        format!("{} senders could not start: {unbound:?}", unbound.len())
    });
    if failed > 0 {
        let error = results
            .iter()
            .filter(|(sent, _)| sent.failed > 0)
            .find_map(|(sent, _)| sent.last_error.as_deref())
            .unwrap_or("?");
        checks.figure(format!("{failed} sends failed, e.g. {error}"));
    }
    if results.iter().any(|(sent, _)| sent.cut) {
        checks.figure(format!("flood cut at the {}s limit", TIME_LIMIT.as_secs()));
    }

    // Let the server read what the kernel kept, then ask it two valid questions: the answers
    // prove it still serves, and come in order after everything the flood left.
    let port = addr.port();
    let drained = wait_drained(port, Duration::from_secs(10));
    let plain = peers::exchange(addr, HELLO.as_bytes(), Duration::from_secs(2));
    let json = peers::exchange(
        addr,
        json_request(PROBE_ID, HELLO).as_bytes(),
        Duration::from_secs(2),
    );
    let stats = socket_stats(port);
    let rss = peak_rss_kib(server.pid());
    let backlog_after = backlog_drops();
    let summary = stop_server(server, &mut checks)?;
    if let Err(problem) = drained {
        checks.fail(problem);
    }

    let mut last_count = None;
    match plain {
        Ok(reply) => {
            let reply = String::from_utf8_lossy(&reply).into_owned();
            match access_count(&reply) {
                Some(n) => last_count = Some(n),
                None => checks.fail(format!(
                    "after the flood, `{HELLO}` got {reply:?}, expected `{ACCESS_COUNT}N`"
                )),
            }
        }
        Err(e) => checks.fail(format!("after the flood, `{HELLO}` got no answer: {e}")),
    }
    match json {
        Ok(reply) => {
            let reply = String::from_utf8_lossy(&reply).into_owned();
            let head = format!(r#"{{"v":1,"id":{PROBE_ID},"kind":"reply","body":"{ACCESS_COUNT}"#);
            let count = reply
                .strip_prefix(&head)
                .and_then(|rest| rest.strip_suffix(r#""}"#))
                .and_then(|n| n.parse::<u64>().ok());
            match count {
                Some(n) => {
                    checks.check(last_count.is_none_or(|last| n == last + 1), || {
                        format!(
                            "after the flood, the JSON request got count {n}, expected the plain \
                             request's + 1: {reply:?}"
                        )
                    });
                    last_count = Some(n);
                }
                None => checks.fail(format!(
                    "after the flood, the JSON request got {reply:?}, expected \
                     `{head}N\"}}`"
                )),
            }
        }
        Err(e) => checks.fail(format!(
            "after the flood, a JSON request got no answer: {e}"
        )),
    }

    if let Some(summary) = &summary {
        summary.check_server_books(&mut checks);
        match (summary.need("received"), &stats) {
            (Ok(received), Ok(stats)) => {
                let probes = 2;
                checks.check(sent + probes == received + stats.drops, || {
                    let backlog = match (backlog_before, backlog_after) {
                        (Some(before), Some(after)) if after > before => format!(
                            "; the kernel's backlog dropped {} datagrams meanwhile \
                             (/proc/net/softnet_stat)",
                            after - before
                        ),
                        _ => String::new(),
                    };
                    format!(
                        "sent {sent} + {probes} probes ≠ received {received} + drops {} = {}{backlog}",
                        stats.drops,
                        received + stats.drops
                    )
                });
                checks.figure(format!(
                    "sent {sent} + {probes} probes, received {received}, drops {}",
                    stats.drops
                ));
            }
            (received, stats) => {
                for problem in [received.err(), stats.as_ref().err().cloned()]
                    .into_iter()
                    .flatten()
                {
                    checks.fail(problem);
                }
            }
        }
        if let (Some(n), Ok(counted)) = (last_count, summary.need("counted")) {
            checks.check(counted == n, || {
                format!("server summary says counted {counted}, but its last answer was {n}")
            });
        }
    }
    match rss {
        Ok(kib) => {
            checks.check(kib < RSS_LIMIT_KIB, || {
                format!("server's peak RSS (VmHWM) {kib} kB, limit {RSS_LIMIT_KIB} kB")
            });
            checks.figure(format!("VmHWM {:.1} MiB", kib as f64 / 1024.0));
        }
        Err(e) => checks.fail(e),
    }
    let seconds = duration.as_secs_f64();
    checks.figure(format!(
        "flood {seconds:.2}s, {:.0} datagrams/s",
        sent as f64 / seconds.max(1e-9)
    ));
    if let (Some(before), Some(after)) = (backlog_before, backlog_after) {
        if after > before {
            checks.figure(format!("backlog drops {}", after - before));
        }
    }
    drop(results);
    Ok(checks)
}
