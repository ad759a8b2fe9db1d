//! `server` is udptalk's UDP server: the tutorial's `udp-server1.py` and `udp-server2.py` as one
//! [`Server`] that never dies on what a peer sends.
//!
//! [`Server::bind`] opens the socket, [`Server::run`] receives datagrams until it is told to stop
//! (a flag, set by Ctrl-C or SIGTERM), goes idle, or has answered once, and returns the
//! [`Summary`] of what it saw. Each datagram is decoded with [`proto`], counted or refused
//! (the counting rule is in [`Server::run`]'s docs), shown on stdout in the tutorial's words,
//! and answered.
//!
//! `main.rs` only parses arguments into a [`Config`], installs the signal handler and maps an
//! [`Error`] to an exit code, so tests can drive this library and the binary alike.
//!
//! The policies that keep a server safe to expose are pure types, with no sockets, clocks or
//! threads: every method takes `now`, so their tests run without sleeping. [`ReplyCache`]
//! answers each JSON request at most once within [`proto::RETRY_WINDOW`], [`RateLimiter`] is a
//! token bucket per source address, and [`AmplificationBudget`] keeps what is sent to a source
//! within three times what it sent. Each holds a table with fixed caps.

mod amplification;
mod args;
mod error;
mod rate_limit;
mod reply_cache;
mod responder;
mod server;
mod sys;
mod timeline;

pub use amplification::{AMPLIFICATION_FACTOR, AmplificationBudget, wire_len};
pub use args::{Args, Config, Encoding, Mode, RateLimit};
pub use error::Error;
pub use rate_limit::{RateLimiter, RateReport};
pub use reply_cache::{CacheLimits, Lookup, ReplyCache, STREAM_WINDOW};
pub use server::{PEER_TALLY_CAP, Server, Summary};

use std::io::Write;
use std::sync::atomic::AtomicBool;

/// Binds, announces the bound address on stderr (`listening on udp 127.0.0.1:50000`, the first
/// line, flushed, so that scripts and tests can read the port), and serves until `stop` is set.
pub fn run(config: Config, stop: &AtomicBool) -> Result<Summary, Error> {
    let server = Server::bind(config)?;
    let mut stderr = std::io::stderr().lock();
    // Nothing useful can be done if stderr is closed: serve anyway.
    let _ = writeln!(stderr, "listening on udp {}", server.local_addr());
    let _ = stderr.flush();
    drop(stderr);
    let config = server.config();
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
    server.run(stop)
}
