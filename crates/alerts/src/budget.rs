//! What the engine observes: one budget of one scope, how much of it is spent, and its period.

use portcullis_core::UtcOffset;

/// Whose budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// An agent's own budget (`[agents.limits]`, `[limits]` defaults).
    Agent,
    /// A tenant's budget, shared by its agents.
    Tenant,
}

impl Scope {
    /// `agent` or `tenant`: the payload's `scope` and part of the dedupe key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Tenant => "tenant",
        }
    }
}

/// A budget period: `[start, end)` in Unix seconds. A new `start` re-arms every threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// First second of the period.
    pub start: i64,
    /// First second after it.
    pub end: i64,
}

const DAY_SECS: i64 = 86_400;

impl Period {
    /// The day containing `now` (Unix seconds) that starts at midnight of `offset`, as
    /// `tokens_per_day` (and `usd_per_day`) count it.
    pub fn day(now: i64, offset: UtcOffset) -> Self {
        let start = offset.day_start(now);
        Self {
            start,
            end: start.saturating_add(DAY_SECS),
        }
    }

    /// The calendar month containing `now` (Unix seconds), starting at midnight of `offset`
    /// on its first day, as a monthly budget (`usd_per_month`) counts it.
    pub fn month(now: i64, offset: UtcOffset) -> Self {
        let (start, end) = offset.month_bounds(now);
        Self { start, end }
    }
}

/// One budget of one scope after a request settled: what the engine checks against the
/// thresholds. Amounts are in the budget's unit (tokens, or dollars for a dollar budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetUse<'a> {
    /// Whose budget.
    pub scope: Scope,
    /// The agent id (scope `agent`) or the tenant id (scope `tenant`).
    pub id: &'a str,
    /// The tenant (the agent's tenant, or `id` itself for a tenant budget).
    pub tenant: &'a str,
    /// The budget's name as in the config and in 429s: `tokens_per_day`, `usd_per_day`, ...
    pub budget: &'static str,
    /// Spent so far in the period (including reservations of requests still in flight, as
    /// the limiter counts it when it admits).
    pub spent: f64,
    /// The budget.
    pub limit: f64,
    /// The period `spent` belongs to.
    pub period: Period,
}

impl BudgetUse<'_> {
    /// `spent / limit`, or `None` for a budget that cannot be compared (zero, negative or
    /// not a number).
    pub fn ratio(&self) -> Option<f64> {
        let ok = self.limit.is_finite() && self.limit > 0.0 && self.spent.is_finite();
        ok.then(|| self.spent / self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn days_and_months_start_at_the_offsets_midnight() {
        let utc = UtcOffset::UTC;
        let p = Period::day(at("2026-12-03T19:00:00Z"), utc);
        assert_eq!(
            (p.start, p.end),
            (at("2026-12-03T00:00:00Z"), at("2026-12-04T00:00:00Z"))
        );
        let plus2: UtcOffset = "+02:00".parse().unwrap();
        let p = Period::day(at("2026-12-03T23:00:00Z"), plus2);
        assert_eq!(
            p.start,
            at("2026-12-03T22:00:00Z"),
            "already Dec 4 at +02:00"
        );
        let p = Period::month(at("2026-12-31T23:59:59Z"), utc);
        assert_eq!(
            (p.start, p.end),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let p = Period::month(at("2026-12-31T23:00:00Z"), plus2);
        assert_eq!(
            (p.start, p.end),
            (at("2026-12-31T22:00:00Z"), at("2027-01-31T22:00:00Z")),
            "January at +02:00"
        );
        let p = Period::month(at("2028-02-10T00:00:00Z"), utc);
        assert_eq!(p.end - p.start, 29 * 86_400, "leap February");
    }

    #[test]
    fn a_budget_without_a_usable_limit_has_no_ratio() {
        let mut u = BudgetUse {
            scope: Scope::Agent,
            id: "bot",
            tenant: "acme",
            budget: "tokens_per_day",
            spent: 5.0,
            limit: 10.0,
            period: Period { start: 0, end: 1 },
        };
        assert_eq!(u.ratio(), Some(0.5));
        for limit in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            u.limit = limit;
            assert_eq!(u.ratio(), None, "{limit}");
        }
    }
}
