//! Slow intervals: an interval whose settlement and journal commit together take longer than
//! [`SLOW_INTERVAL_WORK`] answers all its orders that much late, since an order is answered
//! only once its interval is durable. The usual cause is the disk: one `fdatasync` that takes
//! 50 ms instead of 1 (seen on this project's shared machines, `docs/PERFORMANCE.md`).
//!
//! The interval loop tells [`SlowIntervals`] how long each interval took; it says when to log.
//! The first slow interval is logged at once, the next ones are counted and logged together
//! at most once per [`SLOW_LOG_EVERY`], so that a slow disk gives a line every few seconds,
//! not one per interval. [`FailedIntervals`] does the same for intervals that were not
//! committed.

use std::time::{Duration, Instant};

/// An interval whose settlement plus commit takes longer than this is slow: the order
/// latency target is one interval plus 20 ms (`docs/PERFORMANCE.md`).
pub const SLOW_INTERVAL_WORK: Duration = Duration::from_millis(20);
/// At most one log line per this long.
pub const SLOW_LOG_EVERY: Duration = Duration::from_secs(10);

/// A duration in whole microseconds, as the interval log lines give them.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// How long one interval's work took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalWork {
    /// The engine's settlement.
    pub settle: Duration,
    /// The journal commit that made the interval durable.
    pub commit: Duration,
}

impl IntervalWork {
    /// Settlement and commit together.
    pub fn total(&self) -> Duration {
        self.settle.saturating_add(self.commit)
    }
}

/// What to log: slow intervals since the last line, and the slowest of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowReport {
    /// Slow intervals counted in this report.
    pub intervals: u64,
    /// The slowest of them.
    pub slowest: IntervalWork,
}

/// Counts slow intervals and decides when to log them.
#[derive(Debug, Default)]
pub struct SlowIntervals {
    pending: Option<SlowReport>,
    last_logged: Option<Instant>,
}

impl SlowIntervals {
    /// Records one interval's work at `now`; returns a report to log, if one is due: when
    /// slow intervals are pending and nothing was logged in the last [`SLOW_LOG_EVERY`].
    /// Pending intervals are reported with the next interval after that, slow or not.
    pub fn record(&mut self, work: IntervalWork, now: Instant) -> Option<SlowReport> {
        if work.total() > SLOW_INTERVAL_WORK {
            let report = self.pending.get_or_insert(SlowReport { intervals: 0, slowest: work });
            report.intervals = report.intervals.saturating_add(1);
            if work.total() > report.slowest.total() {
                report.slowest = work;
            }
        }
        let due =
            self.last_logged.is_none_or(|at| now.saturating_duration_since(at) >= SLOW_LOG_EVERY);
        if due && let Some(report) = self.pending.take() {
            self.last_logged = Some(now);
            return Some(report);
        }
        None
    }
}

/// Logs `report` as a warning, with the fields `intervals`, `slowest_settle_micros` and
/// `slowest_commit_micros` (which `pt bench` reads back from the master's log).
pub fn log(report: &SlowReport) {
    tracing::warn!(
        intervals = report.intervals,
        slowest_settle_micros = micros(report.slowest.settle),
        slowest_commit_micros = micros(report.slowest.commit),
        "slow intervals: settling and committing took over {} ms, so their orders were \
         answered that much late (a slow disk, or a machine short of CPU)",
        SLOW_INTERVAL_WORK.as_millis()
    );
}

/// Counts intervals that were not committed (a journal that refuses writes fails every one of
/// them until a restart) and decides when to log them: the first at once, the next ones
/// together at most once per [`SLOW_LOG_EVERY`], so that a halted journal gives a line every
/// few seconds, not one per interval.
#[derive(Debug, Default)]
pub struct FailedIntervals {
    pending: u64,
    last_logged: Option<Instant>,
}

impl FailedIntervals {
    /// Records one failed interval at `now`; returns how many failed intervals to log, if a
    /// line is due.
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        self.pending = self.pending.saturating_add(1);
        let due =
            self.last_logged.is_none_or(|at| now.saturating_duration_since(at) >= SLOW_LOG_EVERY);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.pending))
    }

    /// An interval was committed at `now`: returns the failed intervals not logged yet, so that
    /// the last of a run of failures is logged too.
    pub fn committed(&mut self, now: Instant) -> Option<u64> {
        if self.pending == 0 {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_intervals_are_logged_at_once_then_at_most_every_ten_seconds() {
        let mut failed = FailedIntervals::default();
        let start = Instant::now();
        assert_eq!(failed.record(start), Some(1));
        // 199 more within the window (one every 50 ms): counted, not logged.
        for i in 1..200u64 {
            assert_eq!(failed.record(start + Duration::from_millis(i * 50)), None);
        }
        // The next one after the window reports them with itself.
        assert_eq!(failed.record(start + SLOW_LOG_EVERY), Some(200));
        assert_eq!(failed.record(start + SLOW_LOG_EVERY + Duration::from_secs(1)), None);
        // A committed interval reports the failures still pending, once.
        let later = start + SLOW_LOG_EVERY + Duration::from_secs(2);
        assert_eq!(failed.committed(later), Some(1));
        assert_eq!(failed.committed(later), None);
    }

    fn work(settle_ms: u64, commit_ms: u64) -> IntervalWork {
        IntervalWork {
            settle: Duration::from_millis(settle_ms),
            commit: Duration::from_millis(commit_ms),
        }
    }

    #[test]
    fn fast_intervals_are_never_reported() {
        let mut slow = SlowIntervals::default();
        let start = Instant::now();
        for i in 0..1_000u64 {
            // 20 ms exactly is not slow: the threshold is "longer than".
            let at = start + Duration::from_millis(50 * i);
            assert_eq!(slow.record(work(1, 19), at), None);
            assert_eq!(slow.record(work(0, 20), at), None);
        }
    }

    #[test]
    fn the_first_slow_interval_is_reported_at_once_then_at_most_every_ten_seconds() {
        let mut slow = SlowIntervals::default();
        let start = Instant::now();
        assert_eq!(
            slow.record(work(1, 48), start),
            Some(SlowReport { intervals: 1, slowest: work(1, 48) })
        );
        // Three more within the window: counted, not logged; the slowest is kept.
        let mut at = start;
        for (settle, commit) in [(2, 30), (1, 60), (5, 25)] {
            at += Duration::from_secs(1);
            assert_eq!(slow.record(work(settle, commit), at), None);
        }
        // A fast interval before the window ends reports nothing either.
        assert_eq!(slow.record(work(0, 1), start + Duration::from_millis(9_999)), None);
        // The first interval after the window, fast or not, reports what is pending.
        assert_eq!(
            slow.record(work(0, 1), start + SLOW_LOG_EVERY),
            Some(SlowReport { intervals: 3, slowest: work(1, 60) })
        );
        // Nothing pending: nothing to report, however long after.
        assert_eq!(slow.record(work(0, 1), start + SLOW_LOG_EVERY * 5), None);
        // A new slow interval long after the last line is reported at once.
        let later = start + SLOW_LOG_EVERY * 6;
        assert_eq!(
            slow.record(work(25, 0), later),
            Some(SlowReport { intervals: 1, slowest: work(25, 0) })
        );
    }
}
