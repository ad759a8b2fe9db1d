//! The lab rows of a server's own limits on a non-loopback bind, measured on the router with
//! nftables counters rather than with the server's summary: the rate limit (burst, then rate),
//! the 3× amplification budget, and loss made by the kernel (`numgen random`).

use std::thread;
use std::time::{Duration, Instant};

use super::{Lab, S1_V4, port};
use crate::Bins;
use crate::faults::{Checks, Summary, check_exit, stop_server};
use crate::peers::Proc;

/// The default rate limit of a non-loopback bind, datagrams per second per source IP.
const RATE: f64 = 1000.0;

/// Its burst: twice the rate.
const BURST: u64 = 2000;

/// Datagrams of the first, fast burst: more than the burst.
const BURST_SENT: u64 = 3000;

/// Counts forwarded requests to and answers from s1's `port` on the router.
fn count_s1(lab: &Lab, port: &str) -> Result<(), String> {
    lab.nft(
        "r",
        &format!(
            "add rule inet ut forward ip daddr {S1_V4} udp dport {port} counter name req\n\
             add rule inet ut forward ip saddr {S1_V4} udp sport {port} counter name ans"
        ),
    )
}

/// Rate limit: a burst of 3000 as fast as the client sends gets the burst (2000) answered and
/// no more than the refill; then a steady 3000/s gets about 1000/s answered, read on the
/// router's counter between 0.8 s and 1.8 s into it.
pub fn rate_limit(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(bins, "s1", &format!("{S1_V4}:0"), &[], &mut checks)?;
    let p = port(&server);
    count_s1(lab, &p)?;
    let target = format!("{S1_V4}:{p}");
    let count = BURST_SENT.to_string();
    let overflowed_before = lab.rcvbuf_errors("s1")?;
    let burst = lab.client(
        bins,
        "c1",
        &[
            "bench",
            "--server",
            &target,
            "--rate",
            "20000/s",
            "--count",
            &count,
            "--duration",
            "10s",
            "--warmup",
            "0",
            "--timeout",
            "300ms",
        ],
        &[],
    )?;
    let (sent1, _) = lab.counter("r", "req")?;
    let (answered1, _) = lab.counter("r", "ans")?;
    let took = burst.elapsed.as_secs_f64();
    // A server slower than the burst (a busy machine, a debug build) loses datagrams to its
    // full receive buffer before the limiter sees them: those count towards the burst.
    let overflowed = lab.rcvbuf_errors("s1")? - overflowed_before;
    checks.check(sent1 == BURST_SENT, || {
        format!("the router forwarded {sent1} requests of the burst, expected {BURST_SENT}")
    });
    let most = BURST as f64 + RATE * took;
    checks.check(
        answered1 + overflowed >= BURST.min(sent1) && answered1 as f64 <= most,
        || {
            format!(
                "burst: {answered1} answers of {sent1} ({overflowed} lost to s1's full receive \
                 buffer); expected at least the burst {BURST} and at most {most:.0} (the burst + \
                 {RATE}/s over the {took:.2}s the client ran)"
            )
        },
    );
    checks.figure(format!(
        "burst: {sent1} sent in {took:.2}s, {answered1} answered, {overflowed} lost to a full \
         receive buffer"
    ));
    checks.output("bench (burst)", &burst);

    // A steady 3000/s for 2.5 s: past its first 0.8 s the bucket is empty, and answers come at
    // the rate.
    let steady = lab.exec(
        "c1",
        &bins.client,
        &[
            "bench",
            "--server",
            &target,
            "--rate",
            "3000/s",
            "--duration",
            "2500ms",
            "--warmup",
            "0",
            "--timeout",
            "300ms",
        ],
    );
    let started = Instant::now();
    let steady = Proc::spawn(steady, None)?;
    thread::sleep(Duration::from_millis(800));
    let (answered_a, _) = lab.counter("r", "ans")?;
    let at_a = started.elapsed();
    let (sent_a, _) = lab.counter("r", "req")?;
    thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed() - at_a));
    let (answered_b, _) = lab.counter("r", "ans")?;
    let at_b = started.elapsed();
    let (sent_b, _) = lab.counter("r", "req")?;
    let steady = steady.wait(Duration::from_secs(20));
    let window = (at_b - at_a).as_secs_f64();
    let rate = (answered_b - answered_a) as f64 / window;
    let offered = (sent_b - sent_a) as f64 / window;
    checks.check((RATE * 0.5..=RATE * 1.5).contains(&rate), || {
        format!(
            "steady: {rate:.0} answers/s between {:.2}s and {:.2}s (offered {offered:.0}/s), \
             expected about {RATE}/s",
            at_a.as_secs_f64(),
            at_b.as_secs_f64()
        )
    });
    checks.check(offered > RATE * 1.5, || {
        format!("steady: the client offered only {offered:.0}/s, not enough to test {RATE}/s")
    });
    checks.figure(format!("then {offered:.0}/s offered: {rate:.0}/s answered"));
    checks.output("bench (steady)", &steady);
    let summary = stop_server(server, &mut checks)?;
    if let Some(summary) = summary {
        summary.check_server_books(&mut checks);
        if let Ok(limited) = summary.need("rate-limited") {
            checks.figure(format!("server rate-limited {limited}"));
        }
    }
    Ok(checks)
}

