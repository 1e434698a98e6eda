//! Generic cell rate algorithm for requests per minute.
//!
//! State is one number, the theoretical arrival time (TAT). For `rpm = N` the emission interval
//! is `T = 60 s / N` and the tolerance `τ = N·T` (= 60 s up to rounding): a request at `now` is
//! admitted iff `max(TAT, now) + T − now ≤ τ`, which admits a burst of N back to back and then
//! one request every T. Remaining after an admission is `⌊(τ − (TAT′ − now)) / T⌋`, so a burst
//! reports N−1 … 0. `T` is rounded down to whole nanoseconds, so the refill is faster than N per
//! minute by less than one nanosecond per request.
//!
//! When `rpm` changes, the outstanding debt `TAT − now` is rescaled from the old interval to the
//! new one, so it keeps meaning "this many requests in the current burst": an agent that used 2
//! of `rpm = 2` and is raised to `rpm = 5` has 3 left on its next request.

/// Nanoseconds in a second.
pub(crate) const SEC_NANOS: u64 = 1_000_000_000;
/// Nanoseconds in a minute.
pub(crate) const MINUTE_NANOS: u64 = 60 * SEC_NANOS;

/// GCRA state of one scope.
#[derive(Debug, Default)]
pub(crate) struct Gcra {
    /// Theoretical arrival time, Unix nanoseconds (0 = never used).
    tat: u64,
    /// Emission interval `tat` was computed with (0 = never used).
    interval: u64,
}

/// An admission computed by [`Gcra::check`], applied by [`Gcra::commit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct GcraAdmit {
    new_tat: u64,
    interval: u64,
    /// Requests left in the burst after this one.
    pub(crate) remaining: u64,
}

/// A refusal computed by [`Gcra::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcraWait {
    /// Nanoseconds until a request would be admitted.
    pub(crate) wait: u64,
    /// Unix nanoseconds at which the burst is full again.
    pub(crate) full_at: u64,
}

impl GcraAdmit {
    /// Unix nanoseconds at which the burst is full again after this admission.
    pub(crate) fn full_at(&self) -> u64 {
        self.new_tat
    }
}

impl Gcra {
    /// Emission interval and tolerance for `rpm` (≥ 1).
    fn params(rpm: u64) -> (u64, u64) {
        let interval = (MINUTE_NANOS / rpm.max(1)).max(1);
        (interval, interval.saturating_mul(rpm.max(1)))
    }

    /// The TAT rescaled to `interval` (see the module docs).
    fn tat_for(&self, interval: u64, now: u64) -> u64 {
        if self.interval == 0 || self.interval == interval || self.tat <= now {
            return self.tat;
        }
        let debt = u128::from(self.tat - now) * u128::from(interval) / u128::from(self.interval);
        now.saturating_add(u64::try_from(debt).unwrap_or(u64::MAX))
    }

    /// Would a request at `now` (Unix nanoseconds) be admitted under `rpm` (≥ 1)? `Err` holds
    /// the nanoseconds until it would be, and when the burst will be full again.
    pub(crate) fn check(&self, rpm: u64, now: u64) -> Result<GcraAdmit, GcraWait> {
        let (interval, tolerance) = Self::params(rpm);
        let tat = self.tat_for(interval, now);
        let new_tat = tat.max(now).saturating_add(interval);
        let ahead = new_tat - now;
        if ahead > tolerance {
            Err(GcraWait {
                wait: ahead - tolerance,
                full_at: tat.max(now),
            })
        } else {
            Ok(GcraAdmit {
                new_tat,
                interval,
                remaining: (tolerance - ahead) / interval,
            })
        }
    }

    /// Applies an admission.
    pub(crate) fn commit(&mut self, admit: &GcraAdmit) {
        self.tat = admit.new_tat;
        self.interval = admit.interval;
    }

    /// `true` when the burst is full (the state carries no information).
    pub(crate) fn is_idle(&self, now: u64) -> bool {
        self.tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000 * SEC_NANOS;

    fn admit(g: &mut Gcra, rpm: u64, now: u64) -> Result<u64, u64> {
        let a = g.check(rpm, now).map_err(|w| w.wait)?;
        g.commit(&a);
        Ok(a.remaining)
    }

    #[test]
    fn burst_then_refill() {
        let mut g = Gcra::default();
        for expected in (0..10).rev() {
            assert_eq!(admit(&mut g, 10, T0), Ok(expected));
        }
        // The 11th waits exactly one interval (6 s), and a refusal changes nothing.
        assert_eq!(admit(&mut g, 10, T0), Err(6 * SEC_NANOS));
        assert_eq!(admit(&mut g, 10, T0 + 6 * SEC_NANOS - 1), Err(1));
        assert_eq!(admit(&mut g, 10, T0 + 6 * SEC_NANOS), Ok(0));
        // After a full minute idle the whole burst is back.
        assert!(g.is_idle(T0 + 66 * SEC_NANOS));
        assert_eq!(admit(&mut g, 10, T0 + 66 * SEC_NANOS), Ok(9));
    }

    #[test]
    fn odd_rates_admit_exactly_n() {
        for rpm in [1, 7, 59, 61, 1000, 999_983] {
            let mut g = Gcra::default();
            let mut n = 0;
            while admit(&mut g, rpm, T0).is_ok() {
                n += 1;
                assert!(n <= rpm, "rpm {rpm} over-admitted");
            }
            assert_eq!(n, rpm, "rpm {rpm}");
        }
    }

    #[test]
    fn rate_changes_keep_the_request_count() {
        let mut g = Gcra::default();
        assert_eq!(admit(&mut g, 2, T0), Ok(1));
        assert_eq!(admit(&mut g, 2, T0), Ok(0));
        assert!(admit(&mut g, 2, T0).is_err());
        // Raised to 5: two used, three left.
        assert_eq!(admit(&mut g, 5, T0), Ok(2));
        assert_eq!(admit(&mut g, 5, T0), Ok(1));
        assert_eq!(admit(&mut g, 5, T0), Ok(0));
        assert_eq!(admit(&mut g, 5, T0), Err(12 * SEC_NANOS));
        // Lowered to 1: five outstanding requests are five minutes of debt at one a minute.
        let wait = g.check(1, T0).unwrap_err();
        assert_eq!(wait.wait, 5 * MINUTE_NANOS);
        assert_eq!(wait.full_at, T0 + 5 * MINUTE_NANOS);
    }

    #[test]
    fn absurd_rates_do_not_panic() {
        let mut g = Gcra::default();
        assert!(admit(&mut g, u64::MAX, T0).is_ok());
        assert!(admit(&mut g, u64::MAX, u64::MAX).is_ok());
        let mut g = Gcra::default();
        // Saturates at the end of time (year 2554) instead of overflowing.
        let _ = admit(&mut g, 1, u64::MAX);
        let _ = admit(&mut g, 1, u64::MAX);
    }
}
