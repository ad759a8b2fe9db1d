//! The faults stage of `cargo xtask test`: UDP's failure modes and hostile peers injected, and
//! what udptalk must do under each checked.
//!
//! Each fault is a row with a name that says the fault and the outcome checked; [`run`] plays
//! them one after another (the flood would disturb the timings of the others) and prints one
//! `PASS`, `FAIL` or `SKIP` line each into the [`Tally`] that the matrix also counts into.
//!
//! - **lossy proxy** ([`lossy`]): a proxy between the JSON client and the server drops,
//!   duplicates, delays and reorders a fixed pattern of datagrams both ways; every answer must
//!   be printed once and every request counted once.
//! - **loops** ([`loops`]): one datagram forged from one server to another (ours in every pair
//!   of modes and encodings, the tutorial's, socat's echo) must not start an endless exchange.
//! - **forged acks** ([`forged_acks`]): requests forged from the client's address with random
//!   ids and acks must not silence the client.
//! - **flood** ([`flood`]): 100,000 hostile datagrams; the server still answers, its books
//!   balance against the kernel's, its memory stays small, it does not panic.
//! - **bench counts** ([`bench_counts`]): the client's `bench` against the server's books,
//!   with 1 and 2 workers and JSON, and against a sink; exact counts, no speed.
//!
//! What one program shows alone is tested in its crate (a closed port, a silent peer, a
//! wildcard bind, a stdout nobody reads, signals); these rows need two programs, a proxy,
//! forged datagrams or `/proc`.
//! Forging needs raw sockets (root): without them, those rows are skipped with the reason.
//!
//! All traffic stays on 127.0.0.0/8 and ::1; every server binds port 0 and announces its port;
//! every sending loop is bounded in count and time, and every wait has a deadline.

mod bench_counts;
mod flood;
mod forged_acks;
mod loops;
pub(crate) mod lossy;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bins;
use crate::peers::{self, Output, Server, indent};
use crate::tally::{Outcome, Tally};

/// How long a server may take to end after SIGTERM: it looks at its stop flag at least every
/// 250 ms.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The `--idle` of every server: a backstop, so that none outlives an interrupted run. Each row
/// stops its server with SIGTERM long before.
pub(crate) const BACKSTOP_IDLE: &str = "30s";

/// The tutorial's request.
const HELLO: &str = "Hello Server!!";

/// The start of the count server's answer, `Access count: N`.
const ACCESS_COUNT: &str = "Access count: ";

/// The fields every `udptalk-server` summary starts with, in this order; more may follow.
const SERVER_FIELDS: [&str; 9] = [
    "received",
    "counted",
    "duplicates",
    "malformed",
    "rate-limited",
    "busy",
    "loops",
    "truncated",
    "peers",
];

/// The summary fields whose sum is `received`: every datagram is counted under exactly one.
/// `group-ignored` (datagrams sent to a broadcast or multicast address, not answered) is shown
/// only when not 0, after `loops`.
const SERVER_PARTS: [&str; 7] = [
    "counted",
    "duplicates",
    "malformed",
    "rate-limited",
    "busy",
    "loops",
    "group-ignored",
];

/// The fields of [`SERVER_PARTS`] a summary shows only when they are not 0.
const SERVER_RARE_PARTS: [&str; 1] = ["group-ignored"];

