//! Plays the matrix's table: starts each row's peers, runs the client, checks what they print.
//!
//! Rows run a few at a time on scoped threads and are printed in table order as they finish.
//! A row whose tool or address family is missing is skipped with the reason.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{Family, Row, Sender, Target, rows};
use crate::Bins;
use crate::peers::{self, Output, Proc, Server, indent};
use crate::schema::OutputSchema;
use crate::tally::{Outcome, Tally};

/// Rows running at once: the machines we target have 2 cores, and most of a row is waiting.
const MAX_PARALLEL: usize = 4;

/// How long a server may take to end by itself once the client is done.
const SERVER_DEADLINE: Duration = Duration::from_secs(5);

/// `--idle` added to every server as a backstop, so that none outlives an interrupted run.
const BACKSTOP_IDLE: &str = "30s";

/// What the machine offers the matrix: the binaries, IPv6, the independent peers. Each `Err`
/// is the reason the rows needing it are skipped.
struct Env {
    bins: Bins,
    v6: Result<(), String>,
    nc: Result<PathBuf, String>,
    socat: Result<PathBuf, String>,
    python: Result<PathBuf, String>,
    seed: Result<PathBuf, String>,
    /// docs/output.schema.json, for the `--output json` rows.
    schema: OutputSchema,
    /// The kinds of JSON line the rows printed (`datagram/counted`…) and how many lines.
    json_seen: Mutex<(BTreeSet<String>, usize)>,
}

impl Env {
    fn probe() -> Result<Env, String> {
        // The tutorial's programs live beside the project, in `../shared/seed/python/`.
        let root = crate::project_root();
        let seed = root.parent().unwrap_or(&root).join("shared/seed/python");
        Ok(Env {
            bins: Bins::locate()?,
            v6: peers::ipv6_loopback(),
            nc: openbsd_netcat(),
            socat: peers::which("socat").ok_or_else(|| "socat is not installed".to_owned()),
            python: peers::which("python3").ok_or_else(|| "python3 is not installed".to_owned()),
            seed: if seed.is_dir() {
                Ok(seed)
            } else {
                Err(format!("{} is missing", seed.display()))
            },
            schema: OutputSchema::load()?,
            json_seen: Mutex::new((BTreeSet::new(), 0)),
        })
    }

    /// Why `row` cannot run here, if it cannot.
    fn skip_reason(&self, row: &Row) -> Option<String> {
        if row.family == Family::V6 {
            if let Err(reason) = &self.v6 {
                return Some(reason.clone());
            }
        }
        let python = |script: &str| match (&self.python, &self.seed) {
            (Err(reason), _) | (_, Err(reason)) => Some(reason.clone()),
            (Ok(_), Ok(seed)) if !seed.join(script).is_file() => {
                Some(format!("{} is missing", seed.join(script).display()))
            }
            _ => None,
        };
        let client = match &row.client {
            Sender::Nc => self.nc.as_ref().err().cloned(),
            Sender::Socat => self.socat.as_ref().err().cloned(),
            Sender::Python(script) => python(script),
            Sender::Ours { .. } => None,
        };
        let server = match &row.server {
            Target::SocatEcho => self.socat.as_ref().err().cloned(),
            Target::Python(script) => python(script),
            _ => None,
        };
        client.or(server)
    }
}

/// The path of `nc` if it is netcat-openbsd, whose `-u -w1` the rows rely on.
fn openbsd_netcat() -> Result<PathBuf, String> {
    let path = peers::which("nc").ok_or_else(|| "nc is not installed".to_owned())?;
    let mut command = Command::new(&path);
    command.arg("-h");
    let output = peers::run(command, None, Duration::from_secs(5))?;
    let help = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    if help.contains("OpenBSD netcat") {
        Ok(path)
    } else {
        Err(format!("{} is not netcat-openbsd", path.display()))
    }
}

