//! Running one row once: start its server pinned, load it with its generator pinned, read what
//! the server spent from `/proc`, stop it, and return a [`Sample`].
//!
//! The load generator sits behind one function, [`generate`]: `udptalk-client bench --output
//! json` or `sockperf ping-pong --full-rtt`, both reduced to the same [`Load`].

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rows::{Generator, Row, Server};
use crate::peers;

/// How long a server may take to announce itself or bind.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server may take to exit after SIGTERM (udptalk looks at its flag every 250 ms).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A generator may overrun its duration by this much (start-up, the wait for the last replies)
/// before it is killed.
const GENERATOR_GRACE: Duration = Duration::from_secs(20);

/// The bench's `--timeout`: a reply this late on loopback is lost (replies take microseconds to
/// milliseconds). The client's default, 2 s, would hold a lost request's slot for most of a
/// 3 s run (32 datagrams of 16 KiB overflow a default receive buffer) and make every run that
/// lost one wait 2 s at its end.
const BENCH_TIMEOUT: &str = "500ms";

/// The `--idle` of udptalk servers: a backstop so that none outlives an interrupted bench.
const BACKSTOP_IDLE: &str = "120s";

/// What the bench needs from the machine: binaries, tools and the number of cores.
pub struct Kit {
    /// `udptalk-server` (release).
    pub server: PathBuf,
    /// `udptalk-client` (release).
    pub client: PathBuf,
    /// `echo-baseline` (release).
    pub baseline: PathBuf,
    /// `sockperf`, if installed.
    pub sockperf: Option<PathBuf>,
    /// `taskset`, if installed: without it nothing is pinned.
    pub taskset: Option<PathBuf>,
    /// `nice -n -10`, when this user may raise priorities (root): the measured programs then
    /// win their cores from other work on a shared machine (builds), which otherwise halves a
    /// round's figures now and then.
    pub nice: bool,
    /// Cores this process may use.
    pub cores: usize,
    /// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`).
    pub ticks_per_s: u64,
    /// Why `udptalk-client bench` cannot run, if it cannot.
    pub no_bench: Option<String>,
    /// `udptalk-server --help`, to see which options it has.
    pub server_help: String,
    /// Where the printing rows' stdout goes.
    pub out_dir: PathBuf,
}

/// What a generator measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Replies per second over the measured time.
    pub replies_per_s: f64,
    /// RTT median, µs.
    pub p50_us: f64,
    /// RTT 99th percentile, µs.
    pub p99_us: f64,
    /// Requests sent in the measured time.
    pub sent: u64,
    /// Replies received in the measured time.
    pub received: u64,
    /// Requests of the measured time that got no reply.
    pub lost: u64,
    /// Requests sent in the warm-up before the measured time (not in `sent`, but served and
    /// counted by the server all the same).
    pub warmup_sent: u64,
    /// Replies received in the warm-up.
    pub warmup_received: u64,
    /// The highest `Access count: N` seen (udptalk's count mode).
    pub highest_access: Option<u64>,
    /// The generator's own output object (bench) or the lines read (sockperf).
    pub raw: Value,
}

impl Load {
    /// Every reply of the run, warm-up included: what the server's CPU time is divided by.
    pub fn all_received(&self) -> u64 {
        self.received + self.warmup_received
    }

    /// Every request of the run, warm-up included: what a count server must have counted.
    pub fn all_sent(&self) -> u64 {
        self.sent + self.warmup_sent
    }
}

/// One row's figures in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// What the generator measured.
    pub load: Load,
    /// Server CPU (user + system, all threads) over the load, µs per reply.
    pub cpu_us_per_reply: f64,
    /// The server's peak resident set (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// `counted` of udptalk's summary.
    pub counted: Option<u64>,
    /// `lines dropped` of udptalk's summary (0 when absent).
    pub lines_dropped: Option<u64>,
    /// The summary line itself.
    pub summary: Option<String>,
}

/// A server process started for a row, its stderr lines collected. Killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    shown: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the exit within [`STOP_TIMEOUT`] (killed after), then its stderr lines.
    fn stop(mut self) -> Result<Vec<String>, String> {
        peers::sigterm(self.pid())?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "`{}` did not exit within {}s of SIGTERM",
                        self.shown,
                        STOP_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        // Let the drain thread read the last lines (the summary) after the exit.
        thread::sleep(Duration::from_millis(20));
        Ok(lock(&self.stderr).clone())
    }
}

