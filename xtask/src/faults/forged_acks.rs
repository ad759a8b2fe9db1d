//! Forged acks: JSON requests forged from the client's own address must not silence it.
//!
//! The server keeps, per (address, port), the `ack` watermark below which it treats ids as
//! done (docs/PROTOCOL.md, "At most once"). Anyone who can put the client's address on a
//! datagram could move that watermark past the client's next id, and the server would then
//! drop the client's real requests as stale copies. Here we do just that while our JSON client
//! works through [`LINES`] lines fed to it a few at a time: between the chunks, [`FORGED`]
//! requests in all, forged from the client's address and port ([`crate::forge`]), with random
//! ids and random acks never after their id (some equal to it, some just before, some far
//! before). The client must still print exactly one `Access count: N` per line, all N
//! distinct, lose nothing, and exit 0; the server's books must balance.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    ACCESS_COUNT, Checks, Rng, Summary, access_count, start_server, stop_server, wait_drained,
};
use crate::Bins;
use crate::forge::{self, Forger};
use crate::peers::{self, Input, Proc};

/// Lines the client is given.
const LINES: usize = 20;

/// Lines per chunk: the forged requests go in between chunks, while the chunk's requests are
/// under way.
const CHUNK: usize = 2;

/// Forged requests in all, spread evenly over the chunks.
const FORGED: usize = 10_000;

/// Forged requests sent before waiting for the server to read them: its socket buffer then
/// never overflows, which would drop the client's own requests and make it resend.
const BURST: usize = 100;

/// How long a chunk's answers may take. Without forging they take milliseconds; a request the
/// server dropped is resent after 2 s (and 4 s, 8 s, …), so a silenced client shows here.
const CHUNK_DEADLINE: Duration = Duration::from_secs(10);

/// What the client prints as it sends a line.
const SENT: &str = "Sent a message.";

/// The largest envelope id, 2^53 − 1: ids live on a ring of this many values.
const MAX_ID: u64 = (1 << 53) - 1;

/// The row.
pub fn run(bins: &Bins) -> Result<Checks, String> {
    if let Err(reason) = forge::available() {
        return Ok(Checks::skipped(reason));
    }
    let mut checks = Checks::default();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    checks.figure(format!("seed {seed:#x}"));
    let mut rng = Rng::new(seed);

    let server = start_server(bins, "127.0.0.1:0", &["--rate-limit", "0"], &mut checks)?;
    let mut command = Command::new(&bins.client);
    command.arg("--server").arg(server.addr.to_string()).args([
        "--encoding",
        "json",
        "--timeout",
        "2s",
        "--retries",
        "4",
        "-v",
    ]);
    let shown = peers::show_command(&command);
    let mut client = Proc::spawn_with(command, Input::Pipe)?;
    let mut stdin = client
        .take_stdin()
        .ok_or_else(|| format!("`{shown}`: no stdin pipe"))?;

    let mut forged = 0;
    let played = feed_and_forge(&client, &mut stdin, server.addr, &mut rng, &mut forged);
    // End-of-file: the client ends once its last answer is in.
    drop(stdin);
    let client = client.wait(if played.is_ok() {
        CHUNK_DEADLINE
    } else {
        Duration::ZERO
    });
    let summary = stop_server(server, &mut checks)?;
    if let Err(problem) = played {
        checks.fail(problem);
    }
    checks.figure(format!("{forged} forged requests"));

    checks.check(client.code() == Some(0), || {
        format!("client: expected exit 0, got {}", client.describe_end())
    });
    // Besides its answers the client prints `Sent a message.` as it sends each line.
    let lines: Vec<String> = client
        .stdout_lines()
        .into_iter()
        .filter(|line| line != SENT)
        .collect();
    let counts: Vec<Option<u64>> = lines.iter().map(|line| access_count(line)).collect();
    checks.check(
        lines.len() == LINES && counts.iter().all(Option::is_some),
        || {
            format!(
                "client printed {} answers, expected {LINES} lines `{ACCESS_COUNT}N`, one per \
                 line given",
                lines.len()
            )
        },
    );
    let mut distinct: Vec<u64> = counts.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    checks.check(distinct.len() == counts.iter().flatten().count(), || {
        format!("client printed a count twice: {counts:?}")
    });
    match Summary::find(&client.stderr_lines()) {
        Some(summary) => checks.check(summary.get("lost") == Some(0), || {
            format!("client summary must say `lost 0`: {summary}")
        }),
        None => checks.fail("client printed no `summary: …` line, though run with -v"),
    }
    if let Some(summary) = &summary {
        summary.check_server_books(&mut checks);
        checks.figure(format!("server {summary}"));
    }
    checks.output("client", &client);
    Ok(checks)
}