/// Plays the table (rows whose name contains `filter`, if given), prints it and counts its rows
/// in `tally`. Fails only when the rows cannot be played at all (e.g. a binary is missing).
pub fn run(filter: Option<&str>, tally: &mut Tally) -> Result<(), String> {
    let env = Env::probe()?;
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|row| filter.is_none_or(|filter| row.name.contains(filter)))
        .collect();
    let parallel = thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(1, MAX_PARALLEL);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let (done_tx, done_rx) = mpsc::channel();

    thread::scope(|scope| {
        for _ in 0..parallel {
            let done_tx = done_tx.clone();
            let (rows, env, next) = (&rows, &env, &next);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = rows.get(index) else { break };
                    let outcome = match env.skip_reason(row) {
                        Some(reason) => Outcome::Skip(reason),
                        None => play(row, env),
                    };
                    if done_tx.send((index, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        // Print in table order as rows finish.
        let mut finished: Vec<Option<Outcome>> = rows.iter().map(|_| None).collect();
        let mut printed = 0;
        for (index, outcome) in done_rx {
            if let Some(slot) = finished.get_mut(index) {
                *slot = Some(outcome);
            }
            while let Some(Some(outcome)) = finished.get_mut(printed).map(Option::take) {
                let name = rows.get(printed).map_or("", |row| row.name.as_str());
                tally.record(name, outcome);
                printed += 1;
            }
        }
    });

    // Every kind of JSON line, from the real programs.
    let name = "v4 --output json: every kind of line appears and validates";
    if filter.is_none_or(|filter| name.contains(filter)) {
        let outcome = match super::json_events::play(&env.bins, &env.schema) {
            Ok((problems, _)) if !problems.is_empty() => Outcome::Fail(problems),
            Ok((_, figures)) => Outcome::Pass(Some(figures)),
            Err(error) => Outcome::Fail(vec![error]),
        };
        tally.record(name, outcome);
    }

    println!(
        "matrix: {} rows in {:.1}s, up to {parallel} at once",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let (kinds, lines) = &*env.json_seen.lock().unwrap_or_else(PoisonError::into_inner);
    if *lines > 0 {
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        println!(
            "matrix --output json: {lines} lines valid against {}, of kinds {}",
            crate::schema::SCHEMA_PATH,
            kinds.join(", ")
        );
    }
    Ok(())
}

/// A started answerer.
enum Running {
    /// `udptalk-server`.
    Ours(Server),
    /// socat or a Python server.
    Peer(Proc),
}

/// Runs one row and checks everything it names.
fn play(row: &Row, env: &Env) -> Outcome {
    match try_play(row, env) {
        Ok(problems) if problems.is_empty() => Outcome::Pass(None),
        Ok(problems) => Outcome::Fail(problems),
        Err(error) => Outcome::Fail(vec![error]),
    }
}

fn try_play(row: &Row, env: &Env) -> Result<Vec<String>, String> {
    let ip = row.family.ip();
    let (running, addr, server_shown) = start_target(row, env, ip)?;

    // The tutorial's Python servers bind a port we reserved, some time after we start them:
    // a refused first try (exit 4) means "not up yet", so try again for a while.
    let retry_refused = matches!(row.server, Target::Python(_));
    let client_started = Instant::now();
    let (client, client_shown) = loop {
        let (command, shown) = client_command(row, env, addr)?;
        let output = peers::run(command, row.stdin.clone(), row.deadline)?;
        if retry_refused
            && output.code() == Some(4)
            && client_started.elapsed() < Duration::from_secs(5)
        {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        break (output, shown);
    };

    let probe = row
        .probe
        .then(|| peers::exchange(addr, b"probe", Duration::from_secs(5)));

    // Our server ends by itself (`--once`, `--idle`) and must. One that will not get the
    // datagram it waits for is stopped at once: the row has already failed, and waiting would
    // only slow the table down. The independent peers have printed all they will by the time
    // their reply arrived (Python runs with -u), so they are simply stopped.
    let client_as_expected = client.code() == Some(row.exit);
    let (server, waited) = match running {
        Running::Ours(server) if client_as_expected => (Some(server.wait(SERVER_DEADLINE)), true),
        Running::Ours(server) => (Some(server.kill()), false),
        Running::Peer(proc) => (Some(proc.kill()), false),
    };

    let mut problems = Vec::new();
    check_client(row, &client, &mut problems);
    if row.json {
        if matches!(row.client, Sender::Ours { .. }) {
            check_json(env, "client", &client, client.code(), &mut problems);
        }
        if let (Target::Ours(_), Some(server)) = (&row.server, &server) {
            let code = server.code().filter(|_| waited);
            check_json(env, "server", server, code, &mut problems);
        }
    }
    if let Some(Err(error)) = &probe {
        problems.push(format!("probe after the client: {error}"));
    }
    if let Some(server) = &server {
        check_server(row, server, waited, &mut problems);
    }
    if !problems.is_empty() {
        problems.push(format!(
            "client: {client_shown}   [{}]",
            client.describe_end()
        ));
        problems.push(indent("client stderr", &client.stderr_lines()));
        if let Some(server) = &server {
            problems.push(format!(
                "server: {server_shown}   [{}]",
                server.describe_end()
            ));
            problems.push(indent("server stdout", &server.stdout_lines()));
            problems.push(indent("server stderr", &server.stderr_lines()));
        }
    }
    Ok(problems)
}

fn start_target(row: &Row, env: &Env, ip: IpAddr) -> Result<(Running, SocketAddr, String), String> {
    match &row.server {
        Target::Ours(args) => {
            let bind = SocketAddr::new(ip, 0).to_string();
            let mut full = vec!["--bind".to_owned(), bind];
            full.extend(args.iter().cloned());
            if !args.iter().any(|arg| arg == "--idle") {
                full.extend(["--idle".to_owned(), BACKSTOP_IDLE.to_owned()]);
            }
            if row.json {
                full.extend(["--output".to_owned(), "json".to_owned()]);
            }
            let server = Server::spawn(&env.bins.server, &full)?;
            let (addr, shown) = (server.addr, server.shown.clone());
            if addr.ip() != ip {
                return Err(format!(
                    "`{shown}` announced {addr}, which is not on {ip}: `{}`",
                    server.announce
                ));
            }
            Ok((Running::Ours(server), addr, shown))
        }
        Target::SocatEcho => {
            let socat = env.socat.as_ref().map_err(Clone::clone)?;
            let (proc, addr, shown) = peers::start_socat_echo(socat, ip)?;
            Ok((Running::Peer(proc), addr, shown))
        }
        Target::Python(script) => {
            let (python, seed) = match (&env.python, &env.seed) {
                (Ok(python), Ok(seed)) => (python, seed),
                (Err(reason), _) | (_, Err(reason)) => return Err(reason.clone()),
            };
            let port = peers::free_port(ip)?;
            let mut command = Command::new(python);
            command
                .arg("-u")
                .arg(seed.join(script))
                .arg(port.to_string());
            let shown = peers::show_command(&command);
            let proc = Proc::spawn(command, None)?;
            Ok((Running::Peer(proc), SocketAddr::new(ip, port), shown))
        }
    }
}

fn client_command(row: &Row, env: &Env, addr: SocketAddr) -> Result<(Command, String), String> {
    let command = match &row.client {
        Sender::Ours { args, messages } => {
            let mut command = Command::new(&env.bins.client);
            command.arg("--server").arg(addr.to_string()).args(args);
            if row.json {
                command.args(["--output", "json"]);
            }
            if !messages.is_empty() {
                command.arg("--");
                for message in messages {
                    command.arg(peers::os_arg(message.clone())?);
                }
            }
            command
        }
        Sender::Nc => {
            let nc = env.nc.as_ref().map_err(Clone::clone)?;
            let mut command = Command::new(nc);
            if addr.is_ipv6() {
                command.arg("-6");
            }
            command
                .args(["-u", "-w1"])
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string());
            command
        }
        Sender::Socat => {
            let socat = env.socat.as_ref().map_err(Clone::clone)?;
            let to = match addr {
                SocketAddr::V4(_) => format!("UDP4:{addr}"),
                SocketAddr::V6(_) => format!("UDP6:{addr}"),
            };
            let mut command = Command::new(socat);
            command.args(["-t1", "-", &to]);
            command
        }
        Sender::Python(script) => {
            let (python, seed) = match (&env.python, &env.seed) {
                (Ok(python), Ok(seed)) => (python, seed),
                (Err(reason), _) | (_, Err(reason)) => return Err(reason.clone()),
            };
            let mut command = Command::new(python);
            command
                .arg("-u")
                .arg(seed.join(script))
                .arg(addr.port().to_string());
            command
        }
    };
    let shown = peers::show_command(&command);
    Ok((command, shown))
}

fn check_client(row: &Row, client: &Output, problems: &mut Vec<String>) {
    if let Some(after) = client.killed_after {
        problems.push(format!(
            "client still running after {:.1}s: killed",
            after.as_secs_f64()
        ));
    }
    match client.code() {
        Some(code) if code == row.exit => {}
        _ if client.killed_after.is_some() => {}
        got => problems.push(format!(
            "client exit: expected {}, got {}",
            row.exit,
            got.map_or_else(|| client.describe_end(), |code| code.to_string())
        )),
    }
    let lines = client.stdout_lines();
    let mut rest = lines.iter();
    // Our client's human lines are the human row's to check.
    let json_client = row.json && matches!(row.client, Sender::Ours { .. });
    for expected in row.replies.iter().filter(|_| !json_client) {
        if !rest.any(|line| expected.matches(line)) {
            problems.push(format!(
                "client stdout: expected a line {expected} (in order)"
            ));
            problems.push(indent("client stdout", &lines));
            break;
        }
    }
    if let Some(expected) = &row.client_stderr {
        if !client
            .stderr_lines()
            .iter()
            .any(|line| expected.matches(line))
        {
            problems.push(format!("client stderr: expected a line {expected}"));
        }
    }
}

/// Checks the server's lines; `waited` says our server was left to end by itself, and then it
/// must have, with exit 0.
fn check_server(row: &Row, server: &Output, waited: bool, problems: &mut Vec<String>) {
    if waited {
        if let Some(after) = server.killed_after {
            problems.push(format!(
                "server did not end by itself (--once / --idle): killed {:.1}s after its start",
                after.as_secs_f64()
            ));
        } else if server.code() != Some(0) {
            problems.push(format!(
                "server: expected exit 0, got {}",
                server.describe_end()
            ));
        }
    }
    if let Some(expected) = row.server_line.as_ref().filter(|_| !row.json) {
        if !server
            .stdout_lines()
            .iter()
            .any(|line| expected.matches(line))
        {
            problems.push(format!("server stdout: expected a line {expected}"));
        }
    }
    if let Some(expected) = &row.summary {
        if !server
            .stderr_lines()
            .iter()
            .any(|line| expected.matches(line))
        {
            problems.push(format!("server stderr: expected a line {expected}"));
        }
    }
}

/// Checks one of our programs' `--output json` stdout: every line valid against the schema,
/// the server's first line `listening`, and, when the program ended by itself with exit code
/// `code`, its last line `exit` with that code.
fn check_json(
    env: &Env,
    who: &str,
    output: &Output,
    code: Option<i32>,
    problems: &mut Vec<String>,
) {
    let lines = output.stdout_lines();
    let mut kinds = BTreeSet::new();
    let (invalid, valid) = env.schema.check_stdout(who, &lines, &mut kinds);
    problems.extend(invalid.into_iter().take(3));
    {
        let mut seen = env.json_seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.0.extend(kinds);
        seen.1 += valid.len();
    }
    let event = |value: Option<&serde_json::Value>| {
        value
            .and_then(|value| value["event"].as_str())
            .unwrap_or("nothing")
            .to_owned()
    };
    if who == "server" && event(valid.first()) != "listening" {
        problems.push(format!(
            "server --output json: the first line is {}, not `listening`",
            event(valid.first())
        ));
    }
    if let Some(code) = code {
        let last = valid.last();
        let exit = last.filter(|value| value["event"] == "exit");
        match exit.and_then(|exit| exit["code"].as_i64()) {
            Some(got) if got == i64::from(code) => {}
            Some(got) => problems.push(format!(
                "{who} --output json: `exit` says code {got}, the process exited {code}"
            )),
            None => problems.push(format!(
                "{who} --output json: the last line is {}, not `exit`",
                event(last)
            )),
        }
    }
}
