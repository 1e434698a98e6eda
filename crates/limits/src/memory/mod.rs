//! The embedded in-memory limiter: one mutex-guarded state per scope key in a `DashMap`.
//!
//! A request locks the state of each of its (at most three) scopes, in key order so that
//! concurrent requests sharing scopes cannot deadlock, checks every limit, and only if all pass
//! charges all of them before unlocking. Check-then-charge under the locks is what makes token
//! reservations exact under concurrency: two requests can never both see the same free budget.

mod gcra;
mod state;
pub(crate) mod window;

use dashmap::DashMap;
use portcullis_core::Clock;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::UNIX_EPOCH;

use crate::estimate::TokenReservation;
use crate::future::LimitFuture;
use crate::limiter::Limiter;
use crate::outcome::{LimitError, RateInfo, Refusal, UsageSnapshot};
use crate::permit::Settlement;
use crate::permit::{Admission, Lease, Permit};
use crate::scope::{LimitScopes, Scope, ScopeKey, ScopeKind};
use state::{Charge, Now, Reserve, ScopeState, ScopeUsage, Stage};

type Shared = Arc<Mutex<ScopeState>>;

/// Scope kinds in the order of [`LimitScopes::as_array`].
const KINDS: [ScopeKind; 3] = [ScopeKind::Tenant, ScopeKind::Agent, ScopeKind::Subagent];

/// In-memory [`Limiter`]: the embedded default.
///
/// State lives in this process only: a restart starts every scope with a full burst, an empty
/// minute window and an unused daily budget, and several replicas each enforce their own limits.
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    scopes: DashMap<ScopeKey, Shared>,
}

fn lock(state: &Mutex<ScopeState>) -> MutexGuard<'_, ScopeState> {
    // The state is plain counters updated without panicking paths; a poisoned lock still
    // holds consistent numbers.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_of(clock: &dyn Clock) -> Now {
    let nanos = clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Now::from_nanos(nanos)
}

impl MemoryLimiter {
    /// A limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            scopes: DashMap::new(),
        }
    }

    /// Scopes currently tracked.
    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    /// `true` when no scope is tracked.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    fn state(&self, key: &ScopeKey, now: Now) -> Shared {
        if let Some(found) = self.scopes.get(key.as_str()) {
            return Arc::clone(found.value());
        }
        let entry = self
            .scopes
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ScopeState::new(now))));
        Arc::clone(entry.value())
    }
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

