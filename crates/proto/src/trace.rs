//! The lines of `--trace`, shared by the server and the client: every system call on a socket,
//! printed as it is made, in the tutorial's vocabulary.
//!
//! ```text
//! trace 2026-12-02T01:23:45.123456Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3
//! trace 2026-12-02T01:23:45.123470Z [fd 3] bind(127.0.0.1:50000)
//! trace 2026-12-02T01:23:46.000112Z [fd 3] recvmmsg(…) → 1 datagram (14 bytes) from 127.0.0.1:54321
//! trace 2026-12-02T01:23:46.000201Z [fd 3] sendto(…, 15 bytes, 127.0.0.1:54321)
//! ```
//!
//! The time is the wall clock, UTC, to the microsecond, so that the traces of two processes
//! can be merged in time order; `[…]` names the socket. Timeouts of the same receive in a row
//! are folded ([`Folding`]): the first is printed, the next ones counted, and one line stands
//! for them when anything else happens: `recv(…) → EAGAIN (timed out), 3 more times`, at the
//! time of the last of them.
//!
//! No I/O here: a [`Sink`], given by each program, reads the clock and writes the lines (the
//! server through its bounded stderr queue, the client straight to stderr). Off, a [`Trace`]
//! is `None` and each hook is one branch: no formatting, no clock, no allocation.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

/// How a receive that timed out reads.
pub const TIMED_OUT: &str = "EAGAIN (timed out)";

/// Where a program's trace lines go, and its clock: what [`Trace`] needs from outside.
pub trait Sink {
    /// The time now (the wall clock).
    fn now(&self) -> SystemTime;
    /// Writes one whole line, `\n` included.
    fn line(&self, line: &str);
}

/// One trace line: `trace TIME [who] call\n`, the time UTC to the microsecond.
pub fn line(at: SystemTime, who: &str, call: fmt::Arguments<'_>) -> String {
    format!(
        "trace {} [{who}] {call}\n",
        humantime::format_rfc3339_micros(at)
    )
}

/// Whether `e` is a receive timeout (`SO_RCVTIMEO` passed).
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An error as strace shows it: the errno's name and its text (`ECONNREFUSED (Connection
/// refused)`); a timeout as `EAGAIN (timed out)`.
pub fn errno(e: &io::Error) -> String {
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
pub fn family(addr: SocketAddr) -> &'static str {
    match addr {
        SocketAddr::V4(_) => "AF_INET",
        SocketAddr::V6(_) => "AF_INET6",
    }
}

/// Timeouts of one receive call counted and not printed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// The call, as its lines name it (`recv(…)`).
    pub call: &'static str,
    /// Timeouts not printed yet.
    pub more: u32,
    /// When the last of them returned: the time of the line that stands for them.
    pub last: SystemTime,
}

impl fmt::Display for Folded {
    /// `recv(…) → EAGAIN (timed out), 3 more times`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let times = if self.more == 1 { "time" } else { "times" };
        write!(f, "{} → {TIMED_OUT}, {} more {times}", self.call, self.more)
    }
}

/// What to print for a timeout, as [`Folding::timeout`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Nothing: it follows a timeout of the same call, and is counted.
    Counted,
    /// The line for the timeouts counted before (`before`, when there are any), then the
    /// timeout itself (`call → EAGAIN (timed out)`).
    Print {
        /// The timeouts counted before, to print first.
        before: Option<Folded>,
    },
}

/// The folding of timeouts in a row: a pure state machine, told each timeout and each other
/// line, that says which lines to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folding {
    folded: Option<Folded>,
}

impl Folding {
    /// A receive `call` timed out at `now`.
    pub fn timeout(&mut self, call: &'static str, now: SystemTime) -> Fold {
        match &mut self.folded {
            Some(folded) if folded.call == call => {
                folded.more = folded.more.saturating_add(1);
                folded.last = now;
                Fold::Counted
            }
            _ => {
                let before = self.flush();
                self.folded = Some(Folded {
                    call,
                    more: 0,
                    last: now,
                });
                Fold::Print { before }
            }
        }
    }

    /// Another line is about to be printed (or the socket closes): the line for the timeouts
    /// counted and not printed yet, to print first, when there are any. Folding starts over.
    pub fn flush(&mut self) -> Option<Folded> {
        self.folded.take().filter(|folded| folded.more > 0)
    }
}

/// A socket's trace: where its lines go and which socket they are about; off by default.
#[derive(Clone)]
pub struct Trace<S> {
    on: Option<Box<Tracer<S>>>,
}

#[derive(Clone)]
struct Tracer<S> {
    sink: S,
    /// The socket's name in brackets: `fd 3`, `w1 fd 4`; `-` before a socket exists.
    who: String,
    folding: Cell<Folding>,
}

impl<S> Default for Trace<S> {
    fn default() -> Self {
        Trace::off()
    }
}

impl<S> Trace<S> {
    /// No trace: every hook is a no-op.
    pub fn off() -> Trace<S> {
        Trace { on: None }
    }

    /// Whether lines are printed.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }
}

