//! `--output json` from the real programs: every kind of line appears, and every line validates
//! against docs/output.schema.json.
//!
//! The table's `[--output json]` rows validate what ordinary exchanges print; this row makes
//! the programs print the rest. A raw socket sends the server what makes each outcome (a
//! non-UTF-8 message, a bad envelope, a resend, an acknowledged copy, a reply envelope, a
//! server's answer, more requests than one peer may have outstanding); a second server with
//! `--rate-limit 1/s` drops a burst; the client talks to the server, to a socket that never
//! answers and to a closed port; `ping` and `bench` run briefly. Every loop is bounded in count
//! and time.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::Bins;
use crate::peers::{self, Output, Server};
use crate::schema::OutputSchema;

/// Every kind of line the programs print, as [`crate::schema::kind`] names them.
pub const KINDS: [&str; 21] = [
    "listening",
    "datagram/counted",
    "datagram/counted/base64",
    "datagram/resent",
    "datagram/done",
    "datagram/busy",
    "datagram/refused",
    "datagram/ignored",
    "datagram/rate_limited",
    "datagram/loop",
    "summary",
    "exit",
    "exchange/reply",
    "exchange/reply/base64",
    "exchange/server_error",
    "exchange/no_reply",
    "exchange/interrupted",
    "ping_start",
    "ping_reply",
    "ping_statistics",
    "bench",
];

/// How long a server, told `--idle`, has to end once its peers are done.
const SERVER_END: Duration = Duration::from_secs(10);

/// How long any one client run may take.
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// Requests sent from one port without acknowledging any: more than the reply cache keeps for
/// one peer (256), so the last ones are answered `busy`.
const UNACKED_REQUESTS: u64 = 300;

/// Plays the row; returns the problems (none: it passed) and the figures to show.
pub fn play(bins: &Bins, schema: &OutputSchema) -> Result<(Vec<String>, String), String> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let bind = SocketAddr::new(ip, 0).to_string();
    let json = ["--output", "json"];
    let main = Server::spawn(
        &bins.server,
        ["--bind", &bind, "--idle", "1s", "--buffer", "4096"]
            .iter()
            .chain(&json),
    )?;
    let limited = Server::spawn(
        &bins.server,
        ["--bind", &bind, "--idle", "1s", "--rate-limit", "1/s"]
            .iter()
            .chain(&json),
    )?;
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let mut problems = Vec::new();

    if let Err(e) = raw_peer(main.addr) {
        problems.push(format!("raw peer: {e}"));
    }
    if let Err(e) = burst(limited.addr) {
        problems.push(format!("burst to the rate-limited server: {e}"));
    }

    // A socket that never answers (held open to the end), and a port nothing listens on.
    let silent = UdpSocket::bind((ip, 0)).map_err(|e| format!("bind a silent socket: {e}"))?;
    let silent = silent
        .local_addr()
        .map_err(|e| format!("silent socket: {e}"))?
        .to_string();
    let closed = SocketAddr::new(ip, peers::free_port(ip)?).to_string();
    let server = main.addr.to_string();
    let big = "9".repeat(5000);
    let runs: [(&str, Vec<&str>); 7] = [
        ("talk", vec!["--server", &server, "--", "hello"]),
        (
            "talk json, too large for --buffer",
            vec!["--server", &server, "--encoding", "json", "--", &big],
        ),
        (
            "no reply",
            vec!["--server", &silent, "--timeout", "200ms", "--", "anyone?"],
        ),
        (
            "interrupted",
            vec!["--server", &silent, "--deadline", "300ms", "--", "wait"],
        ),
        ("refused", vec!["--server", &closed, "--", "nobody"]),
        (
            "ping",
            vec!["--server", &server, "ping", "-c", "2", "-i", "0.05"],
        ),
        (
            "bench",
            vec![
                "--server",
                &server,
                "bench",
                "--duration",
                "200ms",
                "--warmup",
                "0",
            ],
        ),
    ];
    for (what, args) in runs {
        let mut command = Command::new(&bins.client);
        command.args(json).args(&args);
        outputs.push((
            format!("client ({what})"),
            peers::run(command, None, CLIENT_DEADLINE)?,
        ));
    }
    // A message that is not UTF-8 (only a Unix command line can carry it).
    let mut command = Command::new(&bins.client);
    command
        .args(["--server", &server])
        .args(json)
        .arg("--")
        .arg(peers::os_arg(b"caf\xe9".to_vec())?);
    outputs.push((
        "client (not UTF-8)".to_owned(),
        peers::run(command, None, CLIENT_DEADLINE)?,
    ));
    outputs.push(("server".to_owned(), main.wait(SERVER_END)));
    outputs.push(("rate-limited server".to_owned(), limited.wait(SERVER_END)));

    let mut seen = BTreeSet::new();
    let mut lines = 0;
    for (who, output) in &outputs {
        if output.killed_after.is_some() {
            problems.push(format!("{who} did not end in time: killed"));
        }
        let stdout = output.stdout_lines();
        let (invalid, valid) = schema.check_stdout(who, &stdout, &mut seen);
        lines += valid.len();
        problems.extend(invalid);
    }
    let missing: Vec<&str> = KINDS
        .iter()
        .filter(|kind| !seen.contains(**kind))
        .copied()
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "no line of kind {} (seen: {})",
            missing.join(", "),
            seen.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        for (who, output) in &outputs {
            problems.push(peers::indent(
                &format!("{who} stdout"),
                &output.stdout_lines(),
            ));
            problems.push(peers::indent(
                &format!("{who} stderr"),
                &output.stderr_lines(),
            ));
        }
    }
    Ok((
        problems,
        format!("{lines} lines of {} kinds, all valid", seen.len()),
    ))
}

