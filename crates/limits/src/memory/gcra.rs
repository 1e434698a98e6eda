//! Generic cell rate algorithm for requests per minute.
//!
//! State is one number, the theoretical arrival time (TAT). For `rpm = N` the emission interval
//! is `T = 60 s / N` and the tolerance `τ = N·T` (= 60 s up to rounding): a request at `now` is
//! admitted iff `max(TAT, now) + T − now ≤ τ`, which admits a burst of N back to back and then
//! one request every T. Remaining after an admission is `⌊(τ − (TAT′ − now)) / T⌋`, so a burst
//! reports N−1 … 0. `T` is rounded down to whole nanoseconds, so the refill is faster than N per
//! minute by less than one nanosecond per request.

/// Nanoseconds in a second.
pub(crate) const SEC_NANOS: u64 = 1_000_000_000;
/// Nanoseconds in a minute.
pub(crate) const MINUTE_NANOS: u64 = 60 * SEC_NANOS;

/// GCRA state of one scope.
#[derive(Debug, Default)]
pub(crate) struct Gcra {
    /// Theoretical arrival time, Unix nanoseconds (0 = never used).
    tat: u64,
}

/// An admission computed by [`Gcra::check`], applied by [`Gcra::commit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct GcraAdmit {
    new_tat: u64,
    /// Requests left in the burst after this one.
    pub(crate) remaining: u64,
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

    /// Would a request at `now` (Unix nanoseconds) be admitted under `rpm` (≥ 1)? `Err` holds
    /// the nanoseconds until it would be.
    pub(crate) fn check(&self, rpm: u64, now: u64) -> Result<GcraAdmit, u64> {
        let (interval, tolerance) = Self::params(rpm);
        let new_tat = self.tat.max(now).saturating_add(interval);
        let ahead = new_tat - now;
        if ahead > tolerance {
            Err(ahead - tolerance)
        } else {
            Ok(GcraAdmit {
                new_tat,
                remaining: (tolerance - ahead) / interval,
            })
        }
    }

    /// Applies an admission.
    pub(crate) fn commit(&mut self, admit: &GcraAdmit) {
        self.tat = admit.new_tat;
    }

    /// Unix nanoseconds at which the burst is full again.
    pub(crate) fn full_at(&self, now: u64) -> u64 {
        self.tat.max(now)
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
        let a = g.check(rpm, now)?;
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
