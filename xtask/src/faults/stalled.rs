//! A stalled stdout: output must never stop service.
//!
//! The server runs as `udptalk-server | sleep 30` would: its stdout is a pipe that nobody
//! reads, so once the kernel's pipe buffer (64 KiB on Linux) is full, every write to it
//! blocks. A server that writes its per-datagram lines from the loop that answers would stop
//! answering there, after a few hundred datagrams, and a SIGTERM could not end it either. We
//! send [`REQUESTS`] JSON requests one at a time and require every one answered, then SIGTERM
//! and require exit 0 within [`EXIT_LIMIT`] and a summary that counts the lines it dropped.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::{BACKSTOP_IDLE, Checks, STOP_DEADLINE, Summary, envelope_id, json_request};
use crate::Bins;
use crate::peers::{Server, StdoutMode};

/// Requests sent: at about 100 bytes of stdout each, far more than a pipe holds.
const REQUESTS: u64 = 1_000;

/// The first request's id.
const FIRST_ID: u64 = 1_000;

/// How long one attempt waits for its answer; a request gets [`ATTEMPTS`] of them.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Attempts per request before the row gives up on the server.
const ATTEMPTS: u32 = 3;

/// The whole exchange stops after this long whatever happens.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// How soon after SIGTERM the server must have exited.
const EXIT_LIMIT: Duration = Duration::from_secs(1);

/// The row.
pub fn run(bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = Server::spawn_with(
        &bins.server,
        [
            "--bind",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--idle",
            BACKSTOP_IDLE,
        ],
        5,
        StdoutMode::Stall,
    )?;
    let answered = exchange(server.addr);
    let (output, sent) = server.terminate_timed(STOP_DEADLINE)?;
    let exit_after = output.ended_at.saturating_duration_since(sent);

    match answered {
        Ok(answered) => checks.figure(format!("{answered} of {REQUESTS} answered")),
        Err(problem) => checks.fail(problem),
    }
    match output.killed_after {
        Some(_) => checks.fail(format!(
            "server still running {:.1}s after SIGTERM: killed (its stdout blocked it?)",
            STOP_DEADLINE.as_secs_f64()
        )),
        None => {
            checks.check(output.code() == Some(0), || {
                format!(
                    "server after SIGTERM: expected exit 0, got {}",
                    output.describe_end()
                )
            });
            checks.check(exit_after < EXIT_LIMIT, || {
                format!(
                    "server took {:.3}s to exit after SIGTERM, expected < {:.0}s",
                    exit_after.as_secs_f64(),
                    EXIT_LIMIT.as_secs_f64()
                )
            });
            checks.figure(format!(
                "exit {:.0} ms after SIGTERM",
                exit_after.as_secs_f64() * 1e3
            ));
        }
    }
    match Summary::find(&output.stderr_lines()) {
        Some(summary) => {
            summary.check_server_books(&mut checks);
            match summary.need("lines dropped") {
                Ok(dropped) => checks.figure(format!("lines dropped {dropped}")),
                Err(_) => checks.fail(format!(
                    "server summary must count `lines dropped N` (its stdout was blocked): \
                     {summary}"
                )),
            }
        }
        None => checks.fail("server printed no `summary: …` line at exit"),
    }
    checks.output("server", &output);
    Ok(checks)
}

/// Sends the requests one at a time, each with its `ack`, and waits for each answer; returns
/// how many were answered, or the first that was not.
fn exchange(server: SocketAddr) -> Result<u64, String> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| {
            socket.connect(server)?;
            socket.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
            Ok(socket)
        })
        .map_err(|e| format!("cannot bind a socket on 127.0.0.1 connected to {server}: {e}"))?;
    let started = Instant::now();
    let mut buf = vec![0; 65_536];
    for n in 0..REQUESTS {
        let id = FIRST_ID + n;
        let request = json_request(id, "stalled stdout");
        let mut answered = false;
        for _ in 0..ATTEMPTS {
            if started.elapsed() > TIME_LIMIT {
                return Err(format!(
                    "{n} of {REQUESTS} requests answered in {}s: stopped there",
                    TIME_LIMIT.as_secs()
                ));
            }
            socket
                .send(request.as_bytes())
                .map_err(|e| format!("cannot send request {id} to {server}: {e}"))?;
            let deadline = Instant::now() + ATTEMPT_TIMEOUT;
            // Answers to earlier attempts may come late: skip them.
            while Instant::now() < deadline {
                match socket.recv(&mut buf) {
                    Ok(len) => {
                        if envelope_id(buf.get(..len).unwrap_or_default()) == Some(id) {
                            answered = true;
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if answered {
                break;
            }
        }
        if !answered {
            return Err(format!(
                "request {} of {REQUESTS} (id {id}) unanswered after {ATTEMPTS} attempts of \
                 {} ms: the server stopped serving once its stdout was blocked",
                n + 1,
                ATTEMPT_TIMEOUT.as_millis()
            ));
        }
    }
    Ok(REQUESTS)
}
