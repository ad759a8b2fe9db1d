//! The strace stage of `cargo xtask test`: `--trace` must list the socket calls the programs
//! really make, in the order they make them. A server and three clients (messages, `ping`,
//! `bench`, which batches) run under `strace -f -e trace=network -o FILE` with `--trace`; for
//! each program the two lists must hold the same calls in the same order, with the same
//! results where both show one (byte and datagram counts, descriptors, errno names), and no
//! trace line may reach stdout, which keeps the tutorial's lines.
//!
//! What is compared: strace's network calls, and the trace's calls with `send`/`recv` read as
//! the system calls the C library makes of them (`sendto`/`recvfrom`, with no address), a
//! folded run of timeouts as that many calls, and `close()` left out (strace's `network` class
//! does not include it). `setsockopt` is compared with its option (`SO_RCVTIMEO` is strace's
//! `SO_RCVTIMEO_OLD` on 64-bit Linux).
//!
//! Skipped, with the reason, where strace is missing or cannot trace here (no ptrace in a
//! container). Every process is bounded: the server ends by `--idle`, each client by
//! `--deadline`, and each is killed past its deadline; the files are removed in every path.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Bins;
use crate::peers::{self, Server};
use crate::tally::{Outcome, Tally};
use crate::trace::{self, Call};

/// How long a traced client may run (its own `--deadline` is shorter).
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// How long the server may take to end by `--idle` after the last client.
const SERVER_DEADLINE: Duration = Duration::from_secs(15);

/// Calls printed before the announce line: socket, bind, setsockopt ×2, getsockname.
const EARLY_LINES: usize = 32;

/// The clients run, each a row: name and arguments after `--server ADDR`.
const CLIENTS: [(&str, &[&str]); 3] = [
    (
        "strace: client messages",
        &["--deadline", "10s", "Hello Server!!", "See you!"],
    ),
    (
        "strace: client ping",
        &["--deadline", "10s", "ping", "-c", "3", "-i", "0.2"],
    ),
    (
        "strace: client bench",
        &[
            "--deadline",
            "10s",
            "bench",
            "--count",
            "40",
            "--window",
            "4",
            "--warmup",
            "0s",
        ],
    ),
];

/// The name of the server's row.
const SERVER_ROW: &str = "strace: server";

/// Runs the rows whose name contains `filter` (all without one).
pub fn run(bins: &Bins, filter: Option<&str>, tally: &mut Tally) -> Result<(), String> {
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let mut names: Vec<&str> = CLIENTS.iter().map(|(name, _)| *name).collect();
    names.push(SERVER_ROW);
    if !names.iter().any(|name| wanted(name)) {
        return Ok(());
    }
    let strace = match usable_strace() {
        Ok(strace) => strace,
        Err(reason) => {
            for name in names.into_iter().filter(|name| wanted(name)) {
                tally.record(name, Outcome::Skip(reason.clone()));
            }
            return Ok(());
        }
    };
    let dir = TempDir::new("strace")?;
    let server_file = dir.0.join("server.strace");
    let mut args = strace_args(&server_file);
    args.extend(
        [
            bins.server.to_string_lossy().as_ref(),
            "--bind",
            "127.0.0.1:0",
            "--trace",
            "--idle",
            "3s",
        ]
        .map(str::to_owned),
    );
    let server = Server::spawn_after_logs(&strace, &args, EARLY_LINES)?;
    for (name, client_args) in CLIENTS {
        let file = dir
            .0
            .join(format!("client-{}.strace", name.replace([' ', ':'], "")));
        let mut command = Command::new(&strace);
        command
            .args(strace_args(&file))
            .arg(&bins.client)
            .arg("--trace")
            .arg("--server")
            .arg(server.addr.to_string())
            .args(client_args);
        let output = peers::run(command, None, CLIENT_DEADLINE)?;
        if !wanted(name) {
            continue;
        }
        let outcome = if output.code() == Some(0) {
            stdout_untraced(&output).unwrap_or_else(|| compare(&output.stderr_lines(), &file))
        } else {
            Outcome::Fail(vec![format!(
                "the client did not succeed ({}); stderr:\n{}",
                output.describe_end(),
                String::from_utf8_lossy(&output.stderr).trim_end()
            )])
        };
        tally.record(name, outcome);
    }
    let output = server.wait(SERVER_DEADLINE);
    if wanted(SERVER_ROW) {
        let outcome = match output.killed_after {
            Some(after) => Outcome::Fail(vec![format!(
                "the server did not end by --idle: killed after {after:?}"
            )]),
            None => stdout_untraced(&output)
                .unwrap_or_else(|| compare(&output.stderr_lines(), &server_file)),
        };
        tally.record(SERVER_ROW, outcome);
    }
    Ok(())
}

/// A failure if a trace line reached stdout, which keeps the tutorial's lines.
fn stdout_untraced(output: &peers::Output) -> Option<Outcome> {
    let lines = output.stdout_lines();
    let traced = lines.iter().find(|line| line.starts_with("trace "))?;
    Some(Outcome::Fail(vec![format!(
        "a trace line went to stdout, which must keep the tutorial's lines: {traced:?}"
    )]))
}

