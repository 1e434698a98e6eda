//! Injected time, so limiters and token checks are testable without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Current Unix time in whole seconds.
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `unix_secs`.
    pub fn at(unix_secs: u64) -> Self {
        Self {
            nanos: AtomicU64::new(unix_secs.saturating_mul(1_000_000_000)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(by.as_nanos().min(u64::MAX as u128) as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.unix_secs(), 1_000);
        c.advance(Duration::from_millis(1_500));
        assert_eq!(c.unix_secs(), 1_001);
        assert_eq!(
            c.now().duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_001_500)
        );
    }
}
