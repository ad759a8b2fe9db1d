//! The resend schedule: exponential backoff with a cap and jitter (RFC 8085 §3.1.3).

use std::time::Duration;

/// How long to wait after each attempt: `timeout`, then twice as long each attempt, never more
/// than [`Backoff::CAP`] × `timeout`, plus 0–25% jitter so that many clients that lost the same
/// server do not all resend at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first attempt.
    pub timeout: Duration,
    /// How many resends after the first attempt.
    pub retries: u32,
}

impl Backoff {
    /// The longest wait, as a multiple of the timeout.
    pub const CAP: u32 = 8;

    /// Largest jitter, as a fraction of the wait.
    pub const MAX_JITTER: f64 = 0.25;

    /// How many datagrams a message that is never answered sends: the first and every resend.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The wait after attempt `attempt` (0 for the first send), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX).min(Self::CAP);
        self.timeout.saturating_mul(factor)
    }

    /// The wait after attempt `attempt` with `jitter` (clamped to 0–[`Backoff::MAX_JITTER`])
    /// added as a fraction of the base wait.
    pub fn wait(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.base(attempt);
        base.saturating_add(base.mul_f64(jitter.clamp(0.0, Self::MAX_JITTER)))
    }

    /// The shortest time a message that is never answered can take: every wait without jitter.
    pub fn minimum_total(&self) -> Duration {
        (0..self.attempts())
            .map(|attempt| self.base(attempt))
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_then_caps_at_eight_timeouts() {
        let backoff = Backoff {
            timeout: SECOND,
            retries: 6,
        };
        let waits: Vec<u64> = (0..backoff.attempts())
            .map(|a| backoff.base(a).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8, 8]);
        assert_eq!(backoff.minimum_total(), SECOND * 39);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let backoff = Backoff {
            timeout: SECOND,
            retries: 2,
        };
        assert_eq!(backoff.wait(1, 0.0), 2 * SECOND);
        assert_eq!(backoff.wait(1, 0.25), Duration::from_millis(2_500));
        assert_eq!(backoff.wait(1, 7.0), Duration::from_millis(2_500));
        assert_eq!(backoff.wait(1, -1.0), 2 * SECOND);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let backoff = Backoff {
            timeout: Duration::MAX,
            retries: u32::MAX,
        };
        assert_eq!(backoff.base(u32::MAX), Duration::MAX);
        assert_eq!(backoff.wait(u32::MAX, Backoff::MAX_JITTER), Duration::MAX);
        assert_eq!(backoff.attempts(), u32::MAX);
    }
}
