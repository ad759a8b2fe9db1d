//! `cargo xtask demo`: builds, then plays the tutorial's exchanges on loopback.
//!
//! Four parts, each a server on port 0 (its port read from its `listening on udp` line) and a
//! client: the first exchange (`udp-server1.py` and `udp-client1.py`), the counting server fed
//! three lines (`udp-server2.py` and `udp-client2.py`), a datagram longer than a small
//! `--buffer`, and a JSON envelope exchange. Both sides' output is printed, labelled `[server]`
//! and `[client]`; every expected reply is checked, and a missing one makes the demo fail. Each
//! server ends by itself (`--once` or `--idle`), and is killed if it does not.
//!
//! With `--diagram`, both programs run with `--trace`, and each part ends with the tutorial's
//! figure drawn from the calls they traced ([`diagram`]): in the terminal, and all parts in
//! `target/demo/diagram.svg`.

mod diagram;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bins;
use crate::peers::{self, Output, Server, lines, show_command};
use crate::trace;

/// How long a demo client may run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// How long a demo server may take to end by itself once its client is done.
const SERVER_DEADLINE: Duration = Duration::from_secs(5);

/// The `--idle` of servers that take several datagrams.
const IDLE: &str = "1s";

/// Trace lines a traced server prints before its announce line (socket, bind, setsockopt ×2,
/// getsockname), with room to spare.
const TRACE_LINES_BEFORE_ANNOUNCE: usize = 32;

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Run both programs with --trace and draw each part's socket calls as a two-column
    /// sequence diagram (client | server): in the terminal, and in target/demo/diagram.svg
    #[arg(long)]
    diagram: bool,
}

/// The diagram's parts, when `--diagram` asks for it.
struct Figure {
    on: bool,
    parts: Vec<diagram::Part>,
}

impl Figure {
    /// Draws the part `title` from the two programs' traces, and prints it.
    fn add(&mut self, title: &str, client: &Output, server: &Output) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        let client = trace::parse(&client.stderr_lines())?;
        let server = trace::parse(&server.stderr_lines())?;
        let part = diagram::Part::new(title, &client, &server);
        println!();
        print!("{}", part.text());
        self.parts.push(part);
        Ok(())
    }
}

/// Builds the binaries, then plays the four parts; fails naming every expected line not seen.
pub fn run(args: &Args) -> Result<(), String> {
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let bins = Bins::locate()?;
    let started = Instant::now();
    let mut missing = Vec::new();
    let mut figure = Figure {
        on: args.diagram,
        parts: Vec::new(),
    };

    first_exchange(&bins, &mut missing, &mut figure)?;
    counting(&bins, &mut missing, &mut figure)?;
    truncation(&bins, &mut missing, &mut figure)?;
    json(&bins, &mut missing, &mut figure)?;

    println!();
    println!(
        "demo played in {:.1}s (after the build)",
        started.elapsed().as_secs_f64()
    );
    if figure.on {
        let path = write_svg(&figure.parts)?;
        println!("the diagram of every part: {}", path.display());
    }
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
fn first_exchange(
    bins: &Bins,
    missing: &mut Vec<String>,
    figure: &mut Figure,
) -> Result<(), String> {
    let title = "Part 1: the first exchange (udp-server1.py, udp-client1.py)";
    heading(title);
    let server = start(bins, &["--mode", "hello", "--once"], figure.on)?;
    let client = client(bins, &server, &[], &["Hello Server!!"], None, figure.on)?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    figure.add(title, &client, &server)?;
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
fn counting(bins: &Bins, missing: &mut Vec<String>, figure: &mut Figure) -> Result<(), String> {
    let title =
        "Part 2: the counting server (udp-server2.py, udp-client2.py), three lines on stdin";
    heading(title);
    let server = start(bins, &["--idle", IDLE], figure.on)?;
    let input = "Hello Server!!\nこんにちは\nSee you!\n";
    let client = client(bins, &server, &[], &[], Some(input), figure.on)?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    figure.add(title, &client, &server)?;
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
fn truncation(bins: &Bins, missing: &mut Vec<String>, figure: &mut Figure) -> Result<(), String> {
    let title = "Part 3: a datagram longer than the server's buffer (--buffer 16)";
    heading(title);
    let message = "This message is longer than sixteen bytes.";
    let server = start(
        bins,
        &["--mode", "echo", "--buffer", "16", "--once"],
        figure.on,
    )?;
    let client = client(bins, &server, &[], &[message], None, figure.on)?;
    let server = server.wait(SERVER_DEADLINE);
    show_server(&server);
    show("client", &client);
    figure.add(title, &client, &server)?;
    let report = format!(
        "message cut to 16 of {} bytes; --buffer is 16",
        message.len()
    );
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
fn json(bins: &Bins, missing: &mut Vec<String>, figure: &mut Figure) -> Result<(), String> {
    let title = "Part 4: JSON envelopes (client --encoding json, server --encoding auto)";
    heading(title);
    let server = start(bins, &["--encoding", "auto", "--idle", IDLE], figure.on)?;
    let client = client(
        bins,
        &server,
        &["--encoding", "json"],
        &["Hello Server!!"],
        None,
        figure.on,
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
    figure.add(title, &client, &server)?;
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

/// Starts the server on `127.0.0.1:0` (with `--trace` when `traced`) and shows the command.
fn start(bins: &Bins, args: &[&str], traced: bool) -> Result<Server, String> {
    let mut full = vec!["--bind", "127.0.0.1:0"];
    full.extend(args);
    if traced {
        full.push("--trace");
    }
    let server = Server::spawn_after_logs(&bins.server, &full, TRACE_LINES_BEFORE_ANNOUNCE)?;
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
    traced: bool,
) -> Result<Output, String> {
    let mut command = Command::new(&bins.client);
    command
        .arg("--server")
        .arg(server.addr.to_string())
        .args(options);
    if traced {
        command.arg("--trace");
    }
    command.args(messages);
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
/// lines, then the summary (trace lines are drawn as the diagram instead).
fn show_server(server: &Output) {
    let stderr = untraced(server.stderr_lines());
    let (announce, rest) = stderr.split_at(stderr.len().min(1));
    for line in announce.iter().chain(&server.stdout_lines()).chain(rest) {
        println!("[server] {line}");
    }
    if server.killed_after.is_some() {
        println!("[server] (did not end by itself: killed)");
    }
}

fn show(label: &str, output: &Output) {
    for line in output
        .stdout_lines()
        .iter()
        .chain(&untraced(output.stderr_lines()))
    {
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

/// `lines` without the `--trace` lines.
fn untraced(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|line| !line.starts_with("trace "))
        .collect()
}

/// Writes every part's diagram to `target/demo/diagram.svg` (under `$CARGO_TARGET_DIR` when
/// set) and returns its path.
fn write_svg(parts: &[diagram::Part]) -> Result<PathBuf, String> {
    let root = crate::project_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let dir = target.join("demo");
    fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot create {} for the diagram: {e}; check that the target directory is writable",
            dir.display()
        )
    })?;
    let path = dir.join("diagram.svg");
    svg::save(&path, &diagram::svg(parts)).map_err(|e| {
        format!(
            "cannot write the diagram to {}: {e}; check that the directory is writable",
            path.display()
        )
    })?;
    Ok(path)
}
