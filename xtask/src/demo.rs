//! `cargo xtask demo`: builds, then plays the tutorial's exchanges on loopback, as the
//! tutorial's figure shows them.
//!
//! Each part runs a server on port 0 (its port read from its `listening on udp` line) and a
//! client, both with `--trace`, and prints one timeline ([`timeline`]): both programs' socket
//! calls in the order they happened, each with the tutorial's words for it, and each program's
//! own lines (`Sent a message.`, `Message received from …`) right after the call that produced
//! them. The parts: the first exchange (`udp-server1.py`, `udp-client1.py`), the counting server
//! fed three lines (`udp-server2.py`, `udp-client2.py`), a datagram longer than a small
//! `--buffer`, JSON envelopes, and "connectionless": no server (the client still sends; an ICMP
//! port unreachable ends it with exit 4), a silent peer (exit 3 after the timeout), and a lossy
//! link (the faults stage's proxy, its fixed pattern) where JSON resends get every message
//! answered and the server counts each once. Every expected line and exit code is checked; a
//! missing one makes the demo fail. Each server ends by itself (`--once` or `--idle`), and is
//! killed if it does not.
//!
//! `--step` pauses between parts until Enter (only when stdin is a terminal). `--pcap FILE`
//! writes both programs' captures of the whole demo as one pcap file in time order
//! ([`capture`]). `--diagram` also draws each part as the tutorial's two-column figure
//! ([`diagram`]): in the terminal, and all parts in `target/demo/diagram.svg`.

mod capture;
mod diagram;
mod timeline;

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bins;
use crate::faults::lossy;
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

/// The tutorial's first message.
const MESSAGE: &str = "Hello Server!!";

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Also draw each part's socket calls as a two-column sequence diagram (client | server):
    /// in the terminal, and in target/demo/diagram.svg
    #[arg(long)]
    diagram: bool,
    /// Pause before each part until Enter is pressed (when stdin is a terminal), after one
    /// sentence saying what the part shows
    #[arg(long)]
    step: bool,
    /// Write both programs' captures of the whole demo to FILE, one pcap file in time order
    /// (`tshark -r FILE`, Wireshark)
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

/// Where the parts' captures go until they are merged; removed when dropped.
struct Captures {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl Captures {
    fn new() -> Result<Captures, String> {
        let dir = target_dir()
            .join("demo")
            .join(format!("pcap-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot create {} for the parts' captures: {e}; check that the target directory is writable",
                dir.display()
            )
        })?;
        Ok(Captures {
            dir,
            files: Vec::new(),
        })
    }

    /// A new file for one program's capture of one part.
    fn next(&mut self) -> PathBuf {
        let path = self.dir.join(format!("{}.pcap", self.files.len() + 1));
        self.files.push(path.clone());
        path
    }

    /// Merges every capture written into `file`; returns how many datagrams it holds.
    fn write(&self, file: &Path) -> Result<usize, String> {
        let mut captures = Vec::new();
        for path in &self.files {
            // A program that ended before its first datagram may have written nothing.
            if let Ok(bytes) = fs::read(path) {
                if !bytes.is_empty() {
                    captures.push(bytes);
                }
            }
        }
        let (merged, count) = capture::merge(&captures)?;
        fs::write(file, merged).map_err(|e| cannot_write(file, &e))?;
        Ok(count)
    }
}

impl Drop for Captures {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The demo's state: the binaries, what is missing so far, the options.
struct Demo<'a> {
    bins: &'a Bins,
    missing: Vec<String>,
    step: bool,
    parts: usize,
    diagram: Option<Vec<diagram::Part>>,
    captures: Option<Captures>,
}