impl MemoryLimiter {
    /// Checks and charges `stage` of a request against every scope, all or nothing. For
    /// [`Stage::Slot`] also reads the agent scope's usage (before the charge).
    fn run(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        stage: Stage,
    ) -> Result<(MemoryLease, Option<RateInfo>, UsageSnapshot), Refusal> {
        let now = now_of(self.clock.as_ref());
        if stage != Stage::Slot {
            if let Some(refusal) = scopes.unpriced_refusal(reservation, now.secs) {
                return Err(refusal);
            }
        }
        let reserve = reservation.map(|r| Reserve {
            tokens: r.get(),
            usd: r.usd().map(portcullis_core::Usd::micros),
        });

        // Resolve each scope's state; a key given twice is checked once (first settings win).
        let wanted = scopes.as_array();
        let mut found: [Option<(Scope<'_>, Shared)>; 3] = [None, None, None];
        for i in 0..wanted.len() {
            let Some(scope) = wanted[i] else { continue };
            let duplicate = wanted[..i].iter().flatten().any(|s| s.key == scope.key);
            if !duplicate {
                found[i] = Some((scope, self.state(scope.key, now)));
            }
        }

        // Lock in key order (a global order, so no deadlock between overlapping requests).
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| {
            let key = |i: usize| found[i].as_ref().map(|(s, _)| s.key);
            key(a).cmp(&key(b))
        });
        let mut guards: [Option<MutexGuard<'_, ScopeState>>; 3] = [None, None, None];
        for i in order {
            if let Some((_, state)) = &found[i] {
                guards[i] = Some(lock(state));
            }
        }

        let mut worst = None;
        let mut tightest = None;
        let mut passes: [Option<state::Pass>; 3] = [None, None, None];
        for i in 0..3 {
            if let (Some((scope, _)), Some(guard)) = (&found[i], guards[i].as_mut()) {
                passes[i] = Some(guard.check(
                    scope.settings,
                    KINDS[i],
                    now,
                    stage,
                    reserve,
                    &mut worst,
                    &mut tightest,
                ));
            }
        }
        if let Some(refusal) = worst {
            return Err(refusal);
        }
        let mut usage = UsageSnapshot::default();
        if stage == Stage::Slot {
            let agent = (0..3).find(|&i| {
                found[i]
                    .as_ref()
                    .is_some_and(|(s, _)| s.key == scopes.agent.key)
            });
            if let Some(guard) = agent.and_then(|i| guards[i].as_mut()) {
                usage = snapshot(guard.usage(now));
            }
        }

        let mut charges: [Option<Charge>; 3] = [None, None, None];
        for i in 0..3 {
            if let (Some((scope, _)), Some(guard), Some(pass)) =
                (&found[i], guards[i].as_mut(), &passes[i])
            {
                let reserve = reserve.unwrap_or(Reserve {
                    tokens: 0,
                    usd: None,
                });
                charges[i] = Some(guard.commit(pass, scope.settings, stage, reserve));
            }
        }
        drop(guards);

        // The lease keeps each scope's state alive (and safe from `sweep`) until it finishes.
        let mut held: [Option<(Shared, Charge)>; 3] = [None, None, None];
        for ((slot, found), charge) in held.iter_mut().zip(found).zip(charges) {
            if let (Some((_, state)), Some(charge)) = (found, charge) {
                *slot = Some((state, charge));
            }
        }

        let lease = MemoryLease {
            clock: Arc::clone(&self.clock),
            held,
        };
        Ok((lease, tightest, usage))
    }
}

impl Limiter for MemoryLimiter {
    fn acquire(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        let tokens = reservation.map_or(0, TokenReservation::get);
        let price = reservation.and_then(TokenReservation::price);
        LimitFuture::ready(
            self.run(scopes, reservation, Stage::Both)
                .map(|(lease, tightest, _)| {
                    Permit::new(Box::new(lease), tightest, tokens).with_price(price)
                })
                .map_err(LimitError::Limited),
        )
    }

    fn admit(&self, scopes: &LimitScopes<'_>) -> LimitFuture<'_, Result<Admission, LimitError>> {
        LimitFuture::ready(
            self.run(scopes, None, Stage::Slot)
                .map(|(lease, _, usage)| Admission::new(Box::new(lease), usage))
                .map_err(LimitError::Limited),
        )
    }

    fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        let tokens = reservation.map_or(0, TokenReservation::get);
        let price = reservation.and_then(TokenReservation::price);
        LimitFuture::ready(
            self.run(scopes, reservation, Stage::Charge)
                .map(|(lease, tightest, _)| {
                    Permit::with_admission(Box::new(lease), admission, tightest, tokens)
                        .with_price(price)
                })
                .map_err(LimitError::Limited),
        )
    }

    fn usage_snapshot(&self, key: &ScopeKey) -> LimitFuture<'_, UsageSnapshot> {
        LimitFuture::ready(self.usage_now(key))
    }

    fn sweep(&self) -> usize {
        let now = now_of(self.clock.as_ref());
        let before = self.scopes.len();
        self.scopes.retain(|_, state| {
            // Held elsewhere (an open permit or a request between lookup and lock): keep.
            if Arc::strong_count(state) > 1 {
                return true;
            }
            match state.try_lock() {
                Ok(mut guard) => !guard.is_idle(now),
                Err(TryLockError::Poisoned(p)) => !p.into_inner().is_idle(now),
                Err(TryLockError::WouldBlock) => true,
            }
        });
        before.saturating_sub(self.scopes.len())
    }
}

impl MemoryLimiter {
    /// Usage of one scope now (what [`Limiter::usage_snapshot`] answers).
    pub fn usage_now(&self, key: &ScopeKey) -> UsageSnapshot {
        let Some(state) = self.scopes.get(key.as_str()).map(|s| Arc::clone(s.value())) else {
            return UsageSnapshot::default();
        };
        let usage = lock(&state).usage(now_of(self.clock.as_ref()));
        snapshot(usage)
    }
}

fn snapshot(u: ScopeUsage) -> UsageSnapshot {
    UsageSnapshot {
        requests_last_minute: u.requests_last_minute,
        tokens_today: u.tokens_today,
        usd_today: portcullis_core::Usd::from_micros(u.usd_today),
        usd_month: portcullis_core::Usd::from_micros(u.usd_month),
    }
}

/// What a memory permit gives back: per scope, the state and what was charged to it.
struct MemoryLease {
    clock: Arc<dyn Clock>,
    held: [Option<(Shared, Charge)>; 3],
}

impl Lease for MemoryLease {
    fn finish(self: Box<Self>, settlement: Settlement) {
        let now = now_of(self.clock.as_ref());
        for (state, charge) in self.held.iter().flatten() {
            lock(state).finish(charge, settlement, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::LimitSettings;
    use portcullis_core::ManualClock;

    /// The memory limiter answers at once.
    fn now<T>(f: LimitFuture<'_, T>) -> T {
        match f.into_ready() {
            Ok(v) => v,
            Err(_) => panic!("the memory limiter answered with a future"),
        }
    }

    fn refusal_of<T: std::fmt::Debug>(r: Result<T, LimitError>) -> Refusal {
        match r {
            Err(LimitError::Limited(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn permit_holds_the_state_against_sweep() {
        let clock = Arc::new(ManualClock::at(1_700_000_000));
        let limiter = MemoryLimiter::new(clock.clone());
        let key = ScopeKey::agent("bot");
        let settings = LimitSettings {
            max_concurrent: Some(1),
            ..LimitSettings::default()
        };
        let permit = now(limiter.acquire_one(&key, &settings, None)).unwrap();
        clock.advance(std::time::Duration::from_secs(3600));
        assert_eq!(limiter.sweep(), 0, "an open permit pins its scope");
        let state = Arc::clone(limiter.scopes.get(key.as_str()).unwrap().value());
        assert_eq!(lock(&state).in_flight(), 1);
        drop(permit);
        assert_eq!(lock(&state).in_flight(), 0);
        drop(state);
        assert_eq!(limiter.sweep(), 1);
        assert!(limiter.is_empty());
    }

    #[test]
    fn admission_holds_the_slot_until_the_permit_ends() {
        let clock = Arc::new(ManualClock::at(1_700_000_000));
        let limiter = MemoryLimiter::new(clock);
        let key = ScopeKey::agent("bot");
        let settings = LimitSettings {
            max_concurrent: Some(1),
            rpm: Some(2),
            ..LimitSettings::default()
        };
        let scopes = LimitScopes::agent(&key, &settings);
        let in_flight = || {
            let state = Arc::clone(limiter.scopes.get(key.as_str()).unwrap().value());
            let n = lock(&state).in_flight();
            n
        };

        // The slot is taken on arrival; a second arrival is refused while it is held.
        let first = now(limiter.admit(&scopes)).unwrap();
        assert_eq!(in_flight(), 1);
        let refused = refusal_of(now(limiter.admit(&scopes)));
        assert_eq!(refused.limit, crate::LimitKind::Concurrent);
        assert_eq!(
            limiter.usage_now(&key).requests_last_minute,
            0,
            "nothing charged yet"
        );

        // Admitted: the permit holds the same slot (not a second one) and charges the request.
        let permit = now(limiter.acquire_admitted(&scopes, None, first)).unwrap();
        assert_eq!(in_flight(), 1);
        assert_eq!(limiter.usage_now(&key).requests_last_minute, 1);
        assert_eq!(permit.rate_info().map(|r| r.remaining), Some(1));
        assert!(now(limiter.admit(&scopes)).is_err());
        drop(permit);
        assert_eq!(in_flight(), 0);

        // A refusal at the second stage frees the slot and charges nothing.
        let _burn = now(limiter.acquire(
            &LimitScopes::agent(
                &key,
                &LimitSettings {
                    rpm: Some(2),
                    ..LimitSettings::default()
                },
            ),
            None,
        ));
        drop(_burn);
        let a = now(limiter.admit(&scopes)).unwrap();
        let r = refusal_of(now(limiter.acquire_admitted(&scopes, None, a)));
        assert_eq!(r.limit, crate::LimitKind::Rpm);
        assert_eq!(in_flight(), 0, "the refused request's slot is free");
        assert_eq!(limiter.usage_now(&key).requests_last_minute, 2);

        // Dropping an admission without a permit frees its slot.
        let a = now(limiter.admit(&scopes)).unwrap();
        assert_eq!(in_flight(), 1);
        drop(a);
        assert_eq!(in_flight(), 0);
    }
}
