//! Which thresholds each budget already fired in its current period (sans-IO, bounded).

use crate::budget::{BudgetUse, Period, Scope};
use std::collections::HashMap;

/// The dedupe state is full of budgets whose periods are still running: the alert is not
/// fired (and counted as dropped), rather than forgetting a budget and firing twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// One budget's state: its period and the thresholds fired in it (bit `i` = threshold `i`).
#[derive(Debug, Clone, Copy)]
struct Armed {
    scope: Scope,
    budget: &'static str,
    period: Period,
    fired: u32,
}

/// Thresholds (sorted, at most 32) and, per budget, which of them fired in its period.
///
/// A threshold fires the first time `spent / limit` reaches it in a period: once, however
/// often it is observed above it afterwards, and also when spending falls back below it (a
/// reservation settled lower) and rises again. A request that jumps over several thresholds
/// fires each of them, lowest first. A later period re-arms them all; an observation from an
/// earlier period than the one already seen (a late report) is ignored.
#[derive(Debug)]
pub struct Tracker {
    thresholds: Vec<f64>,
    /// Budgets by id (agent or tenant); a few entries per id (scope × budget).
    state: HashMap<Box<str>, Vec<Armed>>,
    len: usize,
    max: usize,
}

impl Tracker {
    /// A tracker for `thresholds` (sorted ascending, deduplicated, at most 32) keeping at most
    /// `max` budgets.
    pub fn new(thresholds: Vec<f64>, max: usize) -> Self {
        let mut thresholds = thresholds;
        thresholds.truncate(32);
        Self {
            thresholds,
            state: HashMap::new(),
            len: 0,
            max,
        }
    }

    /// The thresholds.
    pub fn thresholds(&self) -> &[f64] {
        &self.thresholds
    }

    /// Budgets tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no budget is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The indices of the thresholds `u` crosses for the first time in its period (marked
    /// fired), lowest first. A budget below the lowest threshold costs no state.
    pub fn crossed(&mut self, u: &BudgetUse<'_>, now: i64) -> Result<Vec<usize>, Full> {
        let Some(ratio) = u.ratio() else {
            return Ok(Vec::new());
        };
        let reached = self.thresholds.iter().take_while(|t| ratio >= **t).count();
        if reached == 0 {
            return Ok(Vec::new());
        }
        let reached_mask = if reached >= 32 {
            u32::MAX
        } else {
            (1u32 << reached) - 1
        };
        if let Some(entry) = self.state.get_mut(u.id).and_then(|v| {
            v.iter_mut()
                .find(|a| a.scope == u.scope && a.budget == u.budget)
        }) {
            if u.period.start < entry.period.start {
                return Ok(Vec::new());
            }
            if u.period.start > entry.period.start {
                entry.period = u.period;
                entry.fired = 0;
            }
            let new = reached_mask & !entry.fired;
            entry.fired |= new;
            return Ok(bits(new));
        }
        if self.len >= self.max {
            self.sweep(now);
            if self.len >= self.max {
                return Err(Full);
            }
        }
        self.state.entry(u.id.into()).or_default().push(Armed {
            scope: u.scope,
            budget: u.budget,
            period: u.period,
            fired: reached_mask,
        });
        self.len += 1;
        Ok(bits(reached_mask))
    }

    /// Forgets budgets whose period ended by `now` (Unix seconds); returns how many.
    pub fn sweep(&mut self, now: i64) -> usize {
        let before = self.len;
        self.state.retain(|_, v| {
            v.retain(|a| a.period.end > now);
            !v.is_empty()
        });
        self.len = self.state.values().map(Vec::len).sum();
        before - self.len
    }
}

