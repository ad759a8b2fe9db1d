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
//! The lines, the errno names and the folding are [`proto::trace`]'s, shared with the client;
//! what is the server's own is where the lines go and the worker in a socket's name.
//!
//! Off (no `--trace`), a trace is `None` and each hook is one branch: no formatting, no clock,
//! no allocation. On, lines go to stderr through the bounded [`LineQueue`], so a stalled
//! stderr drops trace lines (counted) rather than stop serving.

use std::fmt;
use std::ops::Deref;
use std::time::SystemTime;

use proto::trace::{Sink, Trace};
pub(crate) use proto::trace::{errno, family};

use crate::output::LineQueue;

/// Where a socket's trace lines go, and which socket they are about; off by default.
#[derive(Clone, Default)]
pub struct SocketTrace(Trace<Stderr>);

/// The server's stderr queue, and the wall clock, as a trace's [`Sink`].
#[derive(Clone)]
pub struct Stderr(LineQueue);

impl Sink for Stderr {
    #[inline]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn line(&self, line: &str) {
        self.0.push(line.as_bytes());
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
    /// No trace: every hook is a no-op.
    pub fn off() -> SocketTrace {
        SocketTrace(Trace::off())
    }

    /// Trace lines to `out` (the server's stderr queue), for the sockets not made yet.
    pub fn to(out: LineQueue) -> SocketTrace {
        SocketTrace(Trace::to(Stderr(out), "-".to_owned()))
    }

    /// Whether lines are printed.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.is_on()
    }

    /// The trace of one socket: descriptor `fd`, of worker `worker` when there are several.
    pub(crate) fn socket(&self, worker: Option<usize>, fd: impl fmt::Display) -> SocketTrace {
        SocketTrace(self.0.renamed(|| match worker {
            Some(w) => format!("w{w} fd {fd}"),
            None => format!("fd {fd}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io;
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