/// A fault: the row's name and the function that injects it and checks the outcome.
type Fault = (&'static str, fn(&Bins) -> Result<Checks, String>);

/// The rows, in the order they run.
const FAULTS: [Fault; 9] = [
    (
        "faults lossy proxy (drop, duplicate, delay ≤1s, reorder, both ways): json client \
         --retries 6 prints answers 1..=20 once each, server counts 20, cache answers the rest",
        lossy::run,
    ),
    (
        "faults loops v4: one forged datagram between 9 mode pairs + json/plain pairs + \
         udp-server2.py + socat echo, ≤10 datagrams each",
        loops::run_v4,
    ),
    (
        "faults loops v6: one forged datagram between 9 mode pairs + json/plain pairs + socat \
         echo, ≤10 datagrams each",
        loops::run_v6,
    ),
    (
        "faults forged acks: 10,000 JSON requests forged from the json client's address, \
         random ids and acks: client answers all 20 lines once each, lost 0, exit 0",
        forged_acks::run,
    ),
    (
        "faults flood of 100,000 hostile datagrams from 8 sockets: answers after, sent = \
         received + drops, R = C+D+M+L+B+O, VmHWM < 32 MiB, exit 0, no panic",
        flood::run,
    ),
    (
        "bench counts --workers 1: bench --window 32 --duration 1s against count --quiet: \
         server counted = bench sent = received, lost 0, highest Access count = counted",
        bench_counts::one_worker,
    ),
    (
        "bench counts --workers 2: bench --window 32 --duration 1s against count --quiet: \
         server counted = bench sent = received, lost 0, highest Access count = counted",
        bench_counts::two_workers,
    ),
    (
        "bench counts json: bench --encoding json --window 32 against count --encoding auto: \
         counted = sent = received, duplicates 0",
        bench_counts::json,
    ),
    (
        "bench sink: bench --rate 1000/s --duration 1s against --mode sink: the sink's report \
         counts every datagram sent",
        bench_counts::sink,
    ),
];

/// Plays the faults (those whose name contains `filter`, if given), printing one line each into
/// `tally`. Fails only when they cannot be played at all (a binary is missing).
pub fn run(filter: Option<&str>, tally: &mut Tally) -> Result<(), String> {
    let bins = Bins::locate()?;
    let started = Instant::now();
    let mut played = 0;
    for (name, fault) in FAULTS {
        if filter.is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        played += 1;
        let outcome = if cfg!(target_os = "linux") {
            match fault(&bins) {
                Ok(checks) => checks.outcome(),
                Err(error) => Outcome::Fail(vec![error]),
            }
        } else {
            Outcome::Skip("the faults read /proc, which only Linux has".to_owned())
        };
        tally.record(name, outcome);
    }
    println!(
        "faults: {played} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a row found: the problems (none: it passed), the figures it shows either way, and the
/// context printed under a failure (the programs' output).
#[derive(Default)]
pub struct Checks {
    /// Set when the row could not run here: the reason.
    skip: Option<String>,
    problems: Vec<String>,
    figures: Vec<String>,
    context: Vec<String>,
}

impl Checks {
    /// A row that cannot run here, for `reason`.
    pub(crate) fn skipped(reason: impl Into<String>) -> Checks {
        Checks {
            skip: Some(reason.into()),
            ..Checks::default()
        }
    }

    /// Records `problem` unless `ok`.
    pub(crate) fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }

    /// Records a problem.
    pub(crate) fn fail(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Records a figure for the row's line.
    pub(crate) fn figure(&mut self, figure: impl Into<String>) {
        self.figures.push(figure.into());
    }

    /// Records what a program printed, shown only if the row fails.
    pub(crate) fn output(&mut self, who: &str, output: &Output) {
        self.context
            .push(format!("{who}: {}", output.describe_end()));
        self.context
            .push(indent(&format!("{who} stdout"), &output.stdout_lines()));
        self.context
            .push(indent(&format!("{who} stderr"), &output.stderr_lines()));
    }

    pub(crate) fn outcome(self) -> Outcome {
        if let Some(reason) = self.skip {
            return Outcome::Skip(reason);
        }
        let figures = (!self.figures.is_empty()).then(|| self.figures.join(", "));
        if self.problems.is_empty() {
            return Outcome::Pass(figures);
        }
        let mut problems = self.problems;
        if let Some(figures) = figures {
            problems.push(format!("figures: {figures}"));
        }
        problems.extend(self.context);
        Outcome::Fail(problems)
    }
}

/// A `summary: name value, name value, …` line of the server or the client, field by field.
pub struct Summary {
    line: String,
    fields: Vec<(String, String)>,
}

impl Summary {
    /// The last summary line in `lines`, if any.
    pub(crate) fn find(lines: &[String]) -> Option<Summary> {
        let line = lines
            .iter()
            .rev()
            .find(|line| line.starts_with("summary: "))?;
        let fields = line
            .trim_start_matches("summary: ")
            .split(", ")
            .map(|field| {
                // The name is the words before the first one that starts with a figure:
                // `duplicates dropped 3`, `3 messages sent in 4 datagrams`, `peers ≥65,536`.
                let at = field
                    .char_indices()
                    .find(|&(i, c)| {
                        (c.is_ascii_digit() || c == '≥') && (i == 0 || field[..i].ends_with(' '))
                    })
                    .map_or(field.len(), |(i, _)| i);
                let (name, value) = field.split_at(at);
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        Some(Summary {
            line: line.clone(),
            fields,
        })
    }

    /// The figure of field `name` (`1,234` reads 1234); `None` when the field is missing or
    /// is not an exact figure (`≥65,536`).
    pub(crate) fn get(&self, name: &str) -> Option<u64> {
        let (_, value) = self.fields.iter().find(|(field, _)| field == name)?;
        let digits: String = value
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// The field's figure, or a problem naming the field and the line.
    pub(crate) fn need(&self, name: &str) -> Result<u64, String> {
        self.get(name)
            .ok_or_else(|| format!("summary has no figure `{name}`: {:?}", self.line))
    }

    /// Checks that the server's summary starts with [`SERVER_FIELDS`] in order, each with a
    /// figure, and that its books balance: received = counted + duplicates + malformed +
    /// rate-limited + busy + loops + group-ignored.
    pub(crate) fn check_server_books(&self, checks: &mut Checks) {
        if let Err(problem) = self.server_books() {
            checks.fail(problem);
        }
    }

    /// [`Summary::check_server_books`]'s verdict: the problem, if any.
    fn server_books(&self) -> Result<(), String> {
        let names: Vec<&str> = self
            .fields
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !SERVER_RARE_PARTS.contains(name))
            .collect();
        if names.get(..SERVER_FIELDS.len()) != Some(&SERVER_FIELDS[..]) {
            return Err(format!(
                "server summary is not of the form `summary: received R, counted C, duplicates \
                 D, malformed M, rate-limited L, busy B, loops O, truncated T, peers P[, …]`: \
                 {:?}",
                self.line
            ));
        }
        let figure = |name| self.get(name).unwrap_or(0);
        let sum: u64 = SERVER_PARTS.into_iter().map(figure).sum();
        let received = figure("received");
        if received == sum {
            Ok(())
        } else {
            Err(format!(
                "server's books do not balance: received {received} ≠ counted + duplicates + \
                 malformed + rate-limited + busy + loops + group-ignored = {sum}: {:?}",
                self.line
            ))
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

/// `udptalk-server --bind BIND --quiet --idle 30s ARGS…`, started and announced. Log lines
/// before the announce line are let through, so that the row still tests the server, and
/// recorded as a problem: the announce line must come first.
fn start_server(
    bins: &Bins,
    bind: &str,
    args: &[&str],
    checks: &mut Checks,
) -> Result<Server, String> {
    let mut full = vec!["--bind", bind, "--quiet", "--idle", BACKSTOP_IDLE];
    full.extend_from_slice(args);
    let server = Server::spawn_after_logs(&bins.server, full, 5)?;
    checks.check(server.early.is_empty(), || {
        format!(
            "`{}`: the first stderr line must be `listening on udp ADDR`; before it came {:?}",
            server.shown, server.early
        )
    });
    Ok(server)
}

/// Stops `server` with SIGTERM and checks that it exits 0 without a panic; returns its summary.
pub(crate) fn stop_server(server: Server, checks: &mut Checks) -> Result<Option<Summary>, String> {
    let output = server.terminate(STOP_DEADLINE)?;
    checks.check(output.code() == Some(0), || {
        format!(
            "server after SIGTERM: expected exit 0, got {}",
            output.describe_end()
        )
    });
    let stderr = output.stderr_lines();
    checks.check(!stderr.iter().any(|line| line.contains("panicked")), || {
        "server panicked (`panicked` on its stderr)".to_owned()
    });
    let summary = Summary::find(&stderr);
    checks.check(summary.is_some(), || {
        "server printed no `summary: …` line at exit".to_owned()
    });
    checks.output("server", &output);
    Ok(summary)
}

/// `udptalk-client --server ADDR ARGS… -- MESSAGES…`, run to its end, killed after `deadline`.
fn run_client(
    bins: &Bins,
    server: SocketAddr,
    args: &[&str],
    messages: &[String],
    deadline: Duration,
) -> Result<Output, String> {
    let mut command = Command::new(&bins.client);
    command
        .arg("--server")
        .arg(server.to_string())
        .args(args)
        .arg("--")
        .args(messages);
    peers::run(command, None, deadline)
}

/// Checks that the client ended by itself with `code`.
pub(crate) fn check_exit(client: &Output, code: i32, checks: &mut Checks) {
    checks.check(client.code() == Some(code), || {
        format!(
            "client: expected exit {code}, got {}",
            client.describe_end()
        )
    });
}

/// A socket's line of `/proc/net/udp`: its queues and the datagrams the kernel dropped for it.
#[derive(Debug, Clone, Copy)]
struct SocketStats {
    /// Bytes waiting to be read.
    rx_queue: u64,
    /// Datagrams dropped for this socket (receive buffer full, and the like).
    drops: u64,
}

/// The `/proc/net/udp` line of the one IPv4 socket bound to local port `port`. Columns:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
/// ref pointer drops`, addresses as `HEXADDR:HEXPORT`.
fn socket_stats(port: u16) -> Result<SocketStats, String> {
    let table = std::fs::read_to_string("/proc/net/udp")
        .map_err(|e| format!("cannot read /proc/net/udp: {e}"))?;
    let wanted = format!("{port:04X}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| {
            columns
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .is_some_and(|hex| hex.eq_ignore_ascii_case(&wanted))
        })
        .collect();
    let [columns] = rows.as_slice() else {
        return Err(format!(
            "/proc/net/udp has {} sockets on local port {port} ({wanted}), expected 1",
            rows.len()
        ));
    };
    let hex = |text: Option<&&str>| text.and_then(|text| u64::from_str_radix(text, 16).ok());
    let rx_queue = hex(columns
        .get(4)
        .and_then(|queues| queues.split(':').nth(1))
        .as_ref());
    let drops = columns.last().and_then(|drops| drops.parse().ok());
    match (rx_queue, drops) {
        (Some(rx_queue), Some(drops)) => Ok(SocketStats { rx_queue, drops }),
        _ => Err(format!(
            "cannot read rx_queue and drops in /proc/net/udp's line {:?}",
            columns.join(" ")
        )),
    }
}

/// Waits until the socket on `port` has nothing left to read (the server has received every
/// datagram the kernel kept), at most `timeout`; returns its stats then.
fn wait_drained(port: u16, timeout: Duration) -> Result<SocketStats, String> {
    peers::wait_for(timeout, || {
        let stats = socket_stats(port)?;
        if stats.rx_queue == 0 {
            return Ok(stats);
        }
        Err(format!(
            "the server left {} bytes unread on port {port} for {:.1}s",
            stats.rx_queue,
            timeout.as_secs_f64()
        ))
    })
}

/// The process's peak resident set (`VmHWM` in `/proc/PID/status`), in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path} has no readable VmHWM line"))
}

/// The JSON envelope of a request, as the client sends it.
fn json_request(id: u64, body: &str) -> String {
    format!(r#"{{"v":1,"id":{id},"kind":"request","body":"{body}","ack":{id}}}"#)
}

/// The number in `"id":N` of a JSON envelope (the first `"id"` member: the client and the
/// server both put it before the body).
fn envelope_id(datagram: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(datagram).ok()?;
    let (_, rest) = text.split_once(r#""id":"#)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The `N` of an `Access count: N` answer.
fn access_count(text: &str) -> Option<u64> {
    text.strip_prefix(ACCESS_COUNT)?.parse().ok()
}

/// A xorshift64* generator: test data that is the same on every run, not randomness anyone
/// relies on.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