impl<S: Sink> Trace<S> {
    /// Trace lines to `sink`, about the socket named `who`.
    pub fn to(sink: S, who: String) -> Trace<S> {
        Trace {
            on: Some(Box::new(Tracer {
                sink,
                who,
                folding: Cell::new(Folding::default()),
            })),
        }
    }

    /// The trace of another socket, to the same sink, named by `who` (called only when on).
    pub fn renamed(&self, who: impl FnOnce() -> String) -> Trace<S>
    where
        S: Clone,
    {
        match &self.on {
            Some(tracer) => Trace::to(tracer.sink.clone(), who()),
            None => Trace::off(),
        }
    }

    /// Prints `call` (the call and its result) now.
    #[inline]
    pub fn call(&self, call: fmt::Arguments<'_>) {
        if let Some(tracer) = &self.on {
            tracer.print(tracer.sink.now(), call);
        }
    }

    /// The time a send is made, read before the call when the trace is on (`None`, and no
    /// clock read, when off).
    #[inline]
    pub fn clock(&self) -> Option<SystemTime> {
        self.on.as_ref().map(|tracer| tracer.sink.now())
    }

    /// Prints the send `call`, made at `made` (from [`clock`](Self::clock)), with the error
    /// when `result` is one.
    #[inline]
    pub fn sent<T>(
        &self,
        made: Option<SystemTime>,
        call: fmt::Arguments<'_>,
        result: &io::Result<T>,
    ) {
        if let (Some(tracer), Some(made)) = (&self.on, made) {
            tracer.result(made, call, result);
        }
    }

    /// Prints a `sendmmsg` of `n` datagrams made at `made`: `sendmmsg(…, 3 datagrams) → 3`,
    /// or with the error when `result` is one.
    pub fn sent_batch(&self, made: Option<SystemTime>, n: usize, result: &io::Result<usize>) {
        if self.on.is_none() {
            return;
        }
        let plural = if n == 1 { "" } else { "s" };
        match result {
            Ok(count) => self.sent(
                made,
                format_args!("sendmmsg(…, {n} datagram{plural}) → {count}"),
                result,
            ),
            Err(_) => self.sent(
                made,
                format_args!("sendmmsg(…, {n} datagram{plural})"),
                result,
            ),
        }
    }

    /// Prints `call`, with the error when `result` is one: for calls that return nothing
    /// worth showing (`bind`, `setsockopt`).
    #[inline]
    pub fn done<T>(&self, call: fmt::Arguments<'_>, result: &io::Result<T>) {
        if let Some(tracer) = &self.on {
            tracer.result(tracer.sink.now(), call, result);
        }
    }

    /// Prints a receive `call` that failed with `e`; a timeout right after another of the same
    /// call is counted instead, and printed with the next line.
    pub fn failed(&self, call: &'static str, e: &io::Error) {
        let Some(tracer) = &self.on else { return };
        let now = tracer.sink.now();
        if !timed_out(e) {
            tracer.print(now, format_args!("{call} → {}", errno(e)));
            return;
        }
        let mut folding = tracer.folding.get();
        let fold = folding.timeout(call, now);
        tracer.folding.set(folding);
        if let Fold::Print { before } = fold {
            if let Some(before) = before {
                tracer.write(before.last, format_args!("{before}"));
            }
            tracer.write(now, format_args!("{call} → {TIMED_OUT}"));
        }
    }
}

impl<S: Sink> Tracer<S> {
    fn result<T>(&self, at: SystemTime, call: fmt::Arguments<'_>, result: &io::Result<T>) {
        match result {
            Ok(_) => self.print(at, call),
            Err(e) => self.print(at, format_args!("{call} → {}", errno(e))),
        }
    }

    fn print(&self, at: SystemTime, call: fmt::Arguments<'_>) {
        let mut folding = self.folding.get();
        let before = folding.flush();
        self.folding.set(folding);
        if let Some(before) = before {
            self.write(before.last, format_args!("{before}"));
        }
        self.write(at, call);
    }

    fn write(&self, at: SystemTime, call: fmt::Arguments<'_>) {
        self.sink.line(&line(at, &self.who, call));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    /// 2026-12-02T01:23:45.123456Z plus `micros`.
    fn at(micros: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_174_625_123_456 + micros)
    }

    /// A sink that keeps its lines, on a clock that ticks one microsecond per reading.
    #[derive(Clone, Default)]
    struct Kept {
        lines: Rc<RefCell<Vec<String>>>,
        ticks: Rc<Cell<u64>>,
    }

    impl Sink for Kept {
        fn now(&self) -> SystemTime {
            let tick = self.ticks.get();
            self.ticks.set(tick + 1);
            at(tick)
        }
        fn line(&self, line: &str) {
            self.lines.borrow_mut().push(line.to_owned());
        }
    }

