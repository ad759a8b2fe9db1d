//! `cargo xtask demo`: builds, then plays the tutorial's exchanges on loopback.
//!
//! Four parts, each a server on port 0 (its port read from its `listening on udp` line) and a
//! client: the first exchange (`udp-server1.py` and `udp-client1.py`), the counting server fed
//! three lines (`udp-server2.py` and `udp-client2.py`), a datagram longer than a small
//! `--buffer`, and a JSON envelope exchange. Both sides' output is printed, labelled `[server]`
//! and `[client]`; every expected reply is checked, and a missing one makes the demo fail. Each
//! server ends by itself (`--once` or `--idle`), and is killed if it does not.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bins;
use crate::peers::{self, Output, Server, lines, show_command};

/// How long a demo client may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// How long a demo server may take to end by itself once its client is done.
const SERVER_DEADLINE: Duration = Duration::from_secs(5);

/// The `--idle` of servers that take several datagrams.
const IDLE: &str = "1s";

/// Builds the binaries, then plays the four parts; fails naming every expected line not seen.
pub fn run() -> Result<(), String> {
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let bins = Bins::locate()?;
    let started = Instant::now();
    let mut missing = Vec::new();

    first_exchange(&bins, &mut missing)?;
    counting(&bins, &mut missing)?;
    truncation(&bins, &mut missing)?;
    json(&bins, &mut missing)?;

    println!();
    println!(
        "demo played in {:.1}s (after the build)",
        started.elapsed().as_secs_f64()
    );
    if missing.is_empty() {
        println!("every expected reply was seen");
        Ok(())
    } else {
        Err(format!(
            "the demo did not show everything it should:\n  - {}",
            missing.join("\n  - ")
        ))
    }
}

/// Part 1: `udp-server1.py` answers one `Hello Server!!` with `Hello Client!!` and ends.
fn first_exchange(bins: &Bins, missing: &mut Vec<String>) -> Result<(), String> {
    heading("Part 1: the first exchange (udp-server1.py, udp-client1.py)");
    let server = start(bins, &["--mode", "hello", "--once"])?;
    let client = client(bins, &server, &[], &["Hello Server!!"], None)?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    expect(
        missing,
        "part 1 client",
        &client.stdout,
        "Server message: Hello Client!!",
    );
    expect(
        missing,
        "part 1 server",
        &server.stdout,
        "The message is [ Hello Server!! ].",
    );
    Ok(())
}

/// Part 2: `udp-server2.py` counts; a client reads three lines, one Japanese, from stdin.
fn counting(bins: &Bins, missing: &mut Vec<String>) -> Result<(), String> {
    heading("Part 2: the counting server (udp-server2.py, udp-client2.py), three lines on stdin");
    let server = start(bins, &["--idle", IDLE])?;
    let input = "Hello Server!!\nこんにちは\nSee you!\n";
    let client = client(bins, &server, &[], &[], Some(input))?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    for n in 1..=3 {
        expect(
            missing,
            "part 2 client",
            &client.stdout,
            &format!("Access count: {n}"),
        );
    }
    expect(
        missing,
        "part 2 server",
        &server.stdout,
        "The message is [ こんにちは ].",
    );
    Ok(())
}

/// Part 3: a server with `--buffer 16` gets a longer datagram, says so, and echoes what it kept.
fn truncation(bins: &Bins, missing: &mut Vec<String>) -> Result<(), String> {
    heading("Part 3: a datagram longer than the server's buffer (--buffer 16)");
    let message = "This message is longer than sixteen bytes.";
    let server = start(bins, &["--mode", "echo", "--buffer", "16", "--once"])?;
    let client = client(bins, &server, &[], &[message], None)?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    let report = format!("truncated: {} bytes, buffer 16", message.len());
    expect(missing, "part 3 server", &server.stdout, &report);
    let kept = message.get(..16).unwrap_or(message);
    expect(
        missing,
        "part 3 client",
        &client.stdout,
        &format!("Server message: {kept}"),
    );
    Ok(())
}

/// Part 4: a JSON client to an `auto` server, then the same envelope as raw bytes on the wire,
/// then a plain datagram: `auto` answers each in the codec it came in.
fn json(bins: &Bins, missing: &mut Vec<String>) -> Result<(), String> {
    heading("Part 4: JSON envelopes (client --encoding json, server --encoding auto)");
    let server = start(bins, &["--encoding", "auto", "--idle", IDLE])?;
    let client = client(
        bins,
        &server,
        &["--encoding", "json"],
        &["Hello Server!!"],
        None,
    )?;
    let mut wire = Vec::new();
    for request in [
        r#"{"v":1,"id":7,"kind":"request","body":"Hello Server!!"}"#,
        "Hello Server!!",
    ] {
        wire.push(format!("→ {request}"));
        match peers::exchange(server.addr, request.as_bytes(), Duration::from_secs(5)) {
            Ok(reply) => wire.push(format!("← {}", String::from_utf8_lossy(&reply))),
            Err(error) => wire.push(format!("✗ {error}")),
        }
    }
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    for line in &wire {
        println!("[wire]   {line}");
    }
    expect(
        missing,
        "part 4 client",
        &client.stdout,
        "Server message: Access count: 1",
    );
    let wire = wire.join("\n").into_bytes();
    let reply = r#"← {"v":1,"id":7,"kind":"reply","body":"Access count: 2"}"#;
    expect(missing, "part 4 raw envelope", &wire, reply);
    expect(missing, "part 4 raw plain", &wire, "← Access count: 3");
    Ok(())
}

fn heading(title: &str) {
    println!();
    println!("== {title}");
}

/// Starts the server on `127.0.0.1:0` and shows the command.
fn start(bins: &Bins, args: &[&str]) -> Result<Server, String> {
    let mut full = vec!["--bind", "127.0.0.1:0"];
    full.extend(args);
    let server = Server::spawn(&bins.server, &full)?;
    println!("$ {}", server.shown);
    Ok(server)
}

/// Runs the client against `server` and shows the command.
fn client(
    bins: &Bins,
    server: &Server,
    options: &[&str],
    messages: &[&str],
    stdin: Option<&str>,
) -> Result<Output, String> {
    let mut command = Command::new(&bins.client);
    command
        .arg("--server")
        .arg(server.addr.to_string())
        .args(options)
        .args(messages);
    let shown = show_command(&command);
    match stdin {
        Some(input) => println!("$ printf '{}' | {shown}", input.replace('\n', "\\n")),
        None => println!("$ {shown}"),
    }
    peers::run(
        command,
        stdin.map(|input| input.as_bytes().to_vec()),
        CLIENT_DEADLINE,
    )
}

/// The server's output in the order a terminal shows it: the announce line, the per-datagram
/// lines, then the summary.
fn show_server(server: &Output) {
    let stderr = server.stderr_lines();
    let (announce, rest) = stderr.split_at(stderr.len().min(1));
    for line in announce.iter().chain(&server.stdout_lines()).chain(rest) {
        println!("[server] {line}");
    }
    if server.killed_after.is_some() {
        println!("[server] (did not end by itself: killed)");
    }
}

fn show(label: &str, output: &Output) {
    for line in output.stdout_lines().iter().chain(&output.stderr_lines()) {
        println!("[{label}] {line}");
    }
    if output.code() != Some(0) {
        println!("[{label}] ({})", output.describe_end());
    }
}

/// Notes `what` as missing unless `output` has the line `line`.
fn expect(missing: &mut Vec<String>, what: &str, output: &[u8], line: &str) {
    if !lines(output).iter().any(|seen| seen == line) {
        missing.push(format!("{what}: the line {line:?}"));
    }
}