/// Amplification: a json server answers a 1-byte datagram with an error envelope many times
/// its size; off loopback the budget lets through at most 3× the bytes received, measured on
/// the router (IP bytes: the budget counts the headers too).
pub fn amplification(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(
        bins,
        "s1",
        &format!("{S1_V4}:0"),
        &["--encoding", "json", "--rate-limit", "0"],
        &mut checks,
    )?;
    let p = port(&server);
    count_s1(lab, &p)?;
    let target = format!("{S1_V4}:{p}");
    let bench = lab.client(
        bins,
        "c1",
        &[
            "bench",
            "--server",
            &target,
            "--payload-hex",
            "78",
            "--rate",
            "500/s",
            "--count",
            "200",
            "--duration",
            "5s",
            "--warmup",
            "0",
            "--timeout",
            "200ms",
        ],
        &[],
    )?;
    checks.check(bench.killed_after.is_none(), || {
        "the client did not end by itself".to_owned()
    });
    checks.output("bench", &bench);
    let (requests, request_bytes) = lab.counter("r", "req")?;
    let (answers, answer_bytes) = lab.counter("r", "ans")?;
    let summary = stop_server(server, &mut checks)?;
    checks.check(requests == 200, || {
        format!("the router forwarded {requests} requests, expected 200")
    });
    checks.check(answer_bytes <= 3 * request_bytes, || {
        format!("answers {answer_bytes} B > 3 × requests {request_bytes} B: the budget was broken")
    });
    let each_request = request_bytes / requests.max(1);
    let each_answer = answer_bytes / answers.max(1);
    checks.check(answers > 0 && each_answer > 3 * each_request, || {
        format!(
            "{answers} answers of {each_answer} B each for requests of {each_request} B: the row \
             needs answers over 3× their request to test the budget"
        )
    });
    let mut dropped = None;
    if let Some(summary) = summary {
        summary.check_server_books(&mut checks);
        dropped = summary.get("amplification-dropped");
        checks.check(dropped.is_some_and(|d| d > 0), || {
            format!("server summary must show `amplification-dropped N` > 0: {summary}")
        });
    }
    checks.figure(format!(
        "{requests} requests {request_bytes} B ({each_request} B each), {answers} answers \
         {answer_bytes} B ({each_answer} B each): {:.2}×, amplification-dropped {}",
        answer_bytes as f64 / request_bytes.max(1) as f64,
        dropped.unwrap_or(0)
    ));
    Ok(checks)
}

/// Messages of the kernel loss row.
const LOSS_MESSAGES: u64 = 100;

/// Kernel loss: the router drops 20% of UDP both ways at random (no seed: with 100 messages,
/// some 16 answers are lost and their resends reach the server as duplicates; none at all has
/// a chance of 0.84^100 ≈ 3·10⁻⁸). A message is lost after 13 attempts with a chance of
/// 0.36^13 ≈ 2·10⁻⁶.
pub fn kernel_loss(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(bins, "s1", &format!("{S1_V4}:0"), &[], &mut checks)?;
    let p = port(&server);
    lab.nft(
        "r",
        "add rule inet ut forward meta l4proto udp numgen random mod 100 < 20 counter name req \
         drop",
    )?;
    let target = format!("{S1_V4}:{p}");
    let messages: Vec<String> = (1..=LOSS_MESSAGES)
        .map(|n| format!("message {n}"))
        .collect();
    let client = lab.client(
        bins,
        "c1",
        &[
            "--server",
            &target,
            "--encoding",
            "json",
            "--timeout",
            "50ms",
            "--retries",
            "12",
        ],
        &messages,
    )?;
    let (dropped, _) = lab.counter("r", "req")?;
    thread::sleep(Duration::from_millis(100));
    let summary = stop_server(server, &mut checks)?;
    check_exit(&client, 0, &mut checks);
    let answers: Vec<String> = client
        .stdout_lines()
        .into_iter()
        .filter_map(|line| line.strip_prefix("Server message: ").map(str::to_owned))
        .collect();
    let expected: Vec<String> = (1..=LOSS_MESSAGES)
        .map(|n| format!("Access count: {n}"))
        .collect();
    checks.check(answers == expected, || {
        format!(
            "client must print `Access count: 1` to `{LOSS_MESSAGES}` once each, in order; got \
             {} answers: {:?}",
            answers.len(),
            answers.iter().take(20).collect::<Vec<_>>()
        )
    });
    checks.figure(format!("router dropped {dropped}"));
    if let Some(client_summary) = Summary::find(&client.stderr_lines()) {
        checks.check(
            client_summary.get("answered") == Some(LOSS_MESSAGES)
                && client_summary.get("lost") == Some(0),
            || {
                format!(
                    "client summary must say `answered {LOSS_MESSAGES}`, `lost 0`: {client_summary}"
                )
            },
        );
        checks.figure(format!("client: {client_summary}"));
    } else {
        checks.fail("the client printed no summary, yet it had to resend");
    }
    if let Some(summary) = summary {
        summary.check_server_books(&mut checks);
        let counted = summary.get("counted");
        let duplicates = summary.get("duplicates");
        checks.check(counted == Some(LOSS_MESSAGES), || {
            format!("server must count {LOSS_MESSAGES}, one per message: {summary}")
        });
        checks.check(duplicates.is_some_and(|d| d > 0), || {
            format!("server duplicates must be > 0 (resends of messages whose answer was lost): {summary}")
        });
        checks.figure(format!(
            "server counted {}, duplicates {}",
            counted.unwrap_or(0),
            duplicates.unwrap_or(0)
        ));
    }
    Ok(checks)
}