/// Builds the binaries, then plays the parts; fails naming every expected line not seen.
pub fn run(args: &Args) -> Result<(), String> {
    if let Some(file) = &args.pcap {
        // Said before the demo plays, not after: the file is replaced at the end.
        fs::File::create(file).map_err(|e| cannot_write(file, &e))?;
    }
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let bins = Bins::locate()?;
    let started = Instant::now();
    let mut demo = Demo {
        bins: &bins,
        missing: Vec::new(),
        step: args.step,
        parts: 0,
        diagram: args.diagram.then(Vec::new),
        captures: args.pcap.as_ref().map(|_| Captures::new()).transpose()?,
    };
    println!("The commands are shown as you would type them, each program in its own terminal,");
    println!("the server first. The demo binds port 0 (any free port) where you would leave");
    println!(
        "--bind out (port 50000), and adds --trace: each socket call on stderr, with its time."
    );

    demo.first_exchange()?;
    demo.counting()?;
    demo.truncation()?;
    demo.json()?;
    demo.connectionless()?;

    println!();
    println!(
        "demo played in {:.1}s (after the build)",
        started.elapsed().as_secs_f64()
    );
    if let Some(parts) = &demo.diagram {
        let path = write_svg(parts)?;
        println!("the diagram of every part: {}", path.display());
    }
    if let (Some(captures), Some(file)) = (&demo.captures, &args.pcap) {
        let count = captures.write(file)?;
        println!(
            "the capture of the whole demo: {} ({count} datagrams; try `tshark -r {}`)",
            file.display(),
            file.display()
        );
    }
    if demo.missing.is_empty() {
        println!("every expected reply was seen");
        Ok(())
    } else {
        Err(format!(
            "the demo did not show everything it should:\n  - {}",
            demo.missing.join("\n  - ")
        ))
    }
}