    #[test]
    fn a_line_has_the_time_to_the_microsecond_in_utc() {
        assert_eq!(
            line(at(0), "fd 3", format_args!("bind({})", "127.0.0.1:1")),
            "trace 2026-12-02T01:23:45.123456Z [fd 3] bind(127.0.0.1:1)\n"
        );
        assert_eq!(
            line(SystemTime::UNIX_EPOCH, "-", format_args!("x")),
            "trace 1970-01-01T00:00:00.000000Z [-] x\n"
        );
    }

    #[test]
    fn errors_read_as_strace_shows_them() {
        assert_eq!(
            errno(&io::Error::from(io::ErrorKind::WouldBlock)),
            TIMED_OUT
        );
        assert_eq!(errno(&io::Error::from(io::ErrorKind::TimedOut)), TIMED_OUT);
        let refused = io::Error::from_raw_os_error(111);
        if cfg!(target_os = "linux") {
            assert_eq!(errno(&refused), "ECONNREFUSED (Connection refused)");
            assert_eq!(
                errno(&io::Error::from_raw_os_error(13)),
                "EACCES (Permission denied)"
            );
        }
        assert_eq!(errno(&io::Error::other("no errno")), "no errno");
    }

    #[test]
    fn families_are_named_as_socket_is_asked() {
        assert_eq!(family("127.0.0.1:1".parse().unwrap()), "AF_INET");
        assert_eq!(family("[::1]:1".parse().unwrap()), "AF_INET6");
    }

    #[test]
    fn folding_prints_the_first_timeout_and_counts_the_next_ones() {
        let mut folding = Folding::default();
        assert_eq!(folding.flush(), None);
        assert_eq!(
            folding.timeout("recv(…)", at(0)),
            Fold::Print { before: None }
        );
        assert_eq!(folding.timeout("recv(…)", at(1)), Fold::Counted);
        assert_eq!(folding.timeout("recv(…)", at(2)), Fold::Counted);
        // Another call's timeout: the ones counted first, then it.
        let counted = Folded {
            call: "recv(…)",
            more: 2,
            last: at(2),
        };
        assert_eq!(
            folding.timeout("recvfrom(…)", at(3)),
            Fold::Print {
                before: Some(counted)
            }
        );
        assert_eq!(
            counted.to_string(),
            "recv(…) → EAGAIN (timed out), 2 more times"
        );
        // A single timeout leaves nothing to flush; one counted reads "1 more time".
        assert_eq!(folding.flush(), None);
        folding.timeout("recv(…)", at(4));
        folding.timeout("recv(…)", at(5));
        let one = folding.flush();
        assert_eq!(
            one.map(|f| f.to_string()).as_deref(),
            Some("recv(…) → EAGAIN (timed out), 1 more time")
        );
        assert_eq!(one.map(|f| f.last), Some(at(5)));
        assert_eq!(folding.flush(), None);
    }

    #[test]
    fn consecutive_timeouts_are_folded_into_one_line_before_the_next_call() {
        let kept = Kept::default();
        let trace = Trace::to(kept.clone(), "-".to_owned()).renamed(|| "w1 fd 4".to_owned());
        let timeout = io::Error::from(io::ErrorKind::WouldBlock);
        for _ in 0..4 {
            trace.failed("recvmmsg(…)", &timeout);
        }
        trace.call(format_args!("recvmmsg(…) → 1 datagram"));
        trace.failed("recvmmsg(…)", &timeout);
        trace.failed("recvmmsg(…)", &timeout);
        trace.done(
            format_args!("bind(127.0.0.1:1)"),
            &Err::<(), _>(io::Error::other("refused")),
        );
        let made = trace.clock();
        trace.sent(made, format_args!("send(…, 3 bytes)"), &Ok(3));
        assert_eq!(
            *kept.lines.borrow(),
            [
                "trace 2026-12-02T01:23:45.123456Z [w1 fd 4] recvmmsg(…) → EAGAIN (timed out)\n",
                "trace 2026-12-02T01:23:45.123459Z [w1 fd 4] recvmmsg(…) → EAGAIN (timed out), 3 more times\n",
                "trace 2026-12-02T01:23:45.123460Z [w1 fd 4] recvmmsg(…) → 1 datagram\n",
                "trace 2026-12-02T01:23:45.123461Z [w1 fd 4] recvmmsg(…) → EAGAIN (timed out)\n",
                "trace 2026-12-02T01:23:45.123462Z [w1 fd 4] recvmmsg(…) → EAGAIN (timed out), 1 more time\n",
                "trace 2026-12-02T01:23:45.123463Z [w1 fd 4] bind(127.0.0.1:1) → refused\n",
                "trace 2026-12-02T01:23:45.123464Z [w1 fd 4] send(…, 3 bytes)\n",
            ]
        );
    }

    #[test]
    fn an_off_trace_reads_no_clock_and_prints_nothing() {
        let off = Trace::<Kept>::off();
        assert!(!off.is_on());
        assert!(!off.renamed(|| unreachable!("not named when off")).is_on());
        assert_eq!(off.clock(), None);
        off.call(format_args!("close()"));
        off.failed("recv(…)", &io::Error::from(io::ErrorKind::WouldBlock));
    }
}