/// strace, if it is installed and may trace here.
fn usable_strace() -> Result<PathBuf, String> {
    let strace = peers::which("strace")
        .ok_or("strace is not installed (apt-get install strace; .ci/run installs it)")?;
    let probe = Command::new(&strace)
        .args(["-f", "-e", "trace=network", "-o", "/dev/null", "true"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", strace.display()))?;
    if probe.status.success() {
        Ok(strace)
    } else {
        Err(format!(
            "strace cannot trace here ({}): {}",
            probe.status,
            String::from_utf8_lossy(&probe.stderr).trim()
        ))
    }
}

fn strace_args(file: &Path) -> Vec<String> {
    vec![
        "-f".to_owned(),
        "-e".to_owned(),
        "trace=network".to_owned(),
        "-o".to_owned(),
        file.to_string_lossy().into_owned(),
    ]
}

/// The row's outcome: the program's trace (from its stderr) against strace's file.
fn compare(stderr: &[String], strace_file: &Path) -> Outcome {
    let traced = match trace::parse(stderr) {
        Ok(calls) => from_trace(&calls),
        Err(e) => return Outcome::Fail(vec![e]),
    };
    let seen = match fs::read_to_string(strace_file) {
        Ok(text) => from_strace(&text),
        Err(e) => {
            return Outcome::Fail(vec![format!(
                "cannot read strace's output {}: {e}",
                strace_file.display()
            )]);
        }
    };
    if traced.is_empty() {
        return Outcome::Fail(vec!["--trace printed no call".to_owned()]);
    }
    // The server's watch thread ends its workers' waits with `shutdown` while a worker is
    // blocked in a receive that strace lists when it starts and the trace when it returns: the
    // two lists must have the same shutdowns, compared apart from the ordered calls.
    let (traced_shutdowns, traced): (Vec<Compared>, Vec<Compared>) = traced
        .into_iter()
        .partition(|call| call.starts_with("shutdown "));
    let (seen_shutdowns, seen): (Vec<Compared>, Vec<Compared>) = seen
        .into_iter()
        .partition(|call| call.starts_with("shutdown "));
    if traced_shutdowns != seen_shutdowns {
        return Outcome::Fail(vec![format!(
            "--trace shows {traced_shutdowns:?}, strace {seen_shutdowns:?}\n{}",
            keep(strace_file, stderr)
        )]);
    }
    match first_difference(&traced, &seen) {
        None => Outcome::Pass(Some(format!("{} calls in the same order", traced.len()))),
        Some(at) => Outcome::Fail(vec![format!(
            "call {} differs (name = result)\n{}\n{}\n{}",
            at + 1,
            window("--trace", &traced, at),
            window("strace", &seen, at),
            keep(strace_file, stderr)
        )]),
    }
}

/// Keeps strace's file and the program's stderr under `target/strace-failures/` (the run's
/// directory is removed) and says where, or why not.
fn keep(strace_file: &Path, stderr: &[String]) -> String {
    let dir = crate::project_root().join("target").join("strace-failures");
    let name = strace_file
        .file_stem()
        .map_or_else(|| "run".into(), |s| s.to_string_lossy());
    let kept = fs::create_dir_all(&dir)
        .and_then(|()| fs::copy(strace_file, dir.join(format!("{name}.strace"))))
        .and_then(|_| fs::write(dir.join(format!("{name}.stderr")), stderr.join("\n")));
    match kept {
        Ok(()) => format!(
            "strace's output and the program's stderr: {}/{name}.*",
            dir.display()
        ),
        Err(e) => format!("(could not keep strace's output in {}: {e})", dir.display()),
    }
}

/// A call as both lists can show it: `recvfrom = 14`, `setsockopt SO_RCVBUF = 0`,
/// `recvmmsg = EAGAIN`.
type Compared = String;

/// The trace's calls as strace would list them.
fn from_trace(calls: &[Call]) -> Vec<Compared> {
    let mut list = Vec::new();
    for call in calls {
        let name = match call.name() {
            "close" => continue,
            "send" => "sendto",
            "recv" => "recvfrom",
            other => other,
        };
        let args = call
            .text
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("", |(args, _)| args);
        let name = match name {
            "setsockopt" => format!("setsockopt {}", args.split(',').next().unwrap_or("")),
            other => other.to_owned(),
        };
        let result = match call.errno() {
            Some(errno) => errno.to_owned(),
            None => {
                let result = call.result().unwrap_or("");
                let first_number = |text: &str| {
                    text.split(|c: char| !c.is_ascii_digit())
                        .find(|word| !word.is_empty())
                        .unwrap_or("?")
                        .to_owned()
                };
                match name.as_str() {
                    "socket" | "recvfrom" | "recvmsg" | "recvmmsg" | "sendmmsg" => {
                        first_number(result)
                    }
                    // The bytes sent are the call's second argument.
                    "sendto" => first_number(args.split(", ").nth(1).unwrap_or("")),
                    _ => "0".to_owned(),
                }
            }
        };
        for _ in 0..call.times {
            list.push(format!("{name} = {result}"));
        }
    }
    list
}

/// strace's lines (`PID name(args) = result`, or split in `<unfinished ...>` and
/// `<... name resumed>` when another thread's call comes between) as compared.
fn from_strace(text: &str) -> Vec<Compared> {
    let mut names: Vec<String> = Vec::new();
    let mut results: Vec<Option<String>> = Vec::new();
    let mut pending: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        // `???`: a call strace could not name (a thread caught mid-call as the process ends),
        // so not one of the network calls it was asked for; rare, and only under load.
        if rest.starts_with("???") {
            continue;
        }
        if rest.starts_with("<... ") {
            if let Some(at) = pending.remove(pid) {
                results[at] = Some(result_of(rest));
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let name = match name {
            "setsockopt" => {
                let option = args.split(", ").nth(2).unwrap_or("");
                format!("setsockopt {}", option.trim_end_matches("_OLD"))
            }
            other => other.to_owned(),
        };
        names.push(name);
        if rest.ends_with("<unfinished ...>") {
            pending.insert(pid, results.len());
            results.push(None);
        } else {
            results.push(Some(result_of(rest)));
        }
    }
    names
        .into_iter()
        .zip(results)
        .map(|(name, result)| format!("{name} = {}", result.unwrap_or_else(|| "?".to_owned())))
        .collect()
}

/// `= 14` → `14`; `= -1 EAGAIN (Resource temporarily unavailable)` → `EAGAIN`.
fn result_of(line: &str) -> String {
    let result = line.rsplit_once(" = ").map_or("?", |(_, result)| result);
    match result.strip_prefix("-1 ") {
        Some(error) => error.split(' ').next().unwrap_or("?").to_owned(),
        None => result.split(' ').next().unwrap_or("?").to_owned(),
    }
}

/// The index of the first entry that differs (or that one list lacks).
fn first_difference(a: &[Compared], b: &[Compared]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

/// The entries around `at`, for a failure's message.
fn window(label: &str, list: &[Compared], at: usize) -> String {
    let from = at.saturating_sub(3);
    let to = (at + 4).min(list.len());
    let shown: Vec<String> = (from..to)
        .map(|i| {
            let mark = if i == at { ">" } else { " " };
            format!("  {mark} {}: {}", i + 1, list[i])
        })
        .collect();
    format!(
        "{label} ({} calls):\n{}",
        list.len(),
        if shown.is_empty() {
            "  (nothing there)".to_owned()
        } else {
            shown.join("\n")
        }
    )
}

/// A directory under the target directory, removed when dropped, whatever happened.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, String> {
        let dir = crate::project_root()
            .join("target")
            .join(format!("{what}-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_lines_are_read_whole_or_split_by_another_thread() {
        let text = "\
10 socket(AF_INET, SOCK_DGRAM|SOCK_CLOEXEC, IPPROTO_UDP) = 3
10 setsockopt(3, SOL_SOCKET, SO_RCVTIMEO_OLD, \"\\0\", 16) = 0
10 recvmmsg(3, 0x1, 32, MSG_WAITFORONE, NULL <unfinished ...>
11 +++ exited with 0 +++
10 <... recvmmsg resumed>) = -1 EAGAIN (Resource temporarily unavailable)
10 recvfrom(3, \"hi\", 65536, 0, {sa_family=AF_INET}, [16]) = 2
10 ???( <unfinished ...>
10 --- SIGTERM {si_signo=SIGTERM} ---
";
        assert_eq!(
            from_strace(text),
            [
                "socket = 3",
                "setsockopt SO_RCVTIMEO = 0",
                "recvmmsg = EAGAIN",
                "recvfrom = 2"
            ]
        );
    }

    #[test]
    fn trace_lines_read_as_the_system_calls_strace_lists() -> Result<(), String> {
        let calls = trace::parse(&[
            "trace 2026-12-02T01:00:00.000001Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3",
            "trace 2026-12-02T01:00:00.000002Z [fd 3] setsockopt(SO_RCVTIMEO, 250ms)",
            "trace 2026-12-02T01:00:00.000003Z [fd 3] send(…, 14 bytes)",
            "trace 2026-12-02T01:00:00.000004Z [fd 3] recv(…) → EAGAIN (timed out), 1 more time",
            "trace 2026-12-02T01:00:00.000005Z [fd 3] recv(…, MSG_DONTWAIT) → EAGAIN (none waiting)",
            "trace 2026-12-02T01:00:00.000006Z [fd 3] recvmmsg(…) → 3 datagrams (14, 14, 14 bytes) from 127.0.0.1:9",
            "trace 2026-12-02T01:00:00.000007Z [fd 3] sendmmsg(…, 3 datagrams) → 3",
            "trace 2026-12-02T01:00:00.000008Z [fd 3] close()",
        ])?;
        assert_eq!(
            from_trace(&calls),
            [
                "socket = 3",
                "setsockopt SO_RCVTIMEO = 0",
                "sendto = 14",
                "recvfrom = EAGAIN",
                "recvfrom = EAGAIN",
                "recvmmsg = 3",
                "sendmmsg = 3",
            ]
        );
        Ok(())
    }
}