/// Feeds the client its lines a chunk at a time, forging a share of [`FORGED`] requests after
/// writing each chunk, then waits for the chunk's answers. Counts the forged in `forged`.
fn feed_and_forge(
    client: &Proc,
    stdin: &mut impl Write,
    server: SocketAddr,
    rng: &mut Rng,
    forged: &mut usize,
) -> Result<(), String> {
    let port = client_port(client)?;
    let from = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let forger = Forger::new(from)?;
    let chunks = LINES / CHUNK;
    let per_chunk = FORGED / chunks;
    for chunk in 0..chunks {
        let text: String = (0..CHUNK)
            .map(|i| format!("line {}\n", chunk * CHUNK + i + 1))
            .collect();
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to the client's stdin: {e}"))?;
        if chunk == 0 {
            // The forgeries are mixed into the client's traffic: it has a stream of ids once its
            // first request is answered. (A forger that fills a peer's streams before its first
            // request makes that client wait `busy` until they age out: docs/PROTOCOL.md.)
            wait_answers(client, 1, from, *forged)?;
        }
        for burst in 0..per_chunk.div_ceil(BURST) {
            for _ in 0..BURST.min(per_chunk - burst * BURST) {
                forger.send(server, forged_request(rng).as_bytes())?;
                *forged += 1;
            }
            wait_drained(server.port(), Duration::from_secs(5))?;
        }
        wait_answers(client, (chunk + 1) * CHUNK, from, *forged)?;
    }
    Ok(())
}

/// Waits until the client has printed `wanted` answers, at most [`CHUNK_DEADLINE`].
fn wait_answers(
    client: &Proc,
    wanted: usize,
    from: SocketAddr,
    forged: usize,
) -> Result<(), String> {
    let deadline = Instant::now() + CHUNK_DEADLINE;
    loop {
        let printed = client
            .stdout_lines_so_far()
            .iter()
            .filter(|line| access_count(line).is_some())
            .count();
        if printed >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the client printed {printed} answers, expected {wanted}: no answer to line {} \
                 within {}s of forging {forged} requests from its address {from}: the forged \
                 acks silenced it",
                printed + 1,
                CHUNK_DEADLINE.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The client's UDP port, from `/proc`: it binds its socket as it starts.
fn client_port(client: &Proc) -> Result<u16, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match peers::udp_ports_of(client.id())?.as_slice() {
            [port] => return Ok(*port),
            [] if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            ports => {
                return Err(format!(
                    "the client holds UDP ports {ports:?}, expected exactly one"
                ));
            }
        }
    }
}

/// A JSON request with a random id and an ack never after it, in the ring order of
/// docs/PROTOCOL.md: a third equal to the id, a third up to 1,000 before, a third anywhere up
/// to half the ring before.
fn forged_request(rng: &mut Rng) -> String {
    let id = 1 + rng.below(MAX_ID);
    let before = match rng.below(3) {
        0 => 0,
        1 => 1 + rng.below(1_000),
        _ => rng.below(MAX_ID / 2),
    };
    let ack = (id - 1 + MAX_ID - before) % MAX_ID + 1;
    format!(r#"{{"v":1,"id":{id},"kind":"request","body":"forged","ack":{ack}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ring order as proto has it: `a` is before `b` when `b` is less than half the ring ahead.
    fn before(a: u64, b: u64) -> bool {
        let distance = (b + MAX_ID - a) % MAX_ID;
        distance != 0 && distance < MAX_ID / 2
    }

    #[test]
    fn forged_acks_are_never_after_their_id() -> Result<(), String> {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let request = forged_request(&mut rng);
            let number = |name: &str| -> Option<u64> {
                let (_, rest) = request.split_once(&format!(r#""{name}":"#))?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            let (Some(id), Some(ack)) = (number("id"), number("ack")) else {
                return Err(format!("unreadable: {request}"));
            };
            assert!((1..=MAX_ID).contains(&id) && (1..=MAX_ID).contains(&ack));
            assert!(ack == id || before(ack, id), "{request}");
        }
        Ok(())
    }
}
