//! Counters of one scope and the all-limits check over them.

use crate::outcome::{keep_tightest, keep_worst, LimitKind, RateInfo, Refusal};
use crate::permit::Settlement;
use crate::scope::ScopeKind;
use crate::settings::{LimitSettings, DAY_SECS};
use portcullis_core::Usd;
use portcullis_core::UtcOffset;

use super::gcra::{Gcra, GcraAdmit, SEC_NANOS};
use super::window::Window;

/// Seconds suggested as `Retry-After` for a request that can never fit.
const NEVER_FITS_RETRY_SECS: u64 = 60;

/// One instant, read once per operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// Unix nanoseconds.
    pub(crate) nanos: u64,
    /// Unix seconds.
    pub(crate) secs: u64,
}

impl Now {
    pub(crate) fn from_nanos(nanos: u64) -> Self {
        Self {
            nanos,
            secs: nanos / SEC_NANOS,
        }
    }

    /// Whole seconds from now until Unix nanosecond `at`, rounded up, at least 1.
    fn secs_until_nanos(self, at: u64) -> u64 {
        at.saturating_sub(self.nanos).div_ceil(SEC_NANOS).max(1)
    }

    /// Whole seconds from now until Unix second `at`, at least 1.
    fn secs_until(self, at: u64) -> u64 {
        self.secs_until_nanos(at.saturating_mul(SEC_NANOS))
    }
}

/// Tokens and micro-dollars charged to the current day.
#[derive(Debug)]
struct Day {
    /// Unix second of the midnight that started the day (`i64::MIN` before first use).
    start: i64,
    tokens: u64,
    usd: u64,
}

impl Day {
    fn end(&self) -> i64 {
        self.start.saturating_add(DAY_SECS)
    }

    /// Rolls over once the stored day has ended. A changed offset therefore takes effect at the
    /// end of the current day, and a clock that went backwards never resets the budget.
    fn advance(&mut self, now_secs: i64, offset: UtcOffset) {
        if now_secs >= self.end() {
            self.start = offset.day_start(now_secs);
            self.tokens = 0;
            self.usd = 0;
        }
    }

    fn end_unix(&self) -> u64 {
        u64::try_from(self.end()).unwrap_or(0)
    }
}

/// Micro-dollars charged to the current calendar month.
#[derive(Debug)]
struct Month {
    /// Unix second of the midnight that started the month (`i64::MIN` before first use).
    start: i64,
    /// Unix second of the midnight that starts the next month.
    end: i64,
    usd: u64,
}

impl Month {
    /// Rolls over once the stored month has ended (like [`Day::advance`]).
    fn advance(&mut self, now_secs: i64, offset: UtcOffset) {
        if now_secs >= self.end {
            (self.start, self.end) = offset.month_bounds(now_secs);
            self.usd = 0;
        }
    }

    fn end_unix(&self) -> u64 {
        u64::try_from(self.end).unwrap_or(0)
    }
}

/// What one request reserves: tokens, and their worst-case cost in micro-dollars when the
/// model is priced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserve {
    pub(crate) tokens: u64,
    pub(crate) usd: Option<u64>,
}

/// Usage of one scope as of now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeUsage {
    pub(crate) requests_last_minute: u64,
    pub(crate) tokens_today: u64,
    pub(crate) usd_today: u64,
    pub(crate) usd_month: u64,
}

/// What an admitted request charged to one scope, to be settled later.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charge {
    /// The window second the tokens were charged to.
    sec: u64,
    /// The day the tokens were charged to.
    day_start: i64,
    /// The month the micro-dollars were charged to.
    month_start: i64,
    /// The scope's day-reset offset at admission.
    offset: UtcOffset,
    /// Tokens reserved.
    tokens: u64,
    /// Micro-dollars reserved.
    usd: u64,
    /// Whether this charge took a concurrency slot (to free when it finishes).
    slot: bool,
}

/// Which limits one call checks and charges: a request takes its concurrency slot when it
/// arrives ([`Stage::Slot`]) and is charged its request and tokens once policy allowed it
/// ([`Stage::Charge`]); [`Stage::Both`] does both at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Slot,
    Charge,
    Both,
}

impl Stage {
    fn takes_slot(self) -> bool {
        self != Stage::Charge
    }

    fn charges(self) -> bool {
        self != Stage::Slot
    }
}

/// A check that passed, ready to commit.
#[derive(Debug)]
pub(crate) struct Pass {
    gcra: Option<GcraAdmit>,
}

/// All counters of one scope.
#[derive(Debug)]
pub(crate) struct ScopeState {
    gcra: Gcra,
    in_flight: u64,
    window: Window,
    day: Day,
    month: Month,
}

impl ScopeState {
    pub(crate) fn new(now: Now) -> Self {
        Self {
            gcra: Gcra::default(),
            in_flight: 0,
            window: Window::new(now.secs),
            day: Day {
                start: i64::MIN,
                tokens: 0,
                usd: 0,
            },
            month: Month {
                start: i64::MIN,
                end: i64::MIN,
                usd: 0,
            },
        }
    }

