//! What stops a run before its input is done: a signal, or `--deadline` passing. [`Stop`] is
//! checked while the client waits (a reply is awaited in slices of at most [`SLICE`]), so a run
//! stops within a slice of either, with its books intact for the summary.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest the client blocks without looking at [`Stop`]: short enough that Ctrl-C feels
/// immediate, long enough that waiting costs about ten system calls a second.
pub const SLICE: Duration = Duration::from_millis(100);

/// A signal that stops the run. The discriminants are the signals' numbers, the same on every
/// Unix (POSIX `kill -s` numbering); the exit code is 128 plus the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: the terminal went away.
    Hangup = 1,
    /// SIGINT: Ctrl-C.
    Interrupt = 2,
    /// SIGTERM: asked to stop (`kill`, a service manager).
    Terminate = 15,
}

impl Signal {
    /// The signal's number: 1, 2 or 15.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The signal's name: `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "SIGHUP",
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    fn from_number(number: usize) -> Option<Signal> {
        [Signal::Hangup, Signal::Interrupt, Signal::Terminate]
            .into_iter()
            .find(|signal| *signal as usize == number)
    }
}

/// Why a run, or the wait for one message's answer, stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// A signal arrived.
    Signal(Signal),
    /// `--deadline` passed.
    DeadlinePassed {
        /// The `--deadline` given.
        after: Duration,
    },
}

impl fmt::Display for Interruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interruption::Signal(signal) => write!(f, "interrupted by {}", signal.name()),
            Interruption::DeadlinePassed { after } => write!(
                f,
                "the --deadline of {} passed before every message was answered; raise it if \
                 the server is slow",
                humantime::format_duration(*after)
            ),
        }
    }
}

/// When a run must stop early: a flag that signals set, and an optional deadline.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// 0, or the number of the first [`Signal`] received.
    signal: Arc<AtomicUsize>,
    /// The deadline, and the `--deadline` it came from; `at` is `None` when it lies beyond what
    /// the clock can represent (it never passes).
    deadline: Option<(Option<Instant>, Duration)>,
}

impl Stop {
    /// A run that stops only when it is done (until signals are listened for).
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stops the run `after` from now.
    pub fn with_deadline(mut self, after: Duration) -> Stop {
        self.deadline = Some((Instant::now().checked_add(after), after));
        self
    }

    /// Makes SIGINT, SIGTERM and SIGHUP (Ctrl-C only, on Windows) stop the run instead of
    /// ending the process. Fails when the system refuses the handlers; the run then ends as
    /// the system's default action says.
    pub fn listen_for_signals(&self) -> io::Result<()> {
        crate::sys::listen_for_signals(&self.signal)
    }

    /// Stops the run as if `signal` had arrived (for embedding programs and tests).
    pub fn interrupt(&self, signal: Signal) {
        let _ =
            self.signal
                .compare_exchange(0, signal as usize, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why the run must stop now, if it must.
    pub fn check(&self) -> Option<Interruption> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<Interruption> {
        if let Some(signal) = Signal::from_number(self.signal.load(Ordering::SeqCst)) {
            return Some(Interruption::Signal(signal));
        }
        match self.deadline {
            Some((Some(at), after)) if now >= at => Some(Interruption::DeadlinePassed { after }),
            _ => None,
        }
    }

    /// How long the next slice of a wait that ends at `until` (`None`: no end of its own) may
    /// block: at most [`SLICE`], never past `until` or the deadline. Zero when `until` has
    /// passed; an [`Interruption`] when the run must stop.
    pub(crate) fn slice(&self, until: Option<Instant>) -> Result<Duration, Interruption> {
        let now = Instant::now();
        if let Some(interruption) = self.check_at(now) {
            return Err(interruption);
        }
        let deadline = self.deadline.and_then(|(at, _)| at);
        Ok([until, deadline]
            .into_iter()
            .flatten()
            .map(|end| end.saturating_duration_since(now))
            .fold(SLICE, Duration::min))
    }

    /// Sleeps until `until` (`None`: never, so until interrupted), in slices.
    pub(crate) fn sleep_until(&self, until: Option<Instant>) -> Result<(), Interruption> {
        loop {
            let slice = self.slice(until)?;
            if slice.is_zero() {
                return Ok(());
            }
            std::thread::sleep(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_kept() {
        let stop = Stop::new();
        assert_eq!(stop.check(), None);
        stop.interrupt(Signal::Terminate);
        stop.interrupt(Signal::Interrupt);
        assert_eq!(stop.check(), Some(Interruption::Signal(Signal::Terminate)));
        assert_eq!(Signal::Terminate.number(), 15);
    }

    #[test]
    fn a_deadline_past_the_clock_never_passes() {
        let stop = Stop::new().with_deadline(Duration::MAX);
        assert_eq!(stop.check(), None);
        assert_eq!(stop.slice(None), Ok(SLICE));
    }

    #[test]
    fn slices_end_at_the_deadline_and_then_stop() {
        let stop = Stop::new().with_deadline(Duration::ZERO);
        assert_eq!(
            stop.slice(None),
            Err(Interruption::DeadlinePassed {
                after: Duration::ZERO
            })
        );
        let now = Instant::now();
        assert_eq!(Stop::new().slice(Some(now)), Ok(Duration::ZERO));
    }
}