impl Demo<'_> {
    /// Prints a part's heading and its sentence; with `--step`, waits for Enter first.
    fn heading(&mut self, title: &str, sentence: &str) {
        self.parts += 1;
        if self.step && self.parts > 1 && std::io::stdin().is_terminal() {
            print!("\n(press Enter for the next part) ");
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        }
        println!();
        println!("== {title}");
        println!("   {sentence}");
    }

    /// Starts the server on `127.0.0.1:0` with `--trace` (and `--pcap` when asked) and shows
    /// the command.
    fn start(&mut self, args: &[&str]) -> Result<Server, String> {
        let mut full: Vec<String> = vec!["--bind".into(), "127.0.0.1:0".into()];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        full.push("--trace".into());
        if let Some(captures) = &mut self.captures {
            full.push("--pcap".into());
            full.push(captures.next().display().to_string());
        }
        let server =
            Server::spawn_after_logs(&self.bins.server, &full, TRACE_LINES_BEFORE_ANNOUNCE)?;
        println!("server$ {}", as_typed("server", &full));
        Ok(server)
    }

    /// Runs the client against `to` with `--trace` (and `--pcap`) and shows the command.
    fn client(
        &mut self,
        to: SocketAddr,
        options: &[&str],
        messages: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, String> {
        let mut args: Vec<String> = vec!["--server".into(), to.to_string()];
        args.extend(options.iter().map(|a| (*a).to_owned()));
        args.push("--trace".into());
        if let Some(captures) = &mut self.captures {
            args.push("--pcap".into());
            args.push(captures.next().display().to_string());
        }
        args.extend(messages.iter().map(|a| (*a).to_owned()));
        let shown = as_typed("client", &args);
        match stdin {
            Some(input) => println!("client$ printf '{}' | {shown}", input.replace('\n', "\\n")),
            None => println!("client$ {shown}"),
        }
        let mut command = Command::new(&self.bins.client);
        command.args(&args);
        peers::run(
            command,
            stdin.map(|input| input.as_bytes().to_vec()),
            CLIENT_DEADLINE,
        )
    }

    /// Prints the timeline of one exchange (and its diagram with `--diagram`).
    fn show(
        &mut self,
        title: &str,
        client: &Output,
        server: Option<&Output>,
    ) -> Result<(), String> {
        let client_calls = trace::parse(&client.stderr_lines())?;
        let server_calls = match server {
            Some(server) => trace::parse(&server.stderr_lines())?,
            None => Vec::new(),
        };
        let part = diagram::Part::new(title, &client_calls, &server_calls);
        let mut client_err = untraced(client.stderr_lines());
        if client.code() != Some(0) {
            client_err.push(format!("({})", client.describe_end()));
        }
        let (server_out, mut server_err) = match server {
            Some(server) => (server.stdout_lines(), untraced(server.stderr_lines())),
            None => (Vec::new(), Vec::new()),
        };
        if server.is_some_and(|s| s.killed_after.is_some()) {
            server_err.push("(did not end by itself: killed)".to_owned());
        }
        let entries = timeline::build(
            &part,
            &client.stdout_lines(),
            &client_err,
            &server_out,
            &server_err,
        );
        println!();
        print!("{}", timeline::text(&entries));
        if let Some(parts) = &mut self.diagram {
            println!();
            print!("{}", part.text());
            parts.push(part);
        }
        Ok(())
    }

    /// Part 1: `udp-server1.py` answers one `Hello Server!!` with `Hello Client!!` and ends.
    fn first_exchange(&mut self) -> Result<(), String> {
        let title = "Part 1: the first exchange (udp-server1.py, udp-client1.py)";
        self.heading(
            title,
            "The server binds its port and waits in recvfrom; the client sends one datagram and waits in recv for the answer.",
        );
        let server = self.start(&["--mode", "hello", "--once"])?;
        let client = self.client(server.addr, &[], &[MESSAGE], None)?;
        let server = server.wait(SERVER_DEADLINE);
        self.show(title, &client, Some(&server))?;
        self.expect("part 1 client", &client.stdout, "Sent a message.");
        self.expect(
            "part 1 client",
            &client.stdout,
            "Server message: Hello Client!!",
        );
        self.expect(
            "part 1 server",
            &server.stdout,
            "The message is [ Hello Server!! ].",
        );
        Ok(())
    }

    /// Part 2: `udp-server2.py` counts; a client reads three lines, one Japanese, from stdin.
    fn counting(&mut self) -> Result<(), String> {
        let title =
            "Part 2: the counting server (udp-server2.py, udp-client2.py), three lines on stdin";
        self.heading(
            title,
            "One socket carries every line: each is one datagram, and the server counts each one it receives.",
        );
        let server = self.start(&["--idle", IDLE])?;
        let input = "Hello Server!!\nこんにちは\nSee you!\n";
        let client = self.client(server.addr, &[], &[], Some(input))?;
        let server = server.wait(SERVER_DEADLINE);
        self.show(title, &client, Some(&server))?;
        for n in 1..=3 {
            self.expect(
                "part 2 client",
                &client.stdout,
                &format!("Access count: {n}"),
            );
        }
        self.expect(
            "part 2 server",
            &server.stdout,
            "The message is [ こんにちは ].",
        );
        Ok(())
    }

    /// Part 3: a server with `--buffer 16` gets a longer datagram, says so, and echoes what it
    /// kept.
    fn truncation(&mut self) -> Result<(), String> {
        let title = "Part 3: a datagram longer than the server's buffer (--buffer 16)";
        self.heading(
            title,
            "recvfrom(16) keeps the first 16 bytes of a longer datagram and the rest is gone: udptalk says so where Python says nothing.",
        );
        let message = "This message is longer than sixteen bytes.";
        let server = self.start(&["--mode", "echo", "--buffer", "16", "--once"])?;
        let client = self.client(server.addr, &[], &[message], None)?;
        let server = server.wait(SERVER_DEADLINE);
        self.show(title, &client, Some(&server))?;
        let report = format!(
            "message cut to 16 of {} bytes; --buffer is 16",
            message.len()
        );
        self.expect("part 3 server", &server.stdout, &report);
        let kept = message.get(..16).unwrap_or(message);
        self.expect(
            "part 3 client",
            &client.stdout,
            &format!("Server message: {kept}"),
        );
        Ok(())
    }

    /// Part 4: a JSON client to an `auto` server, then an envelope as raw bytes on the wire
    /// (numbered after the client's, so the ids read as one sequence), then a plain datagram:
    /// `auto` answers each in the codec it came in.
    fn json(&mut self) -> Result<(), String> {
        let title = "Part 4: JSON envelopes (client --encoding json, server --encoding auto)";
        self.heading(
            title,
            "An envelope numbers each message (the client starts at a random id, as TCP does), and the reply carries the same id; a plain datagram gets a plain answer.",
        );
        let server = self.start(&["--encoding", "auto", "--idle", IDLE])?;
        // -vv: the client logs the id it sends, and the raw envelope takes the next one.
        let client = self.client(
            server.addr,
            &["--encoding", "json", "-vv"],
            &[MESSAGE],
            None,
        )?;
        let id = client_id(&client);
        let raw_id = id.map_or(7, |id| if id >= proto::MAX_ID { 1 } else { id + 1 });
        let envelope = format!(r#"{{"v":1,"id":{raw_id},"kind":"request","body":"{MESSAGE}"}}"#);
        let mut wire = Vec::new();
        for request in [envelope.as_str(), MESSAGE] {
            wire.push(format!("→ {request}"));
            match peers::exchange(server.addr, request.as_bytes(), Duration::from_secs(5)) {
                Ok(reply) => wire.push(format!("← {}", String::from_utf8_lossy(&reply))),
                Err(error) => wire.push(format!("✗ {error}")),
            }
        }
        let server = server.wait(SERVER_DEADLINE);
        self.show(title, &client, Some(&server))?;
        println!("   then the demo's own socket sends one envelope and one plain datagram:");
        for line in &wire {
            println!("{:>12}  [wire]     {line}", "");
        }
        if id.is_none() {
            self.missing
                .push("part 4 client: the -vv line `id N: attempt 1 …` naming its id".to_owned());
        }
        self.expect(
            "part 4 client",
            &client.stdout,
            "Server message: Access count: 1",
        );
        let wire = wire.join("\n").into_bytes();
        let reply = format!(r#"← {{"v":1,"id":{raw_id},"kind":"reply","body":"Access count: 2"}}"#);
        self.expect("part 4 raw envelope", &wire, &reply);
        self.expect("part 4 raw plain", &wire, "← Access count: 3");
        Ok(())
    }

    /// Part 5: what "connectionless" means, three ways.
    fn connectionless(&mut self) -> Result<(), String> {
        // (a) No server.
        let title = "Part 5a: connectionless: no server at all";
        self.heading(
            title,
            "Sending needs no server: the datagram leaves and `Sent a message.` is printed; the kernel's ICMP port unreachable answers, and the client ends with exit 4 where the tutorial's client would wait in recv forever.",
        );
        let port = peers::free_port(Ipv4Addr::LOCALHOST.into())?;
        let nobody = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        println!("server$ (nothing: no server is started)");
        let client = self.client(nobody, &[], &[MESSAGE], None)?;
        self.show(title, &client, None)?;
        self.expect("part 5a client", &client.stdout, "Sent a message.");
        self.expect_exit("part 5a client", &client, 4);

        // (b) A silent peer.
        let title = "Part 5b: connectionless: a peer that never answers";
        self.heading(
            title,
            "A bound socket that never answers sends no ICMP back, so only the timeout ends the wait: exit 3.",
        );
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|socket| socket.local_addr().map(|addr| (socket, addr)))
            .map_err(|e| format!("cannot bind the silent peer's socket on 127.0.0.1: {e}"))?;
        println!(
            "server$ (a socket bound to {} that reads nothing and answers nothing)",
            silent.1
        );
        let client = self.client(silent.1, &["--timeout", "300ms"], &[MESSAGE], None)?;
        drop(silent);
        self.show(title, &client, None)?;
        self.expect("part 5b client", &client.stdout, "Sent a message.");
        self.expect_exit("part 5b client", &client, 3);

        // (c) A lossy link.
        let title = "Part 5c: connectionless: a lossy link, JSON resends";
        self.heading(
            title,
            "Nothing in UDP resends a lost datagram: the JSON client does, after its timeout, and the server answers a resend of an id it has seen from its cache, counting each message once.",
        );
        let server = self.start(&["--encoding", "auto", "--idle", "2s"])?;
        let proxy = lossy::Proxy::start(server.addr)?;
        println!(
            "proxy$ (the faults stage's lossy proxy on {}, its fixed pattern: drops, a delay, a duplicate)",
            proxy.addr
        );
        let messages = [
            "message 1",
            "message 2",
            "message 3",
            "message 4",
            "message 5",
        ];
        let client = self.client(
            proxy.addr,
            &["--encoding", "json", "--timeout", "100ms", "--retries", "6"],
            &messages,
            None,
        );
        let log = proxy.finish()?;
        let client = client?;
        let server = server.wait(SERVER_DEADLINE);
        self.show(title, &client, Some(&server))?;
        println!(
            "   the proxy did (message#datagram of it): {}",
            log.applied.join(", ")
        );
        for n in 1..=messages.len() {
            self.expect(
                "part 5c client",
                &client.stdout,
                &format!("Server message: Access count: {n}"),
            );
        }
        self.expect_exit("part 5c client", &client, 0);
        let counted = format!("New access.(access count: {})", messages.len());
        self.expect("part 5c server", &server.stdout, &counted);
        let over = format!("New access.(access count: {})", messages.len() + 1);
        if lines(&server.stdout).contains(&over) {
            self.missing
                .push(format!("part 5c server: counted a resend ({over:?})"));
        }
        Ok(())
    }

    /// Notes `what` as missing unless `output` has the line `line`.
    fn expect(&mut self, what: &str, output: &[u8], line: &str) {
        if !lines(output).iter().any(|seen| seen == line) {
            self.missing.push(format!("{what}: the line {line:?}"));
        }
    }

    /// Notes `what` as wrong unless the program ended with exit `code`.
    fn expect_exit(&mut self, what: &str, output: &Output, code: i32) {
        if output.code() != Some(code) {
            self.missing.push(format!(
                "{what}: exit {code}, but it ended with {}",
                output.describe_end()
            ));
        }
    }
}

/// The error for a `--pcap FILE` that cannot be written.
fn cannot_write(file: &Path, error: &std::io::Error) -> String {
    format!(
        "cannot write the capture to {}: {error}; check that its directory exists and is writable",
        file.display()
    )
}

/// The id of the client's first envelope, from its `-vv` line `id N: attempt 1 of …`.
fn client_id(client: &Output) -> Option<u64> {
    client.stderr_lines().iter().find_map(|line| {
        let (_, rest) = line.split_once("id ")?;
        let (id, rest) = rest.split_once(": ")?;
        rest.starts_with("attempt 1 ")
            .then(|| id.parse().ok())
            .flatten()
    })
}

/// A command as a learner types it: `cargo run -p PACKAGE -- ARGS`.
fn as_typed(package: &str, args: &[String]) -> String {
    let mut command = Command::new("cargo");
    command.args(["run", "-p", package, "--"]).args(args);
    show_command(&command)
}

/// `lines` without the `--trace` lines.
fn untraced(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|line| !line.starts_with("trace "))
        .collect()
}

/// `target/` (or `$CARGO_TARGET_DIR`) of the project.
fn target_dir() -> PathBuf {
    let root = crate::project_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Writes every part's diagram to `target/demo/diagram.svg` (under `$CARGO_TARGET_DIR` when
/// set) and returns its path.
fn write_svg(parts: &[diagram::Part]) -> Result<PathBuf, String> {
    let dir = target_dir().join("demo");
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