fn lock(lines: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    match lines.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// `nice -n -10 taskset -c CORES PROGRAM`, each part when available (both exec the next:
/// the program keeps the pid we started).
fn pinned(kit: &Kit, cores: &str, program: &Path) -> Command {
    let mut words: Vec<std::ffi::OsString> = Vec::new();
    if kit.nice {
        words.extend(["nice", "-n", NICENESS].map(Into::into));
    }
    if let Some(taskset) = &kit.taskset {
        words.extend([taskset.as_os_str().to_owned(), "-c".into(), cores.into()]);
    }
    words.push(program.as_os_str().to_owned());
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]);
    command
}

/// The niceness of the measured programs when raising priority is allowed.
const NICENESS: &str = "-10";

/// Whether `nice -n -10` works here, silently (an unprivileged `nice` warns on stderr, which
/// would come before a server's `listening on` line).
pub fn can_raise_priority() -> bool {
    Command::new("nice")
        .args(["-n", NICENESS, "true"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stderr.is_empty())
}

/// A child just started: its stderr lines, collected and also sent one by one.
struct Spawned {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    shown: String,
}

/// Starts `command` with stdout to `stdout`, its stderr lines collected and sent to
/// [`Spawned::lines`].
fn spawn(mut command: Command, stdout: Stdio) -> Result<Spawned, String> {
    let shown = peers::show_command(&command);
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = child.stderr.take() {
        let lines = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lock(&lines).push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    Ok(Spawned {
        child,
        stderr: lines,
        lines: rx,
        shown,
    })
}

/// Starts the row's server on 127.0.0.1 and waits until it serves.
fn start_server(kit: &Kit, row: &Row) -> Result<Running, String> {
    let cores = row.pinning.server_cores(kit.cores);
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    match &row.server {
        Server::Baseline { sockperf } => {
            let mut command = pinned(kit, cores, &kit.baseline);
            if *sockperf {
                command.arg("--sockperf");
            }
            command.arg(loopback.to_string());
            announced(command, Stdio::null())
        }
        Server::Udptalk { args, print } => {
            let mut command = pinned(kit, cores, &kit.server);
            command
                .args(["--bind", &loopback.to_string(), "--idle", BACKSTOP_IDLE])
                .args(args);
            let stdout = if *print {
                let path = kit.out_dir.join("server-stdout.txt");
                let file = File::create(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Stdio::from(file)
            } else {
                command.arg("--quiet");
                Stdio::null()
            };
            announced(command, stdout)
        }
        Server::Sockperf => {
            let sockperf = kit.sockperf.as_ref().ok_or("sockperf is not installed")?;
            let port = peers::free_port(loopback.ip())?;
            let mut command = pinned(kit, cores, sockperf);
            command.args(["server", "-i", "127.0.0.1", "-p", &port.to_string()]);
            let spawned = spawn(command, Stdio::null())?;
            let running = Running {
                child: spawned.child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                stderr: spawned.stderr,
                shown: spawned.shown,
            };
            // sockperf announces nothing parsable: wait until its socket is bound.
            peers::wait_for(READY_TIMEOUT, || match peers::udp_ports_of(running.pid()) {
                Ok(ports) if ports.contains(&port) => Ok(()),
                _ => Err(format!(
                    "`{}` did not bind port {port} within {}s",
                    running.shown,
                    READY_TIMEOUT.as_secs()
                )),
            })?;
            Ok(running)
        }
    }
}

/// Starts a server that announces `listening on udp ADDR` as its first stderr line.
fn announced(command: Command, stdout: Stdio) -> Result<Running, String> {
    let Spawned {
        child,
        stderr,
        lines,
        shown,
    } = spawn(command, stdout)?;
    let mut running = Running {
        child,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        stderr,
        shown,
    };
    let line = lines.recv_timeout(READY_TIMEOUT).map_err(|_| {
        format!(
            "`{}` printed no `listening on udp ADDR` within {}s; stderr: {:?}",
            running.shown,
            READY_TIMEOUT.as_secs(),
            lock(&running.stderr).join(" | ")
        )
    })?;
    running.addr = line
        .strip_prefix("listening on udp ")
        .and_then(|addr| addr.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| {
            format!(
                "`{}`: first stderr line is {line:?}, not `listening on udp ADDR`",
                running.shown
            )
        })?;
    Ok(running)
}

/// Runs `row` once: server, load, `/proc` figures, stop.
pub fn run_row(kit: &Kit, row: &Row, duration: Duration) -> Result<Sample, String> {
    let server = start_server(kit, row)?;
    let pid = server.pid();
    let cpu_before = cpu_ticks(pid)?;
    let load = generate(kit, row, server.addr, duration);
    let cpu_after = cpu_ticks(pid);
    let peak_rss_kib = peak_rss_kib(pid);
    let stderr = match &row.server {
        Server::Udptalk { .. } => Some(server.stop()?),
        // The baseline and sockperf print no books: SIGTERM (or the kill of drop) ends them.
        _ => None,
    };
    let load = load?;
    let ticks = cpu_after?.saturating_sub(cpu_before);
    let cpu_us = ticks as f64 * 1e6 / kit.ticks_per_s as f64;
    let summary = stderr
        .as_ref()
        .and_then(|lines| {
            lines
                .iter()
                .rev()
                .find(|line| line.starts_with("summary: "))
        })
        .cloned();
    if stderr.is_some() && summary.is_none() {
        return Err(format!(
            "udptalk-server printed no `summary: …` after SIGTERM; stderr: {:?}",
            stderr.unwrap_or_default().join(" | ")
        ));
    }
    Ok(Sample {
        cpu_us_per_reply: if load.all_received() > 0 {
            cpu_us / load.all_received() as f64
        } else {
            f64::NAN
        },
        peak_rss_kib: peak_rss_kib?,
        counted: summary
            .as_deref()
            .and_then(|s| summary_figure(s, "counted")),
        lines_dropped: summary
            .as_deref()
            .map(|s| summary_figure(s, "lines dropped").unwrap_or(0)),
        summary,
        load,
    })
}

/// Loads `target` with the row's generator for `duration`, pinned to the client's cores.
pub fn generate(
    kit: &Kit,
    row: &Row,
    target: SocketAddr,
    duration: Duration,
) -> Result<Load, String> {
    let cores = row.pinning.client_cores();
    match row.generator {
        Generator::Bench {
            encoding,
            payload_hex,
        } => {
            let mut command = pinned(kit, cores, &kit.client);
            command.args([
                "bench",
                "--server",
                &target.to_string(),
                "--duration",
                &format!("{}ms", duration.as_millis()),
                "--window",
                &row.window.to_string(),
                "--encoding",
                encoding,
                "--timeout",
                BENCH_TIMEOUT,
                "--output",
                "json",
            ]);
            match payload_hex {
                Some(hex) => command.args(["--payload-hex", hex]),
                None => command.args(["--size", &row.wire_size.unwrap_or(row.size).to_string()]),
            };
            let shown = peers::show_command(&command);
            let output = peers::run(command, None, duration + GENERATOR_GRACE)?;
            if output.code() != Some(0) {
                return Err(format!(
                    "`{shown}`: {}; stderr: {}",
                    output.describe_end(),
                    String::from_utf8_lossy(&output.stderr).trim_end()
                ));
            }
            parse_bench(&output.stdout).map_err(|e| format!("`{shown}`: {e}"))
        }
        Generator::SockperfPingPong => {
            let sockperf = kit.sockperf.as_ref().ok_or("sockperf is not installed")?;
            let mut command = pinned(kit, cores, sockperf);
            let seconds = duration.as_secs_f64().ceil().max(1.0);
            command.args([
                "ping-pong",
                "-i",
                &target.ip().to_string(),
                "-p",
                &target.port().to_string(),
                "-t",
                &format!("{seconds}"),
                "-m",
                &row.size.to_string(),
                "--mps=max",
                "--full-rtt",
            ]);
            let shown = peers::show_command(&command);
            let output = peers::run(
                command,
                None,
                Duration::from_secs_f64(seconds) + GENERATOR_GRACE,
            )?;
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            if output.code() != Some(0) {
                return Err(format!(
                    "`{shown}`: {}; output: {}",
                    output.describe_end(),
                    text.trim_end()
                ));
            }
            parse_sockperf(&text).map_err(|e| format!("`{shown}`: {e}"))
        }
    }
}

/// Reads `udptalk-client bench --output json`'s result: its `bench` line (an `exit` line
/// follows it).
pub fn parse_bench(stdout: &[u8]) -> Result<Load, String> {
    let text = String::from_utf8_lossy(stdout);
    let object: Value = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        // `kind` is the tag the bench's result had before JSON Lines: older builds print it.
        .find(|object| object["event"] == "bench" || object["kind"] == "bench")
        .ok_or_else(|| format!("no `bench` JSON line on stdout: {:?}", text.trim_end()))?;
    let number = |path: &[&str]| -> Result<f64, String> {
        let mut value = &object;
        for key in path {
            value = &value[*key];
        }
        value
            .as_f64()
            .ok_or_else(|| format!("its result has no number at {}", path.join(".")))
    };
    let count = |key: &str| number(&[key]).map(|n| n as u64);
    // No reply, no RTT: an open loop against a sink reports `null` percentiles.
    let rtt = |key: &str| {
        let value = &object["rtt_us"][key];
        match value.as_f64() {
            Some(us) => Ok(us),
            None if value.is_null() => Ok(f64::NAN),
            None => Err(format!("its rtt_us.{key} is {value}, not a number or null")),
        }
    };
    Ok(Load {
        replies_per_s: number(&["replies_per_s"])?,
        p50_us: rtt("p50")?,
        p99_us: rtt("p99")?,
        sent: count("sent")?,
        received: count("received")?,
        lost: count("lost")?,
        // Older or other generators may have no warm-up: none then.
        warmup_sent: object["warmup_sent"].as_u64().unwrap_or(0),
        warmup_received: object["warmup_received"].as_u64().unwrap_or(0),
        highest_access: object["highest_access"].as_u64(),
        raw: object,
    })
}

/// Reads `sockperf ping-pong --full-rtt`'s report: replies/s from the `[Valid Duration]` line
/// (received over run time, warm-up excluded), the percentiles (µs, round trips with
/// `--full-rtt`), and from the `[Total Run]` counts what the warm-up and the run's edges
/// added (served by the server all the same).
pub fn parse_sockperf(text: &str) -> Result<Load, String> {
    let field = |line: &str, name: &str| -> Option<f64> {
        let (_, rest) = line.split_once(&format!("{name}="))?;
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        number.parse().ok()
    };
    let line_with = |marker: &str| text.lines().find(|line| line.contains(marker));
    let valid = line_with("[Valid Duration]").ok_or("no `[Valid Duration]` line")?;
    let total = line_with("[Total Run]").ok_or("no `[Total Run]` line")?;
    let percentile = |p: &str| -> Result<f64, String> {
        line_with(&format!("percentile {p} ="))
            .and_then(|line| line.rsplit('=').next())
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| format!("no `percentile {p}` line"))
    };
    let run_time = field(valid, "RunTime").ok_or("no RunTime in `[Valid Duration]`")?;
    let valid_sent = field(valid, "SentMessages").ok_or("no SentMessages in `[Valid Duration]`")?;
    let valid_received =
        field(valid, "ReceivedMessages").ok_or("no ReceivedMessages in `[Valid Duration]`")?;
    let sent = field(total, "SentMessages").ok_or("no SentMessages in `[Total Run]`")?;
    let received =
        field(total, "ReceivedMessages").ok_or("no ReceivedMessages in `[Total Run]`")?;
    if run_time <= 0.0 {
        return Err(format!("`[Valid Duration]` RunTime is {run_time}"));
    }
    let dropped = line_with("# dropped messages =")
        .and_then(|line| line.split_once("# dropped messages = "))
        .and_then(|(_, rest)| rest.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let raw: Vec<Value> = text
        .lines()
        .filter(|line| {
            line.contains("Run]") || line.contains("Duration]") || line.contains("percentile")
        })
        .map(|line| Value::from(line.trim()))
        .collect();
    Ok(Load {
        replies_per_s: valid_received / run_time,
        p50_us: percentile("50.000")?,
        p99_us: percentile("99.000")?,
        sent: valid_sent as u64,
        received: valid_received as u64,
        lost: dropped,
        warmup_sent: (sent - valid_sent).max(0.0) as u64,
        warmup_received: (received - valid_received).max(0.0) as u64,
        highest_access: None,
        raw: Value::from(raw),
    })
}

/// The figure after `name ` in a `summary: name N, name N, …` line.
pub fn summary_figure(summary: &str, name: &str) -> Option<u64> {
    summary
        .trim_start_matches("summary: ")
        .split(", ")
        .find_map(|field| field.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.replace(',', "").parse().ok())
}

/// utime + stime of process `pid`, all its threads (dead ones included), in clock ticks:
/// fields 14 and 15 of `/proc/PID/stat`, counted after the `(comm)` field, which may hold
/// spaces.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After `(comm)` come field 3 (state) onwards: utime is field 14, index 11 here.
    let tick = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(utime), Some(stime)) => Ok(utime + stime),
        _ => Err(format!("cannot read utime and stime in {path}: {stat:?}")),
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/PID/status`), KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path} has no readable VmHWM line"))
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 on every Linux we
/// know, assumed when getconf cannot say).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// `None` when `udptalk-client bench` takes the options the bench passes; else why not.
pub fn bench_missing(client: &Path) -> Option<String> {
    let output = Command::new(client)
        .args(["bench", "--help"])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) => {
            let help = String::from_utf8_lossy(&out.stdout);
            let missing: Vec<&str> = ["--window", "--duration", "--output", "--payload-hex"]
                .into_iter()
                .filter(|flag| !help.contains(flag))
                .collect();
            if out.status.success() && missing.is_empty() {
                None
            } else {
                Some(format!(
                    "`udptalk-client bench` is not there yet (its --help lacks {}): issue 7's \
                     client work; merge it and run again",
                    missing.join(", ")
                ))
            }
        }
        Err(e) => Some(format!("cannot run {}: {e}", client.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as sockperf 3.7 prints them with `--full-rtt` (colour codes included).
    const SOCKPERF: &str = "sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=16186; ReceivedMessages=16185
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=9801; ReceivedMessages=9801
sockperf: \x1b[2;35m====> avg-rtt=158.098 (std-dev=202.611)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: ---> percentile 99.000 =  887.887
sockperf: ---> percentile 90.000 =  358.381
sockperf: ---> percentile 50.000 =   88.260
";

    #[test]
    fn sockperf_report_is_read() -> Result<(), String> {
        let load = parse_sockperf(SOCKPERF)?;
        assert!((load.replies_per_s - 9801.0 / 1.55).abs() < 0.01);
        assert_eq!((load.p50_us, load.p99_us), (88.26, 887.887));
        assert_eq!((load.sent, load.received, load.lost), (9801, 9801, 0));
        assert_eq!((load.all_sent(), load.all_received()), (16186, 16185));
        Ok(())
    }

    #[test]
    fn bench_result_is_read() -> Result<(), String> {
        let line = br#"{"kind":"bench","server":"127.0.0.1:9","mode":"closed","encoding":"plain","window":32,"size":14,"duration_s":1.0,"sent":1000,"received":1000,"lost":0,"duplicated":0,"reordered":0,"replies_per_s":999.5,"rtt_us":{"min":5,"mean":9.5,"p50":9,"p90":12,"p99":20,"p999":40,"max":90},"highest_access":1200,"sink":null,"warmup_sent":200,"warmup_received":200}
{"event":"exit","code":0,"end":"finished"}"#;
        let load = parse_bench(line)?;
        assert_eq!((load.sent, load.received, load.lost), (1000, 1000, 0));
        assert_eq!((load.p50_us, load.p99_us), (9.0, 20.0));
        assert_eq!(load.highest_access, Some(1200));
        assert_eq!((load.all_sent(), load.all_received()), (1200, 1200));
        assert!(parse_bench(b"no json").is_err());
        let sink = br#"{"kind":"bench","sent":1000,"received":0,"lost":1000,"replies_per_s":0.0,"rtt_us":{"p50":null,"p99":null},"sink":{"datagrams":1200},"warmup_sent":200}"#;
        let load = parse_bench(sink)?;
        assert!(load.p50_us.is_nan());
        assert_eq!(
            load.raw["sink"]["datagrams"].as_u64(),
            Some(load.all_sent())
        );
        Ok(())
    }

    #[test]
    fn summary_figures_are_read() {
        let line = "summary: received 12, counted 10, duplicates 0, malformed 2, rate-limited 0, \
                    busy 0, loops 0, truncated 0, peers 1, lines dropped 1,234";
        assert_eq!(summary_figure(line, "counted"), Some(10));
        assert_eq!(summary_figure(line, "lines dropped"), Some(1234));
        assert_eq!(summary_figure(line, "send failures"), None);
    }
}
