//! Concurrent requests against one budget: the budget is never overshot. Tasks run on a
//! multi-threaded runtime and start together at a barrier.

use crate::common::*;
use portcullis_limits::{
    LimitKind, LimitScopes, LimitSettings, Limiter, ScopeKey, TokenReservation,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Barrier;

const TASKS: u64 = 50;
const BUDGET: u64 = 10_000;
const RESERVE: u64 = 1_000;

/// 50 streams start together and stay open until every one has been admitted or refused:
/// exactly budget / reservation get through, and what they record stays within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_streams_never_overshoot_the_minute_budget() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let limiter = Arc::new(limiter);
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        tpm: Some(BUDGET),
        ..settings()
    };
    let start = Arc::new(Barrier::new(TASKS as usize));
    let decided = Arc::new(Barrier::new(TASKS as usize));
    let admitted = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (limiter, key, s) = (limiter.clone(), key.clone(), s.clone());
        let (start, decided) = (start.clone(), decided.clone());
        let (admitted, recorded) = (admitted.clone(), recorded.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let result = limiter
                .acquire_one(&key, &s, Some(TokenReservation::tokens(RESERVE)))
                .await;
            decided.wait().await;
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
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), BUDGET / RESERVE);
    let recorded = recorded.load(Ordering::SeqCst);
    assert!(recorded <= BUDGET, "{recorded} > {BUDGET}");
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, recorded);
}

/// Streams that settle as soon as they are admitted free capacity for later ones; the sum of
/// recorded usage still never exceeds the budget, and the counters agree with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_settling_streams_never_overshoot_the_minute_budget() {
    for round in 0..10u64 {
        let (_clock, limiter) = limiter_at(NOON).await;
        let limiter = Arc::new(limiter);
        let key = ScopeKey::agent("bot");
        let s = LimitSettings {
            tpm: Some(BUDGET),
            tokens_per_day: Some(BUDGET * 2),
            ..settings()
        };
        let start = Arc::new(Barrier::new(TASKS as usize));
        let recorded = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (limiter, key, s) = (limiter.clone(), key.clone(), s.clone());
            let (start, recorded) = (start.clone(), recorded.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let reserve = 500 + (i * 97 + round) % 1_500;
                let r = Some(TokenReservation::tokens(reserve));
                if let Ok(permit) = limiter.acquire_one(&key, &s, r).await {
                    let used = (reserve * (i % 4)) / 4;
                    recorded.fetch_add(used, Ordering::SeqCst);
                    permit.settle(Some(used));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let recorded = recorded.load(Ordering::SeqCst);
        assert!(recorded <= BUDGET, "round {round}: {recorded} > {BUDGET}");
        assert_eq!(
            limiter.usage_snapshot(&key).await.tokens_today,
            recorded,
            "round {round}"
        );
    }
}

/// Overlapping scope sets (a shared tenant, per-agent keys, in different argument orders)
/// neither deadlock nor overshoot the shared budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_scopes_under_contention() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let limiter = Arc::new(limiter);
    let tenant = ScopeKey::tenant("acme");
    let agents: Arc<Vec<ScopeKey>> = Arc::new(
        (0..5)
            .map(|i| ScopeKey::agent(&format!("agent_{i}")))
            .collect(),
    );
    let subs: Arc<Vec<ScopeKey>> = Arc::new(
        (0..5)
            .map(|i| ScopeKey::subagent("agent_0", &format!("s{i}")))
            .collect(),
    );
    let tenant_limits = LimitSettings {
        tpm: Some(BUDGET),
        max_concurrent: Some(7),
        ..settings()
    };
    let agent_limits = LimitSettings {
        max_concurrent: Some(3),
        ..settings()
    };
    let in_flight = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (limiter, tenant, agents, subs) = (
            limiter.clone(),
            tenant.clone(),
            agents.clone(),
            subs.clone(),
        );
        let (tenant_limits, agent_limits) = (tenant_limits.clone(), agent_limits.clone());
        let (in_flight, peak, recorded) = (in_flight.clone(), peak.clone(), recorded.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..200usize {
                let agent = &agents[(t + n) % agents.len()];
                let mut scopes =
                    LimitScopes::agent(agent, &agent_limits).with_tenant(&tenant, &tenant_limits);
                if n % 3 == 0 {
                    scopes = scopes.with_subagent(&subs[n % subs.len()], &agent_limits);
                }
                if let Ok(p) = limiter
                    .acquire(&scopes, Some(TokenReservation::tokens(7)))
                    .await
                {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    recorded.fetch_add(5, Ordering::SeqCst);
                    p.settle(Some(5));
                    // The slot goes back with the settlement: wait for it so the next
                    // request sees it free (a shared backend settles in the background).
                    limiter.flush().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 7, "tenant concurrency held");
    let recorded = recorded.load(Ordering::SeqCst);
    assert!(recorded <= BUDGET);
    assert_eq!(limiter.usage_snapshot(&tenant).await.tokens_today, recorded);
    let mut per_agent = 0;
    for a in agents.iter() {
        per_agent += limiter.usage_snapshot(a).await.tokens_today;
    }
    assert_eq!(
        per_agent, recorded,
        "each admission charged its agent exactly once"
    );
}
