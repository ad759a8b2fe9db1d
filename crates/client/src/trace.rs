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
//! Off (no `--trace`), a trace is `None` and each hook is one branch: no formatting, no clock,
//! no allocation. On, each line is written to stderr as it is made.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

/// Where a socket's trace lines go, and which socket they are about; off by default.
#[derive(Clone, Default)]
pub(crate) struct SocketTrace {
    on: Option<Box<Tracer>>,
}

#[derive(Clone)]
struct Tracer {
    /// The socket's name in brackets: `fd 3`; `-` before a socket exists.
    who: String,
    /// Timeouts of the same call seen since the last line printed.
    folded: Cell<Option<Folded>>,
}

#[derive(Clone, Copy)]
struct Folded {
    call: &'static str,
    /// Timeouts not printed yet.
    more: u32,
    /// When the last of them returned.
    last: SystemTime,
}

impl SocketTrace {
    /// Trace lines to stderr when `on`, for the socket not made yet.
    pub(crate) fn stderr(on: bool) -> SocketTrace {
        SocketTrace {
            on: on.then(|| {
                Box::new(Tracer {
                    who: "-".to_owned(),
                    folded: Cell::new(None),
                })
            }),
        }
    }

    /// Whether lines are printed.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The trace of the socket with descriptor `fd`.
    pub(crate) fn socket(&self, fd: impl fmt::Display) -> SocketTrace {
        SocketTrace {
            on: self.on.as_ref().map(|_| {
                Box::new(Tracer {
                    who: format!("fd {fd}"),
                    folded: Cell::new(None),
                })
            }),
        }
    }

    /// Prints `call` (the call and its result) now.
    #[inline]
    pub(crate) fn call(&self, call: fmt::Arguments<'_>) {
        if let Some(tracer) = &self.on {
            tracer.print(SystemTime::now(), call);
        }
    }

    /// The time a send is made, read before the call when the trace is on (`None`, and no
    /// clock read, when off).
    #[inline]
    pub(crate) fn clock(&self) -> Option<SystemTime> {
        self.on.as_ref().map(|_| SystemTime::now())
    }

    /// Prints the send `call`, made at `made` (from [`clock`](Self::clock)), with the error
    /// when `result` is one.
    #[inline]
    pub(crate) fn sent<T>(
        &self,
        made: Option<SystemTime>,
        call: fmt::Arguments<'_>,
        result: &io::Result<T>,
    ) {
        if let (Some(tracer), Some(made)) = (&self.on, made) {
            match result {
                Ok(_) => tracer.print(made, call),
                Err(e) => tracer.print(made, format_args!("{call} → {}", errno(e))),
            }
        }
    }

    /// Prints `call`, with the error when `result` is one: for calls that return nothing
    /// worth showing (`bind`, `setsockopt`).
    #[inline]
    pub(crate) fn done<T>(&self, call: fmt::Arguments<'_>, result: &io::Result<T>) {
        if let Some(tracer) = &self.on {
            let now = SystemTime::now();
            match result {
                Ok(_) => tracer.print(now, call),
                Err(e) => tracer.print(now, format_args!("{call} → {}", errno(e))),
            }
        }
    }

    /// Prints a receive `call` that failed with `e`; a timeout right after another of the same
    /// call is counted instead, and printed with the next line.
    pub(crate) fn failed(&self, call: &'static str, e: &io::Error) {
        let Some(tracer) = &self.on else { return };
        if !timed_out(e) {
            tracer.print(SystemTime::now(), format_args!("{call} → {}", errno(e)));
            return;
        }
        let now = SystemTime::now();
        match tracer.folded.get() {
            Some(folded) if folded.call == call => tracer.folded.set(Some(Folded {
                more: folded.more + 1,
                last: now,
                ..folded
            })),
            _ => {
                tracer.flush();
                tracer.write(now, format_args!("{call} → {TIMED_OUT}"));
                tracer.folded.set(Some(Folded {
                    call,
                    more: 0,
                    last: now,
                }));
            }
        }
    }
}

/// How a receive that timed out reads.
const TIMED_OUT: &str = "EAGAIN (timed out)";

impl Tracer {
    fn print(&self, at: SystemTime, call: fmt::Arguments<'_>) {
        self.flush();
        self.write(at, call);
    }

    /// Prints the timeouts counted and not printed yet, as one line.
    fn flush(&self) {
        if let Some(folded) = self.folded.take()
            && folded.more > 0
        {
            let times = if folded.more == 1 { "time" } else { "times" };
            self.write(
                folded.last,
                format_args!(
                    "{} → {TIMED_OUT}, {} more {times}",
                    folded.call, folded.more
                ),
            );
        }
    }

    fn write(&self, at: SystemTime, call: fmt::Arguments<'_>) {
        let line = format!(
            "trace {} [{}] {call}\n",
            humantime::format_rfc3339_micros(at),
            self.who
        );
        // Nothing can be said about a stderr that fails; the run goes on.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Whether `e` is a receive timeout (`SO_RCVTIMEO` passed).
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An error as strace shows it: the errno's name and its text (`ECONNREFUSED (Connection
/// refused)`); a timeout as `EAGAIN (timed out)`.
pub(crate) fn errno(e: &io::Error) -> String {
    if timed_out(e) {
        return TIMED_OUT.to_owned();
    }
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        let errno = nix::errno::Errno::from_raw(code);
        return format!("{errno:?} ({})", errno.desc());
    }
    e.to_string()
}

/// `AF_INET` or `AF_INET6`, as `socket()` is asked for.
pub(crate) fn family(addr: SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V4(_) => "AF_INET",
        SocketAddr::V6(_) => "AF_INET6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_strace_shows_them() {
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(errno(&timeout), "EAGAIN (timed out)");
        if cfg!(unix) {
            let refused = io::Error::from_raw_os_error(111);
            if cfg!(target_os = "linux") {
                assert_eq!(errno(&refused), "ECONNREFUSED (Connection refused)");
            }
        }
    }

    #[test]
    fn an_off_trace_prints_nothing() {
        let off = SocketTrace::stderr(false);
        assert!(!off.is_on());
        assert!(!off.socket(3).is_on());
        off.call(format_args!("close()"));
    }
}