fn bits(mask: u32) -> Vec<usize> {
    (0..32).filter(|i| mask & (1 << i) != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Period = Period {
        start: 86_400,
        end: 2 * 86_400,
    };

    fn use_of(id: &str, spent: f64, period: Period) -> BudgetUse<'_> {
        BudgetUse {
            scope: Scope::Agent,
            id,
            tenant: "acme",
            budget: "tokens_per_day",
            spent,
            limit: 1000.0,
            period,
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(vec![0.5, 0.8, 1.0], 100)
    }

    #[test]
    fn each_threshold_fires_once_per_period() {
        let mut t = tracker();
        let now = DAY.start + 10;
        assert_eq!(t.crossed(&use_of("bot", 499.0, DAY), now), Ok(vec![]));
        assert!(t.is_empty(), "below every threshold: no state");
        assert_eq!(t.crossed(&use_of("bot", 500.0, DAY), now), Ok(vec![0]));
        assert_eq!(t.crossed(&use_of("bot", 700.0, DAY), now), Ok(vec![]));
        assert_eq!(t.crossed(&use_of("bot", 800.0, DAY), now), Ok(vec![1]));
        // Spending that falls back (a reservation settled lower) and rises again: still once.
        assert_eq!(t.crossed(&use_of("bot", 600.0, DAY), now), Ok(vec![]));
        assert_eq!(t.crossed(&use_of("bot", 850.0, DAY), now), Ok(vec![]));
        assert_eq!(t.crossed(&use_of("bot", 1000.0, DAY), now), Ok(vec![2]));
        assert_eq!(t.crossed(&use_of("bot", 5000.0, DAY), now), Ok(vec![]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn one_jump_over_several_thresholds_fires_each_lowest_first() {
        let mut t = tracker();
        assert_eq!(
            t.crossed(&use_of("bot", 950.0, DAY), DAY.start),
            Ok(vec![0, 1])
        );
        assert_eq!(
            t.crossed(&use_of("bot", 2000.0, DAY), DAY.start),
            Ok(vec![2])
        );
        let mut t = tracker();
        assert_eq!(
            t.crossed(&use_of("bot", 1000.0, DAY), DAY.start),
            Ok(vec![0, 1, 2])
        );
    }

    #[test]
    fn a_new_period_rearms_and_a_late_report_of_the_old_one_is_ignored() {
        let mut t = tracker();
        let next = Period {
            start: DAY.end,
            end: DAY.end + 86_400,
        };
        assert_eq!(
            t.crossed(&use_of("bot", 900.0, DAY), DAY.start),
            Ok(vec![0, 1])
        );
        assert_eq!(
            t.crossed(&use_of("bot", 600.0, next), next.start),
            Ok(vec![0])
        );
        assert_eq!(
            t.crossed(&use_of("bot", 1000.0, DAY), next.start),
            Ok(vec![]),
            "a late report of yesterday"
        );
        assert_eq!(
            t.crossed(&use_of("bot", 800.0, next), next.start),
            Ok(vec![1])
        );
    }

    #[test]
    fn scopes_budgets_and_ids_are_tracked_apart() {
        let mut t = tracker();
        let now = DAY.start;
        assert_eq!(t.crossed(&use_of("bot", 500.0, DAY), now), Ok(vec![0]));
        assert_eq!(t.crossed(&use_of("other", 500.0, DAY), now), Ok(vec![0]));
        let mut tenant = use_of("bot", 500.0, DAY);
        tenant.scope = Scope::Tenant;
        assert_eq!(
            t.crossed(&tenant, now),
            Ok(vec![0]),
            "a tenant named like an agent"
        );
        let mut usd = use_of("bot", 5.0, DAY);
        usd.budget = "usd_per_day";
        usd.limit = 10.0;
        assert_eq!(t.crossed(&usd, now), Ok(vec![0]));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn state_is_bounded_and_past_periods_are_forgotten() {
        let mut t = Tracker::new(vec![0.5], 2);
        let now = DAY.start;
        assert_eq!(t.crossed(&use_of("a", 600.0, DAY), now), Ok(vec![0]));
        assert_eq!(t.crossed(&use_of("b", 600.0, DAY), now), Ok(vec![0]));
        // Full of running periods: refused rather than forgetting one (which would refire).
        assert_eq!(t.crossed(&use_of("c", 600.0, DAY), now), Err(Full));
        assert_eq!(t.crossed(&use_of("a", 700.0, DAY), now), Ok(vec![]));
        // Once their day is over they are forgotten and room is made.
        let later = DAY.end + 5;
        let next = Period {
            start: DAY.end,
            end: DAY.end + 86_400,
        };
        assert_eq!(t.crossed(&use_of("c", 600.0, next), later), Ok(vec![0]));
        assert_eq!(t.len(), 1);
        assert_eq!(t.sweep(next.end), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn unusable_budgets_fire_nothing() {
        let mut t = tracker();
        let mut u = use_of("bot", 5000.0, DAY);
        u.limit = 0.0;
        assert_eq!(t.crossed(&u, DAY.start), Ok(vec![]));
        u.limit = 1000.0;
        u.spent = f64::NAN;
        assert_eq!(t.crossed(&u, DAY.start), Ok(vec![]));
        assert!(t.is_empty());
    }
}
