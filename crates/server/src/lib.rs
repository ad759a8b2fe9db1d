//! `server` is udptalk's UDP server: the tutorial's `udp-server1.py` and `udp-server2.py` as one
//! [`Server`] that never dies on what a peer sends, never loops with another server, and never
//! stops answering because its output is slow.
//!
//! [`Server::bind`] opens the socket (one per worker with `--workers N`, sharing the address
//! through `SO_REUSEPORT`); [`Server::run`] receives datagrams until it is told to stop (a
//! flag, set by SIGINT or SIGTERM), goes idle, or has answered once, and returns the
//! [`Summary`] of what it saw, summed over the workers. Datagrams come in batches (one
//! `recvmmsg` on Linux); each goes to the [`Core`], which decides without any I/O what it gets
//! (an [`Event`] and maybe an answer); the loop sends the batch's answers (one `sendmmsg`),
//! then hands the events to a [`Sink`], such as [`TutorialLines`], the tutorial's words on
//! stdout through a bounded [`LineQueue`], or [`JsonLines`] (`--output json`). Workers share only the [`AccessCounter`] (so access
//! numbers are unique), the per-IP policies and the [`GroupClaims`] ([`Shared`]).
//! With `--pcap FILE` or `--hexdump`, a [`Capture`] gets a copy of every datagram received and
//! sent, after the batch's answers are out: pcap records through a bounded queue to the file's
//! writer thread, hex dumps through stdout's queue.
//!
//! `main.rs` only parses arguments into a [`Config`], starts the [`Console`], installs the
//! signal handlers, calls [`run`] and maps its result to an exit code, so tests can drive this
//! library and the binary alike.
//!
//! The policies that keep a server safe to expose are pure types, with no sockets, clocks or
//! threads: every method takes `now`, so their tests run without sleeping. [`ReplyCache`]
//! answers each JSON request at most once within [`proto::RETRY_WINDOW`], [`RateLimiter`] is a
//! token bucket per source address, [`AmplificationBudget`] keeps what is sent to a source
//! within three times what it sent, and [`LoopGuard`] refuses to answer what could start a loop.
//! Each holds a table with fixed caps.

mod amplification;
mod args;
mod arrivals;
mod capture;
mod charset;
mod core;
mod error;
mod json_lines;
mod loop_guard;
mod output;
mod rate_limit;
mod reply_cache;
mod server;
mod shared;
mod sink;
mod summary;
mod sys;
mod timeline;
mod trace;
mod unanswered;

pub use amplification::{AMPLIFICATION_FACTOR, AmplificationBudget, wire_len};
pub use args::{
    Args, Config, Encoding, Interface, Join, MAX_DURATION, Mode, Output, RateLimit, parse_join,
};
pub use arrivals::Arrivals;
pub use capture::{CAPTURE_EXIT_WAIT, CAPTURE_QUEUE_BYTES, Capture};
pub use core::{Answer, Core, Event, Handled};
pub use error::Error;
pub use json_lines::JsonLines;
pub use loop_guard::{FIRST_CLIENT_PORT, LoopCause, LoopGuard, REPEAT_LIMIT, REPEAT_WINDOW};
pub use output::{Console, LineQueue, Pushed, QUEUE_BYTES};
pub use rate_limit::{RateLimiter, RateReport};
pub use reply_cache::{Admission, CacheLimits, Lookup, ReplyCache, STREAM_WINDOW};
pub use server::Server;
pub use shared::{AccessCounter, CLAIM_WINDOW, GroupClaims, MAX_WORKERS, Shared};
pub use sink::{Sink, TutorialLines};
pub use summary::{PEER_TALLY_CAP, Summary};
pub use sys::{RECEIVE_BUFFER_BYTES, RecvBuffer};
pub use trace::SocketTrace;
pub use unanswered::Unanswered;

use std::sync::atomic::AtomicBool;

/// Binds, announces the bound address on `console`'s stderr (`listening on udp
/// 127.0.0.1:50000`, always the first line, so that scripts and tests can read the port),
/// serves until `stop` is set, and returns the books, with the output lines dropped so far.
pub fn run(config: Config, stop: &AtomicBool, console: &Console) -> Result<Summary, Error> {
    let trace = if config.trace {
        SocketTrace::to(console.stderr.clone())
    } else {
        SocketTrace::off()
    };
    let mut server = Server::bind_traced(config, &trace)?;
    let bound = server.local_addr();
    // Before the announce line: a capture file that cannot be written stops the server here.
    let capture = Capture::start(
        server.config().pcap.as_deref(),
        server.config().hexdump.then(|| console.stdout.clone()),
    )?;
    server = server.with_capture(capture.clone());
    let config = server.config().clone();
    console
        .stderr
        .push(format!("listening on udp {bound}{}\n", stacks(&config)).as_bytes());
    if config.output == Output::Json {
        console.stdout.push(&JsonLines::listening(bound));
    }
    if let Some(buffer) = server.recv_buffer()
        && let Some(warning) = short_buffer(buffer, config.recv_buffer.is_some())
    {
        log::warn!("{warning}");
    }
    if !config.bind.ip().to_canonical().is_loopback() {
        log::warn!(
            "bound to {}, which is reachable from the network, not only from this machine; \
             each source is limited to {}",
            config.bind,
            match config.rate_limit {
                Some(rate) => format!("{}/s", rate.per_second),
                None => "no rate (--rate-limit 0) but 3× the bytes it sends".to_owned(),
            }
        );
    }
    if !config.quiet {
        server = match config.output {
            Output::Human => server.with_sink(Box::new(TutorialLines::new(
                &config,
                console.stdout.clone(),
            ))),
            Output::Json => {
                server.with_sink(Box::new(JsonLines::new(bound, console.stdout.clone())))
            }
        };
    }
    let served = server.run(stop);
    capture.finish();
    let mut summary = served?;
    summary.lines_dropped = console.dropped();
    Ok(summary)
}

/// The warning for a receive buffer smaller than asked, when `--recv-buffer` asked for it
/// (the default's shortfall is only logged at debug level: most systems cap it lower).
fn short_buffer(buffer: RecvBuffer, asked_by_user: bool) -> Option<String> {
    let granted = buffer.granted?;
    if granted >= buffer.asked {
        return None;
    }
    let text = format!(
        "--recv-buffer {}: the kernel granted {granted} bytes, less than asked; raise its cap \
         with `sysctl -w net.core.rmem_max={}` (as root), then restart the server",
        buffer.asked, buffer.asked
    );
    if asked_by_user {
        Some(text)
    } else {
        log::debug!(
            "receive buffer: {granted} bytes granted of {} asked",
            buffer.asked
        );
        None
    }
}

/// What the announce line adds after the address of a wildcard IPv6 bind: which IP versions it
/// serves, since `[::]` alone does not say.
fn stacks(config: &Config) -> &'static str {
    match config.bind.ip() {
        // The IPv4 wildcard, through an IPv6 socket.
        std::net::IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()) => {
            " (IPv4 only)"
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() && config.ipv6_only => " (IPv6 only)",
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => " (IPv4 too)",
        _ => "",
    }
}