    fn advance(&mut self, now: Now, offset: UtcOffset) {
        self.window.advance(now.secs);
        let secs = i64::try_from(now.secs).unwrap_or(i64::MAX);
        self.day.advance(secs, offset);
        self.month.advance(secs, offset);
    }

    /// Checks the limits of `stage` in `settings` without charging anything. Refusals go to
    /// `worst`, rate figures (as they would be after admission) to `tightest`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        &mut self,
        settings: &LimitSettings,
        scope: ScopeKind,
        now: Now,
        stage: Stage,
        reservation: Option<Reserve>,
        worst: &mut Option<Refusal>,
        tightest: &mut Option<RateInfo>,
    ) -> Pass {
        self.advance(now, settings.day_reset_offset);
        let refuse =
            |limit, limit_value, requested, retry_after_secs, reset_unix, never_fits| Refusal {
                limit,
                scope,
                limit_value,
                remaining: 0,
                requested,
                retry_after_secs,
                reset_unix,
                never_fits,
                unpriced: false,
            };
        let never_fits_reset = now.secs.saturating_add(NEVER_FITS_RETRY_SECS);

        if stage.takes_slot() {
            if let Some(max) = settings.max_concurrent {
                if self.in_flight >= max {
                    let never = max == 0;
                    let retry = if never { NEVER_FITS_RETRY_SECS } else { 1 };
                    let reset = now.secs.saturating_add(retry);
                    keep_worst(
                        worst,
                        refuse(LimitKind::Concurrent, max, 1, retry, reset, never),
                    );
                }
            }
        }
        let mut gcra = None;
        if !stage.charges() {
            return Pass { gcra };
        }
        if let Some(rpm) = settings.rpm {
            if rpm == 0 {
                let r = refuse(
                    LimitKind::Rpm,
                    0,
                    1,
                    NEVER_FITS_RETRY_SECS,
                    never_fits_reset,
                    true,
                );
                keep_worst(worst, r);
            } else {
                match self.gcra.check(rpm, now.nanos) {
                    Ok(admit) => {
                        let info = RateInfo {
                            limit: LimitKind::Rpm,
                            scope,
                            limit_value: rpm,
                            remaining: admit.remaining,
                            reset_unix: admit.full_at().div_ceil(SEC_NANOS),
                        };
                        keep_tightest(tightest, info);
                        gcra = Some(admit);
                    }
                    Err(wait) => {
                        let reset = wait.full_at.div_ceil(SEC_NANOS);
                        let retry = now.secs_until_nanos(now.nanos.saturating_add(wait.wait));
                        keep_worst(worst, refuse(LimitKind::Rpm, rpm, 1, retry, reset, false));
                    }
                }
            }
        }

        let Some(Reserve { tokens, usd }) = reservation else {
            return Pass { gcra };
        };

        if let Some(tpm) = settings.tpm {
            let used = self.window.tokens();
            let empty_at = self.window.empty_at();
            if tokens > tpm {
                let r = refuse(
                    LimitKind::Tpm,
                    tpm,
                    tokens,
                    NEVER_FITS_RETRY_SECS,
                    empty_at,
                    true,
                );
                keep_worst(worst, r);
            } else if used > tpm - tokens {
                // `tokens <= tpm` here, so neither side overflows.
                let excess = used - (tpm - tokens);
                let at = self
                    .window
                    .freed_at(excess)
                    .unwrap_or(empty_at)
                    .max(now.secs);
                let retry = now.secs_until(at);
                keep_worst(
                    worst,
                    refuse(LimitKind::Tpm, tpm, tokens, retry, empty_at, false),
                );
            } else {
                let reset = if tokens > 0 {
                    self.window.head() + super::window::SLOTS
                } else {
                    empty_at
                };
                let info = RateInfo {
                    limit: LimitKind::Tpm,
                    scope,
                    limit_value: tpm,
                    remaining: tpm.saturating_sub(used).saturating_sub(tokens),
                    reset_unix: reset,
                };
                keep_tightest(tightest, info);
            }
        }

        if let Some(per_day) = settings.tokens_per_day {
            let used = self.day.tokens;
            let end = self.day.end_unix();
            let retry = now.secs_until(end);
            if tokens > per_day {
                let r = refuse(LimitKind::TokensPerDay, per_day, tokens, retry, end, true);
                keep_worst(worst, r);
            } else if used > per_day - tokens {
                let r = refuse(LimitKind::TokensPerDay, per_day, tokens, retry, end, false);
                keep_worst(worst, r);
            } else {
                let info = RateInfo {
                    limit: LimitKind::TokensPerDay,
                    scope,
                    limit_value: per_day,
                    remaining: per_day.saturating_sub(used).saturating_sub(tokens),
                    reset_unix: end,
                };
                keep_tightest(tightest, info);
            }
        }

        // Dollar budgets: checked like the daily token budget; not reported in the
        // X-RateLimit headers (their unit is not the request's).
        if let Some(cost) = usd {
            let budgets = [
                (
                    LimitKind::UsdPerDay,
                    settings.usd_per_day,
                    self.day.usd,
                    self.day.end_unix(),
                ),
                (
                    LimitKind::UsdPerMonth,
                    settings.usd_per_month,
                    self.month.usd,
                    self.month.end_unix(),
                ),
            ];
            for (kind, budget, used, end) in budgets {
                let Some(budget) = budget.map(|b| b.micros()) else {
                    continue;
                };
                let retry = now.secs_until(end);
                if cost > budget {
                    keep_worst(worst, refuse(kind, budget, cost, retry, end, true));
                } else if used > budget - cost {
                    keep_worst(worst, refuse(kind, budget, cost, retry, end, false));
                }
            }
        }
        Pass { gcra }
    }

    /// Charges an admitted request (after every scope passed [`ScopeState::check`] at the same
    /// `now`, under the same lock).
    pub(crate) fn commit(
        &mut self,
        pass: &Pass,
        settings: &LimitSettings,
        stage: Stage,
        reserve: Reserve,
    ) -> Charge {
        let Reserve { tokens, usd } = reserve;
        let usd = usd.unwrap_or(0);
        if stage.takes_slot() {
            self.in_flight = self.in_flight.saturating_add(1);
        }
        if stage.charges() {
            if let Some(admit) = &pass.gcra {
                self.gcra.commit(admit);
            }
            self.window.charge(tokens, 1);
            self.day.tokens = self.day.tokens.saturating_add(tokens);
            self.day.usd = self.day.usd.saturating_add(usd);
            self.month.usd = self.month.usd.saturating_add(usd);
        }
        Charge {
            sec: self.window.head(),
            day_start: self.day.start,
            month_start: self.month.start,
            offset: settings.day_reset_offset,
            tokens,
            usd,
            slot: stage.takes_slot(),
        }
    }

    /// Ends an admitted request: frees the concurrency slot it took and replaces its
    /// reservations by what `settlement` reports (each one it knows).
    pub(crate) fn finish(&mut self, charge: &Charge, settlement: Settlement, now: Now) {
        self.advance(now, charge.offset);
        if charge.slot {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if let Some(actual) = settlement.usd.map(Usd::micros) {
            if actual < charge.usd {
                // A settlement after the day (month) rolled over refunds nothing to the new one.
                let back = charge.usd - actual;
                if self.day.start == charge.day_start {
                    self.day.usd = self.day.usd.saturating_sub(back);
                }
                if self.month.start == charge.month_start {
                    self.month.usd = self.month.usd.saturating_sub(back);
                }
            } else {
                let extra = actual - charge.usd;
                self.day.usd = self.day.usd.saturating_add(extra);
                self.month.usd = self.month.usd.saturating_add(extra);
            }
        }
        let Some(actual) = settlement.tokens else {
            return;
        };
        if actual < charge.tokens {
            let back = charge.tokens - actual;
            self.window.refund(charge.sec, back);
            if self.day.start == charge.day_start {
                self.day.tokens = self.day.tokens.saturating_sub(back);
            }
        } else {
            // The estimate was too low: the tokens are spent, so count them now.
            let extra = actual - charge.tokens;
            self.window.charge(extra, 0);
            self.day.tokens = self.day.tokens.saturating_add(extra);
        }
    }

    /// Requests in the last minute, tokens and dollars today and dollars this month, as of
    /// `now`.
    pub(crate) fn usage(&mut self, now: Now) -> ScopeUsage {
        self.window.advance(now.secs);
        let secs = i64::try_from(now.secs).unwrap_or(i64::MAX);
        let today = secs < self.day.end();
        ScopeUsage {
            requests_last_minute: self.window.requests(),
            tokens_today: if today { self.day.tokens } else { 0 },
            usd_today: if today { self.day.usd } else { 0 },
            usd_month: if secs < self.month.end {
                self.month.usd
            } else {
                0
            },
        }
    }

    /// `true` when forgetting this state changes nothing: no request in flight, full burst,
    /// empty minute window, and no tokens charged to a day that is still running.
    pub(crate) fn is_idle(&mut self, now: Now) -> bool {
        self.window.advance(now.secs);
        let secs = i64::try_from(now.secs).unwrap_or(i64::MAX);
        let day_over = secs >= self.day.end();
        let month_over = secs >= self.month.end;
        self.in_flight == 0
            && self.gcra.is_idle(now.nanos)
            && self.window.is_empty()
            && ((self.day.tokens == 0 && self.day.usd == 0) || day_over)
            && (self.month.usd == 0 || month_over)
    }

    /// Requests in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }
}