/// What a peer other than our client makes the server say: one datagram at a time, each
/// answer awaited (or its absence, for at most [`NO_ANSWER`]).
fn raw_peer(server: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| {
            socket.connect(server)?;
            socket.set_read_timeout(Some(NO_ANSWER))?;
            Ok(socket)
        })
        .map_err(|e| format!("socket: {e}"))?;
    let request = |id: u64, ack: Option<u64>| match ack {
        Some(ack) => format!(r#"{{"v":1,"id":{id},"ack":{ack},"kind":"request","body":"x"}}"#),
        None => format!(r#"{{"v":1,"id":{id},"kind":"request","body":"x"}}"#),
    };
    let mut datagrams: Vec<Vec<u8>> = vec![
        b"plain text".to_vec(),
        b"caf\xe9 \xff".to_vec(),
        br#"{"v":1,"id":1,"kind":"bogus","body":"x"}"#.to_vec(),
        request(5, None).into_bytes(),
        // The same request again: answered from the cache, not counted.
        request(5, None).into_bytes(),
        br#"{"v":1,"id":3,"kind":"reply","body":"x"}"#.to_vec(),
        b"Access count: 1".to_vec(),
        // Acknowledges everything below 9, so that 5 again is done with.
        request(9, Some(9)).into_bytes(),
        request(5, None).into_bytes(),
    ];
    datagrams.extend((0..UNACKED_REQUESTS).map(|n| request(1_000 + n, None).into_bytes()));
    let mut buf = [0_u8; 2048];
    for datagram in &datagrams {
        socket
            .send(datagram)
            .map_err(|e| format!("send to {server}: {e}"))?;
        // An answer, or none (ignored, loop, done): either way on to the next.
        let _ = socket.recv(&mut buf);
    }
    Ok(())
}

/// How long the raw peer waits for an answer that may not come.
const NO_ANSWER: Duration = Duration::from_millis(100);

/// Five datagrams at once to a server limited to 1/s (bursts of 2): the last are dropped.
fn burst(server: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("socket: {e}"))?;
    for n in 0..5 {
        socket
            .send_to(format!("burst {n}").as_bytes(), server)
            .map_err(|e| format!("send to {server}: {e}"))?;
    }
    Ok(())
}
