//! [`Rtts`]: round-trip times kept in an HdrHistogram, constant memory however long the run,
//! with the exact min, max, mean and deviation that ping(8) prints beside its percentiles.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest RTT kept as it is: an hour, in nanoseconds. Longer ones are recorded as an hour
/// (no request waits that long: `--timeout` is at most a year, but a reply that late is lost).
const MAX_RTT_NS: u64 = 3_600_000_000_000;

/// Significant digits the histogram keeps: 3, so any percentile is within 0.1% of the truth.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Round-trip times: percentiles from an HdrHistogram (nanoseconds, 3 significant digits),
/// min, max, mean and mean deviation exact.
#[derive(Clone)]
pub struct Rtts {
    histogram: Option<Histogram<u64>>,
    count: u64,
    min: Duration,
    max: Duration,
    /// Sum of the samples in seconds, and of their squares, for the mean and ping's `mdev`.
    sum: f64,
    sum_squares: f64,
}

impl Default for Rtts {
    fn default() -> Self {
        Rtts::new()
    }
}

impl Rtts {
    /// No samples yet.
    pub fn new() -> Rtts {
        Rtts {
            // The bounds are constants the crate accepts; `None` only if it ever refused them,
            // and then only the percentiles are missing.
            histogram: Histogram::new_with_bounds(1, MAX_RTT_NS, SIGNIFICANT_DIGITS).ok(),
            count: 0,
            min: Duration::MAX,
            max: Duration::ZERO,
            sum: 0.0,
            sum_squares: 0.0,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, rtt: Duration) {
        let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        if let Some(histogram) = &mut self.histogram {
            histogram.saturating_record(ns.clamp(1, MAX_RTT_NS));
        }
        self.count += 1;
        self.min = self.min.min(rtt);
        self.max = self.max.max(rtt);
        let s = rtt.as_secs_f64();
        self.sum += s;
        self.sum_squares += s * s;
    }

    /// How many samples.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest sample.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest sample.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then_some(self.max)
    }

    /// The mean.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| secs(self.sum / self.count as f64))
    }

    /// The mean deviation as ping(8) prints it (`mdev`): the standard deviation,
    /// sqrt(mean(x²) − mean(x)²).
    pub fn mdev(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            let mean = self.sum / n;
            secs((self.sum_squares / n - mean * mean).max(0.0).sqrt())
        })
    }

    /// The `percentile`th percentile (0-100), within 0.1%.
    pub fn percentile(&self, percentile: f64) -> Option<Duration> {
        let histogram = self.histogram.as_ref()?;
        (self.count > 0).then(|| {
            let ns = histogram.value_at_quantile(percentile / 100.0);
            // The histogram's bucket value can exceed the largest sample by its resolution.
            Duration::from_nanos(ns).clamp(self.min, self.max)
        })
    }
}

/// `s` seconds as a duration, saturating (a mean of absurd samples must not panic).
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// Two sets of samples are the same when they have the same count and extremes (what the
/// summaries show of them); the histograms are not compared.
impl PartialEq for Rtts {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.min(), self.max()) == (other.count, other.min(), other.max())
    }
}

impl Eq for Rtts {}

impl fmt::Debug for Rtts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtts")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram_and_extremes_are_exact() {
        let mut rtts = Rtts::new();
        assert_eq!((rtts.min(), rtts.percentile(50.0)), (None, None));
        for us in 1..=1_000 {
            rtts.record(Duration::from_micros(us));
        }
        assert_eq!(rtts.len(), 1_000);
        assert_eq!(rtts.min(), Some(Duration::from_micros(1)));
        assert_eq!(rtts.max(), Some(Duration::from_micros(1_000)));
        let p50 = rtts.percentile(50.0).map(|d| d.as_secs_f64() * 1e6);
        assert!(p50.is_some_and(|p| (p - 500.0).abs() < 1.0), "{p50:?}");
        let p99 = rtts.percentile(99.0).map(|d| d.as_secs_f64() * 1e6);
        assert!(p99.is_some_and(|p| (p - 990.0).abs() < 1.5), "{p99:?}");
        let mean = rtts.mean().map(|d| d.as_secs_f64() * 1e6);
        assert!(mean.is_some_and(|m| (m - 500.5).abs() < 0.01), "{mean:?}");
        // The standard deviation of 1..=1000 is sqrt((1000² − 1)/12) ≈ 288.67.
        let mdev = rtts.mdev().map(|d| d.as_secs_f64() * 1e6);
        assert!(mdev.is_some_and(|m| (m - 288.67).abs() < 0.01), "{mdev:?}");
    }

    #[test]
    fn extreme_samples_are_kept_without_panicking() {
        let mut rtts = Rtts::new();
        rtts.record(Duration::ZERO);
        rtts.record(Duration::MAX);
        assert_eq!(rtts.len(), 2);
        assert_eq!(rtts.max(), Some(Duration::MAX));
        assert!(rtts.percentile(100.0).is_some());
    }
}
