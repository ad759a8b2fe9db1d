//! `bench` against the server's books: what the client's closed-loop `bench` reports must equal
//! what the server counted, with one worker and two, in plain text and JSON; and an open-loop
//! `bench --rate` against a sink must agree with the sink's own count.
//!
//! No speed is checked here (that is `cargo xtask bench`'s business): a debug build, 1 s of
//! load at 32 in flight, and the counts must be exact. Loopback loses nothing a socket buffer
//! can hold, and 32 datagrams in flight fit any buffer.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Checks, Summary, start_server, stop_server};
use crate::Bins;
use crate::bench::{Load, parse_bench};
use crate::peers::{self, Output};

/// The bench's load: short, as only counts are checked.
const DURATION: &str = "1s";

/// How long the client may run: its second of load, the wait for the last replies, and a
/// slow debug build on a loaded machine.
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// The JSON row's `--size`: with JSON it is the whole envelope, and a probe's envelope takes
/// about 93 bytes (the client's default, 14, is the plain probe's).
const JSON_SIZE: &str = "128";

/// Requests in flight for the closed-loop rows.
const WINDOW: &str = "32";

/// `udptalk-client bench --server ADDR --duration 1s --output json ARGS…`, run to its end.
fn run_bench(bins: &Bins, server: SocketAddr, args: &[&str]) -> Result<Output, String> {
    let mut command = Command::new(&bins.client);
    command
        .args(["bench", "--server", &server.to_string()])
        .args(["--duration", DURATION, "--output", "json"])
        .args(args);
    peers::run(command, None, CLIENT_DEADLINE)
}

/// The bench's result object, or the problems that kept us from reading it.
fn read_bench(client: &Output, checks: &mut Checks) -> Option<Load> {
    super::check_exit(client, 0, checks);
    match parse_bench(&client.stdout) {
        Ok(load) => {
            checks.figure(format!(
                "sent {}, received {} (warm-up included), lost {}",
                load.all_sent(),
                load.all_received(),
                load.lost
            ));
            Some(load)
        }
        Err(problem) => {
            checks.fail(format!("udptalk-client bench --output json: {problem}"));
            checks.output("client", client);
            None
        }
    }
}

/// Closed loop against `count --quiet` with `server_args`, the client's `--encoding`
/// `encoding`: counted = sent = received, lost 0, highest `Access count` = counted,
/// duplicates 0.
fn counts(bins: &Bins, server_args: &[&str], encoding: &str) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let mut args = vec!["--mode", "count"];
    args.extend_from_slice(server_args);
    let server = start_server(bins, "127.0.0.1:0", &args, &mut checks)?;
    let mut client_args = vec!["--window", WINDOW, "--encoding", encoding];
    if encoding == "json" {
        client_args.extend(["--size", JSON_SIZE]);
    }
    let client = run_bench(bins, server.addr, &client_args);
    let summary = stop_server(server, &mut checks)?;
    let client = client?;
    let (Some(load), Some(summary)) = (read_bench(&client, &mut checks), summary) else {
        return Ok(checks);
    };
    summary.check_server_books(&mut checks);
    check_counts(&load, &summary, &mut checks);
    if checks.problems.is_empty() {
        return Ok(checks);
    }
    checks.output("client", &client);
    Ok(checks)
}

/// The closed loop's books: what the bench sent, received and saw (its warm-up included: the
/// server counts those too) against the summary.
fn check_counts(load: &Load, summary: &Summary, checks: &mut Checks) {
    let counted = summary.get("counted");
    let (sent, received) = (load.all_sent(), load.all_received());
    checks.figure(format!("server counted {}", show(counted)));
    checks.check(load.sent > 0, || "the bench sent nothing".to_owned());
    checks.check(counted == Some(sent), || {
        format!(
            "server counted {} but the bench sent {sent} (warm-up included): {summary}",
            show(counted)
        )
    });
    checks.check(received == sent && load.lost == 0, || {
        format!(
            "the bench received {received} of {sent} (lost {}) on loopback at {WINDOW} in flight",
            load.lost
        )
    });
    checks.check(load.highest_access == counted, || {
        format!(
            "the bench's highest Access count is {} but the server counted {}",
            show(load.highest_access),
            show(counted)
        )
    });
    checks.check(summary.get("duplicates") == Some(0), || {
        format!("server counted duplicates: {summary}")
    });
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "nothing".to_owned(), |n| n.to_string())
}

/// `bench` counts with `--workers 1`.
pub fn one_worker(bins: &Bins) -> Result<Checks, String> {
    counts(bins, &["--workers", "1"], "plain")
}

/// `bench` counts with `--workers 2`: one shared counter, so still exact.
pub fn two_workers(bins: &Bins) -> Result<Checks, String> {
    counts(bins, &["--workers", "2"], "plain")
}

/// `bench --encoding json` counts against `--encoding auto`: no request counted twice.
pub fn json(bins: &Bins) -> Result<Checks, String> {
    counts(bins, &["--encoding", "auto"], "json")
}

/// Open loop against a sink: the sink's report (in the bench's `sink` object) counts every
/// datagram sent.
pub fn sink(bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = start_server(bins, "127.0.0.1:0", &["--mode", "sink"], &mut checks)?;
    let client = run_bench(bins, server.addr, &["--rate", "1000/s"]);
    stop_server(server, &mut checks)?;
    let client = client?;
    let Some(load) = read_bench(&client, &mut checks) else {
        return Ok(checks);
    };
    let datagrams = load.raw["sink"]["datagrams"].as_u64();
    checks.figure(format!("sink datagrams {}", show(datagrams)));
    checks.check(load.sent > 0, || "the bench sent nothing".to_owned());
    checks.check(datagrams == Some(load.all_sent()), || {
        format!(
            "the sink's report counts {} datagrams but the bench sent {} (warm-up included); \
             its sink object: {}",
            show(datagrams),
            load.all_sent(),
            load.raw.get("sink").unwrap_or(&Value::Null)
        )
    });
    if !checks.problems.is_empty() {
        checks.output("client", &client);
    }
    Ok(checks)
}
