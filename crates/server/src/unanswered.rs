//! [`Unanswered`]: the warnings about answers the system would not send, throttled.
//!
//! An answer fails when its peer cannot be reached (no route, a link-local peer on a gone
//! interface, a firewall's local reject): a flood from such a peer, spoofed or not, would
//! otherwise write one warning per datagram. Like the rate limit's report, the first failure
//! is said at once, and the ones after it at most once per [`Unanswered::INTERVAL`], as one line
//! with their count (`--quiet` or not: these go to the log on stderr). Pure: every method
//! takes `now`.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The throttle of one worker's warnings about failed answers.
#[derive(Debug, Default)]
pub struct Unanswered {
    /// When a line was last given.
    said: Option<Instant>,
    /// Failures since then, not yet said.
    pending: u64,
    /// The last of them: its peer and the system's error code.
    last: Option<(Option<SocketAddr>, io::ErrorKind, Option<i32>)>,
}

impl Unanswered {
    /// Least time between two lines.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// Notes that the answer to `peer` failed with `error`; returns the line to say now (the
    /// first failure after a quiet interval), or `None` (it is counted for the next report).
    pub fn failed(
        &mut self,
        peer: Option<SocketAddr>,
        error: &io::Error,
        now: Instant,
    ) -> Option<String> {
        let quiet = self
            .said
            .is_none_or(|said| now.saturating_duration_since(said) >= Self::INTERVAL);
        if quiet && self.pending == 0 {
            self.said = Some(now);
            return Some(format!(
                "{}: {error}{}",
                whom(peer),
                hint(error.kind(), error.raw_os_error())
            ));
        }
        self.pending += 1;
        self.last = Some((peer, error.kind(), error.raw_os_error()));
        None
    }

    /// The line that sums up the failures not yet said, once [`INTERVAL`](Self::INTERVAL)
    /// has passed since the last line. Asked after every batch, so the usual answer (nothing
    /// failed) is given inline.
    #[inline]
    pub fn take_report(&mut self, now: Instant) -> Option<String> {
        if self.pending == 0 {
            return None;
        }
        self.report(now)
    }

    fn report(&mut self, now: Instant) -> Option<String> {
        if self
            .said
            .is_some_and(|said| now.saturating_duration_since(said) < Self::INTERVAL)
        {
            return None;
        }
        let mut line = String::new();
        let plural = if self.pending == 1 { "" } else { "s" };
        let _ = write!(
            line,
            "{} more answer{plural} could not be sent",
            self.pending
        );
        if let Some((peer, kind, code)) = self.last {
            let error = match code {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::from(kind),
            };
            let _ = write!(line, " (the last: {}: {error})", whom(peer));
        }
        self.pending = 0;
        self.last = None;
        self.said = Some(now);
        Some(line)
    }
}

/// `could not answer 192.0.2.7:40000`.
fn whom(peer: Option<SocketAddr>) -> String {
    match peer {
        Some(peer) => format!("could not answer {peer}"),
        None => "could not send an answer".to_owned(),
    }
}

/// What to try, for the failures with a usual cause.
fn hint(kind: io::ErrorKind, code: Option<i32>) -> &'static str {
    match (kind, code) {
        (io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable, _) => {
            " (no route to the peer from this host: check `ip route`); further failures are \
             summed up at most once a second"
        }
        (io::ErrorKind::PermissionDenied, _) => {
            " (a local firewall rule refuses it, or the peer is a broadcast address); further \
             failures are summed up at most once a second"
        }
        _ => "; further failures are summed up at most once a second",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([192, 0, 2, last], 40_000)))
    }

    fn unreachable() -> io::Error {
        io::Error::from(io::ErrorKind::NetworkUnreachable)
    }

    #[test]
    fn the_first_failure_is_said_at_once_the_rest_once_a_second() {
        let mut throttle = Unanswered::default();
        let start = Instant::now();
        let first = throttle.failed(peer(1), &unreachable(), start);
        assert!(
            first.as_deref().is_some_and(|line| line
                .starts_with("could not answer 192.0.2.1:40000: ")
                && line.contains("ip route")),
            "{first:?}"
        );
        for i in 0..1000 {
            let now = start + Duration::from_micros(i);
            assert_eq!(throttle.failed(peer(2), &unreachable(), now), None);
            assert_eq!(throttle.take_report(now), None);
        }
        let later = start + Unanswered::INTERVAL;
        let report = throttle.take_report(later);
        assert!(
            report.as_deref().is_some_and(|line| line.starts_with(
                "1000 more answers could not be sent (the last: could not answer 192.0.2.2:40000: "
            )),
            "{report:?}"
        );
        // Nothing pending: nothing to say, and the next failure waits for its interval.
        assert_eq!(throttle.take_report(later + Unanswered::INTERVAL), None);
        assert_eq!(throttle.failed(peer(3), &unreachable(), later), None);
        assert!(throttle.take_report(later + Unanswered::INTERVAL).is_some());
    }

    #[test]
    fn after_a_quiet_interval_a_failure_is_said_at_once_again() {
        let mut throttle = Unanswered::default();
        let start = Instant::now();
        assert!(throttle.failed(peer(1), &unreachable(), start).is_some());
        let quiet = start + Unanswered::INTERVAL * 5;
        assert!(throttle.failed(peer(1), &unreachable(), quiet).is_some());
    }
}
