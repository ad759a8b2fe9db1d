//! [`SocketTrace`]: `--trace`, every system call on the client's socket printed as it is made,
//! in the tutorial's vocabulary — the figure of the client's and the server's calls side by
//! side, drawn from the real run.
//!
//! The line is written by the code that makes the call (`sys.rs`), right after it returns, so
//! the trace lists the calls really made, in order, with their results:
//!
//! ```text
//! trace 2026-12-02T01:23:45.123456Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3
//! trace 2026-12-02T01:23:45.123470Z [fd 3] bind(0.0.0.0:0)
//! trace 2026-12-02T01:23:45.123490Z [fd 3] connect(127.0.0.1:50000)
//! trace 2026-12-02T01:23:45.123520Z [fd 3] send(…, 14 bytes)
//! trace 2026-12-02T01:23:45.123900Z [fd 3] recv(…) → 15 bytes
//! ```
//!
//! `send` and `recv` are what the program calls on its connected socket; the C library makes
//! them the system calls `sendto` and `recvfrom` (with no address), which is what strace shows.
//!
//! The time is the wall clock, UTC, to the microsecond, so that the traces of two processes can
//! be merged in time order (the server's lines have the same form): a send is stamped as it is
//! made (the clock is read before the call), every other call as it returns, so a datagram's
//! receive is always stamped after its send, whichever process made each; `[…]` names the socket by
//! its descriptor. A wait made of several timed receives (ping between probes) prints the
//! first timeout; the ones right after it are counted, and one line stands for them when
//! anything else happens (or the socket closes): `recv(…) → EAGAIN (timed out), 3 more
//! times`, at the time of the last of them.
//!
//! The lines, the errno names and the folding are [`proto::trace`]'s, shared with the server;
//! what is the client's own is where the lines go.
//!
//! Off (no `--trace`), a trace is `None` and each hook is one branch: no formatting, no clock,
//! no allocation. On, each line is written to stderr as it is made.

use std::fmt;
use std::io::{self, Write};
use std::ops::Deref;
use std::time::SystemTime;

use proto::trace::{Sink, Trace};
pub(crate) use proto::trace::{errno, family};

/// Where a socket's trace lines go, and which socket they are about; off by default.
#[derive(Clone, Default)]
pub(crate) struct SocketTrace(Trace<Stderr>);

/// The process's stderr, and the wall clock, as a trace's [`Sink`].
#[derive(Clone)]
pub(crate) struct Stderr;

impl Sink for Stderr {
    #[inline]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn line(&self, line: &str) {
        // Nothing can be said about a stderr that fails; the run goes on.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

impl Deref for SocketTrace {
    type Target = Trace<Stderr>;

    /// The hooks (`call`, `done`, `sent`, `failed`, …) are [`Trace`]'s.
    fn deref(&self) -> &Trace<Stderr> {
        &self.0
    }
}

impl SocketTrace {
    /// Trace lines to stderr when `on`, for the socket not made yet.
    pub(crate) fn stderr(on: bool) -> SocketTrace {
        SocketTrace(if on {
            Trace::to(Stderr, "-".to_owned())
        } else {
            Trace::off()
        })
    }

    /// The trace of the socket with descriptor `fd`.
    pub(crate) fn socket(&self, fd: impl fmt::Display) -> SocketTrace {
        SocketTrace(self.0.renamed(|| format!("fd {fd}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_off_trace_prints_nothing() {
        let off = SocketTrace::stderr(false);
        assert!(!off.is_on());
        assert!(!off.socket(3).is_on());
        off.call(format_args!("close()"));
    }
}
