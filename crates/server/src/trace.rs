//! [`SocketTrace`]: `--trace`, every system call on the server's sockets printed as it is made,
//! in the tutorial's vocabulary — the figure of the client's and the server's calls side by
//! side, drawn from the real run.
//!
//! The line is written by the code that makes the call (`sys.rs`), right after it returns, so
//! the trace lists the calls really made, in order, with their results:
//!
//! ```text
//! trace 2026-12-02T01:23:45.123456Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3
//! trace 2026-12-02T01:23:45.123470Z [fd 3] bind(127.0.0.1:50000)
//! trace 2026-12-02T01:23:46.000112Z [fd 3] recvmmsg(…) → 1 datagram (14 bytes) from 127.0.0.1:54321
//! trace 2026-12-02T01:23:46.000201Z [fd 3] sendto(…, 15 bytes, 127.0.0.1:54321)
//! ```
//!
//! The time is the wall clock, UTC, to the microsecond, so that the traces of two processes can
//! be merged in time order: a send is stamped as it is made (the clock is read before the
//! call), every other call as it returns, so a datagram's receive is always stamped after its
//! send, whichever process made each; `[…]` names the socket (its descriptor, and with `--workers` the
//! worker, `[w1 fd 4]`). An idle server's receive times out four times a second: the first
//! timeout is printed, the ones right after it are counted, and one line stands for them when
//! anything else happens (or the socket closes): `recvmmsg(…) → EAGAIN (timed out), 39 more
//! times`, at the time of the last of them.
//!
//! Off (no `--trace`), a trace is `None` and each hook is one branch: no formatting, no clock,
//! no allocation. On, lines go to stderr through the bounded [`LineQueue`], so a stalled
//! stderr drops trace lines (counted) rather than stop serving.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::output::LineQueue;

/// Where a socket's trace lines go, and which socket they are about; off by default.
#[derive(Clone, Default)]
pub struct SocketTrace {
    on: Option<Box<Tracer>>,
}

#[derive(Clone)]
struct Tracer {
    out: LineQueue,
    /// The socket's name in brackets: `fd 3`, `w1 fd 4`; `-` before a socket exists.
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
    /// No trace: every hook is a no-op.
    pub fn off() -> SocketTrace {
        SocketTrace { on: None }
    }

    /// Trace lines to `out` (the server's stderr queue), for the sockets not made yet.
    pub fn to(out: LineQueue) -> SocketTrace {
        SocketTrace {
            on: Some(Box::new(Tracer {
                out,
                who: "-".to_owned(),
                folded: Cell::new(None),
            })),
        }
    }

    /// Whether lines are printed.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The trace of one socket: descriptor `fd`, of worker `worker` when there are several.
    pub(crate) fn socket(&self, worker: Option<usize>, fd: impl fmt::Display) -> SocketTrace {
        SocketTrace {
            on: self.on.as_ref().map(|tracer| {
                Box::new(Tracer {
                    out: tracer.out.clone(),
                    who: match worker {
                        Some(w) => format!("w{w} fd {fd}"),
                        None => format!("fd {fd}"),
                    },
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
        self.out.push(line.as_bytes());
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
    #[cfg(target_os = "linux")]
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
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A stream that keeps what is written to it.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn traced(run: impl FnOnce(&SocketTrace)) -> Vec<String> {
        let kept = Kept::default();
        let queue = LineQueue::spawn(kept.clone(), 1 << 16, |_| {});
        run(&SocketTrace::to(queue.clone()).socket(Some(1), 4));
        queue.close(Duration::from_secs(5));
        let bytes = kept.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| {
                // The time is the third word: keep its shape, not its value.
                let mut words = line.splitn(3, ' ');
                let (first, time, rest) = (
                    words.next().unwrap_or(""),
                    words.next().unwrap_or(""),
                    words.next().unwrap_or(""),
                );
                assert!(
                    humantime::parse_rfc3339(time).is_ok() && time.len() == 27,
                    "{time:?} is not an RFC 3339 time to the microsecond"
                );
                format!("{first} TIME {rest}")
            })
            .collect()
    }

    #[test]
    fn consecutive_timeouts_are_folded_into_one_line_before_the_next_call() {
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        let lines = traced(|trace| {
            for _ in 0..4 {
                trace.failed("recvmmsg(…)", &timeout);
            }
            trace.call(format_args!("recvmmsg(…) → 1 datagram"));
            trace.failed("recvmmsg(…)", &timeout);
            trace.failed("recvmmsg(…)", &timeout);
            trace.call(format_args!("close()"));
        });
        assert_eq!(
            lines,
            [
                "trace TIME [w1 fd 4] recvmmsg(…) → EAGAIN (timed out)",
                "trace TIME [w1 fd 4] recvmmsg(…) → EAGAIN (timed out), 3 more times",
                "trace TIME [w1 fd 4] recvmmsg(…) → 1 datagram",
                "trace TIME [w1 fd 4] recvmmsg(…) → EAGAIN (timed out)",
                "trace TIME [w1 fd 4] recvmmsg(…) → EAGAIN (timed out), 1 more time",
                "trace TIME [w1 fd 4] close()",
            ]
        );
    }

    #[test]
    fn other_errors_are_printed_each_time_with_their_errno() {
        let refused = io::Error::from_raw_os_error(111);
        let lines = traced(|trace| {
            trace.done(format_args!("bind(127.0.0.1:1)"), &Err::<(), _>(refused));
        });
        let expected = if cfg!(target_os = "linux") {
            "trace TIME [w1 fd 4] bind(127.0.0.1:1) → ECONNREFUSED (Connection refused)"
        } else {
            "trace TIME [w1 fd 4] bind(127.0.0.1:1) → "
        };
        assert!(lines[0].starts_with(expected), "{lines:?}");
    }

    #[test]
    fn an_off_trace_prints_nothing() {
        let off = SocketTrace::off();
        assert!(!off.is_on());
        assert!(!off.socket(None, 3).is_on());
        off.call(format_args!("close()"));
    }
}
