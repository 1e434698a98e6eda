//! Concurrent requests against one budget: the budget is never overshot.

use crate::common::*;
use portcullis_limits::{
    LimitKind, LimitScopes, LimitSettings, Limiter, ScopeKey, TokenReservation,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

const THREADS: u64 = 50;
const BUDGET: u64 = 10_000;
const RESERVE: u64 = 1_000;

/// 50 streams start together and stay open until every one has been admitted or refused:
/// exactly budget / reservation get through, and what they record stays within the budget.
#[test]
fn fifty_streams_never_overshoot_the_minute_budget() {
    let (_clock, limiter) = limiter_at(NOON);
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        tpm: Some(BUDGET),
        ..settings()
    };
    let start = Barrier::new(THREADS as usize);
    let decided = Barrier::new(THREADS as usize);
    let admitted = AtomicU64::new(0);
    let recorded = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let (limiter, key, s) = (&limiter, &key, &s);
            let (start, decided, admitted, recorded) = (&start, &decided, &admitted, &recorded);
            scope.spawn(move || {
                start.wait();
                let result = limiter.acquire_one(key, s, Some(TokenReservation::tokens(RESERVE)));
                decided.wait();
                match result {
                    Ok(permit) => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        let used = 400 + (i * 53) % 600; // ≤ the reservation
                        recorded.fetch_add(used, Ordering::SeqCst);
                        permit.settle(Some(used));
                    }
                    Err(refusal) => {
                        assert_eq!(refusal.limit, LimitKind::Tpm);
                        assert!(refusal.retry_after_secs >= 1);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::SeqCst), BUDGET / RESERVE);
    let recorded = recorded.load(Ordering::SeqCst);
    assert!(recorded <= BUDGET, "{recorded} > {BUDGET}");
    assert_eq!(limiter.usage_snapshot(&key).tokens_today, recorded);
}

/// Streams that settle as soon as they are admitted free capacity for later ones; the sum of
/// recorded usage still never exceeds the budget, and the counters agree with it.
#[test]
fn fifty_settling_streams_never_overshoot_the_minute_budget() {
    for round in 0..20u64 {
        let (_clock, limiter) = limiter_at(NOON);
        let key = ScopeKey::agent("bot");
        let s = LimitSettings {
            tpm: Some(BUDGET),
            tokens_per_day: Some(BUDGET * 2),
            ..settings()
        };
        let start = Barrier::new(THREADS as usize);
        let recorded = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for i in 0..THREADS {
                let (limiter, key, s, start, recorded) = (&limiter, &key, &s, &start, &recorded);
                scope.spawn(move || {
                    start.wait();
                    let reserve = 500 + (i * 97 + round) % 1_500;
                    let r = Some(TokenReservation::tokens(reserve));
                    if let Ok(permit) = limiter.acquire_one(key, s, r) {
                        let used = (reserve * (i % 4)) / 4;
                        recorded.fetch_add(used, Ordering::SeqCst);
                        permit.settle(Some(used));
                    }
                });
            }
        });
        let recorded = recorded.load(Ordering::SeqCst);
        assert!(recorded <= BUDGET, "round {round}: {recorded} > {BUDGET}");
        assert_eq!(
            limiter.usage_snapshot(&key).tokens_today,
            recorded,
            "round {round}"
        );
    }
}

/// Overlapping scope sets (a shared tenant, per-agent keys, locked in different argument orders)
/// neither deadlock nor overshoot the shared budget.
#[test]
fn overlapping_scopes_under_contention() {
    let (_clock, limiter) = limiter_at(NOON);
    let tenant = ScopeKey::tenant("acme");
    let agents: Vec<ScopeKey> = (0..5)
        .map(|i| ScopeKey::agent(&format!("agent_{i}")))
        .collect();
    let subs: Vec<ScopeKey> = (0..5)
        .map(|i| ScopeKey::subagent("agent_0", &format!("s{i}")))
        .collect();
    let tenant_limits = LimitSettings {
        tpm: Some(BUDGET),
        max_concurrent: Some(7),
        ..settings()
    };
    let agent_limits = LimitSettings {
        max_concurrent: Some(3),
        ..settings()
    };
    let in_flight = AtomicU64::new(0);
    let peak = AtomicU64::new(0);
    let recorded = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..8usize {
            let (limiter, tenant, agents, subs) = (&limiter, &tenant, &agents, &subs);
            let (tenant_limits, agent_limits) = (&tenant_limits, &agent_limits);
            let (in_flight, peak, recorded) = (&in_flight, &peak, &recorded);
            scope.spawn(move || {
                for n in 0..500usize {
                    let agent = &agents[(t + n) % agents.len()];
                    let mut scopes =
                        LimitScopes::agent(agent, agent_limits).with_tenant(tenant, tenant_limits);
                    if n % 3 == 0 {
                        scopes = scopes.with_subagent(&subs[n % subs.len()], agent_limits);
                    }
                    if let Ok(p) = limiter.acquire(&scopes, Some(TokenReservation::tokens(7))) {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        recorded.fetch_add(5, Ordering::SeqCst);
                        p.settle(Some(5));
                    }
                }
            });
        }
    });
    assert!(peak.load(Ordering::SeqCst) <= 7, "tenant concurrency held");
    let recorded = recorded.load(Ordering::SeqCst);
    assert!(recorded <= BUDGET);
    assert_eq!(limiter.usage_snapshot(&tenant).tokens_today, recorded);
    let per_agent: u64 = agents
        .iter()
        .map(|a| limiter.usage_snapshot(a).tokens_today)
        .sum();
    assert_eq!(
        per_agent, recorded,
        "each admission charged its agent exactly once"
    );
}
