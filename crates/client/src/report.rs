//! What happened to the messages of one run: the books behind the summary line and the exit code.

use std::fmt;
use std::time::Duration;

use crate::{Exchange, Outcome, Rtts};

/// What happened to the messages of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages sent (each counted once, however often it was resent).
    pub sent: u64,
    /// Datagrams sent, resends included.
    pub datagrams: u64,
    /// Messages answered with a reply.
    pub answered: u64,
    /// Messages that needed more than one datagram.
    pub retried: u64,
    /// Messages that got no answer after every attempt.
    pub lost: u64,
    /// Messages sent whose wait was cut short by a signal or `--deadline`: neither answered
    /// nor lost.
    pub interrupted: u64,
    /// Answers dropped because they answered no outstanding request (duplicates, late or
    /// injected answers).
    pub duplicates: u64,
    /// Messages answered with an error envelope.
    pub server_errors: u64,
    /// Replies longer than `--buffer`, cut and reported.
    pub truncated: u64,
    /// Round-trip times of the messages answered at the first attempt (Karn's rule).
    pub rtts: Rtts,
}

impl Report {
    /// Adds one message's exchange.
    pub fn record(&mut self, exchange: &Exchange) {
        self.sent += 1;
        self.datagrams += u64::from(exchange.attempts);
        self.duplicates += exchange.dropped;
        if exchange.attempts > 1 {
            self.retried += 1;
        }
        match &exchange.outcome {
            Outcome::Reply { text, len, .. } => {
                self.answered += 1;
                if *len > text.len() {
                    self.truncated += 1;
                }
            }
            Outcome::ServerError { .. } => self.server_errors += 1,
            Outcome::NoReply(_) => self.lost += 1,
            Outcome::Interrupted(_) => self.interrupted += 1,
        }
        if let Some(rtt) = exchange.rtt {
            self.rtts.record(rtt);
        }
    }

    /// Whether the summary is worth a line even without `-v`: something was resent, lost or
    /// cut short.
    pub fn eventful(&self) -> bool {
        self.retried > 0 || self.lost > 0 || self.interrupted > 0
    }
}

/// `3 messages sent in 4 datagrams, answered 2, retried 1, lost 1, duplicates dropped 0, rtt min/median/max 0.081/0.090/0.112 ms`,
/// with `interrupted 1` after `lost` when a wait was cut short, and `server errors` and
/// `truncated` when there were any.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} message{} sent in {} datagram{}, answered {}, retried {}, lost {}",
            self.sent,
            plural(self.sent),
            self.datagrams,
            plural(self.datagrams),
            self.answered,
            self.retried,
            self.lost
        )?;
        if self.interrupted > 0 {
            write!(f, ", interrupted {}", self.interrupted)?;
        }
        write!(f, ", duplicates dropped {}", self.duplicates)?;
        if self.server_errors > 0 {
            write!(f, ", server errors {}", self.server_errors)?;
        }
        if self.truncated > 0 {
            write!(f, ", truncated {}", self.truncated)?;
        }
        let rtts = &self.rtts;
        if let (Some(min), Some(median), Some(max)) =
            (rtts.min(), rtts.percentile(50.0), rtts.max())
        {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            write!(
                f,
                ", rtt min/median/max {:.3}/{:.3}/{:.3} ms",
                ms(min),
                ms(median),
                ms(max)
            )?;
        }
        Ok(())
    }
}
