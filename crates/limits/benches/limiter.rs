//! Cost of a limiter check per request, alone and with two threads on one key. The answers
//! are taken with `into_ready` (what awaiting a ready `LimitFuture` costs: one branch).

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::SystemClock;
use portcullis_limits::{
    LimitScopes, LimitSettings, Limiter, MemoryLimiter, ScopeKey, TokenPrice, TokenReservation,
    Usage, Usd,
};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Limits high enough never to refuse, so every iteration takes the full admit path.
fn settings() -> LimitSettings {
    LimitSettings {
        rpm: Some(u64::MAX / 2),
        tpm: Some(u64::MAX / 2),
        tokens_per_day: Some(u64::MAX / 2),
        max_concurrent: Some(1_000_000),
        ..LimitSettings::default()
    }
}

fn limiter_with_keys(n: usize) -> MemoryLimiter {
    let limiter = MemoryLimiter::new(Arc::new(SystemClock));
    let s = LimitSettings::default();
    for i in 0..n {
        let key = ScopeKey::agent(&format!("agent_{i}"));
        drop(limiter.acquire_one(&key, &s, None).into_ready());
    }
    limiter
}

fn single_thread(c: &mut Criterion) {
    let limiter = limiter_with_keys(1_000);
    let key = ScopeKey::agent("agent_7");
    let tenant = ScopeKey::tenant("acme");
    let s = settings();
    let reservation = Some(TokenReservation::tokens(1_000));

    c.bench_function("acquire+drop, rpm+concurrency", |b| {
        b.iter(|| drop(black_box(limiter.acquire_one(&key, &s, None).into_ready())))
    });
    c.bench_function("acquire+settle, all four limits (LLM request)", |b| {
        b.iter(|| {
            if let Ok(Ok(p)) = limiter.acquire_one(&key, &s, reservation).into_ready() {
                p.settle(Some(black_box(600)));
            }
        })
    });
    let scopes = LimitScopes::agent(&key, &s).with_tenant(&tenant, &s);
    c.bench_function("acquire+settle, agent and tenant scopes", |b| {
        b.iter(|| {
            if let Ok(Ok(p)) = limiter.acquire(&scopes, reservation).into_ready() {
                p.settle(Some(black_box(600)));
            }
        })
    });
    // The same with dollar budgets: a priced reservation, settled with the cost of a usage.
    let dollars = LimitSettings {
        usd_per_day: Some(Usd::from_micros(u64::MAX / 4)),
        usd_per_month: Some(Usd::from_micros(u64::MAX / 4)),
        ..settings()
    };
    let price = TokenPrice {
        input: 2_500_000,
        cached_input: 1_250_000,
        output: 10_000_000,
        reasoning: 10_000_000,
    };
    let priced = reservation.map(|r| r.with_price(Some(price)));
    let usage = Usage::provider(400, 200, 100, 50);
    c.bench_function("acquire+settle_usage, all limits and dollar budgets", |b| {
        b.iter(|| {
            if let Ok(Ok(p)) = limiter.acquire_one(&key, &dollars, priced).into_ready() {
                p.settle_usage(Some(black_box(&usage)));
            }
        })
    });
    c.bench_function("usage_snapshot", |b| {
        b.iter(|| black_box(limiter.usage_snapshot(&key).into_ready()))
    });
}

/// Two threads hammer the same key; reports the mean time per acquire+settle per thread.
fn contention(c: &mut Criterion) {
    let limiter = Arc::new(limiter_with_keys(1_000));
    let key = ScopeKey::agent("agent_7");
    let s = settings();
    let reservation = Some(TokenReservation::tokens(1_000));
    c.bench_function("acquire+settle, 2 threads on one key (per op)", |b| {
        b.iter_custom(|iters| {
            let start = Arc::new(Barrier::new(2));
            let run = {
                let (limiter, key, s, start) =
                    (limiter.clone(), key.clone(), s.clone(), start.clone());
                move || {
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..iters {
                        if let Ok(Ok(p)) = limiter.acquire_one(&key, &s, reservation).into_ready() {
                            p.settle(Some(black_box(600)));
                        }
                    }
                    t.elapsed()
                }
            };
            let other = std::thread::spawn(run.clone());
            let mine = run();
            let theirs = other.join().unwrap_or(Duration::ZERO);
            // Both threads did `iters` operations concurrently: the slower one's wall time
            // per iteration is what each request pays.
            mine.max(theirs)
        })
    });
}

criterion_group!(benches, single_thread, contention);
criterion_main!(benches);
