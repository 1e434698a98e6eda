//! Added latency per request of the Redis limiter, Redis on loopback: what the data plane
//! waits for (the slot on arrival, then the charge: two script round trips), a one-step
//! acquire, and a settlement round trip (which requests never wait for: it runs in the
//! background). The in-memory limiter's same steps for comparison. Prints p50/p99/max.
//!
//! `PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:PORT cargo bench -p portcullis-limits-redis`

use portcullis_limits::{
    LimitScopes, LimitSettings, Limiter, MemoryLimiter, ScopeKey, TokenReservation,
};
use portcullis_limits_redis::{RedisLimiter, RedisSettings};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5_000;

fn settings() -> LimitSettings {
    LimitSettings {
        rpm: Some(1 << 40),
        tpm: Some(1 << 50),
        tokens_per_day: Some(1 << 50),
        max_concurrent: Some(1 << 20),
        ..LimitSettings::default()
    }
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<48} p50 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs   ({} rounds)",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6,
        samples.len()
    );
}

async fn run(name: &str, limiter: &dyn Limiter) {
    let key = ScopeKey::agent("bench");
    let s = settings();
    let scopes = LimitScopes::agent(&key, &s);
    let reservation = Some(TokenReservation::tokens(1_000));
    // Warm up (script load, connection).
    for _ in 0..200 {
        if let Ok(p) = limiter.acquire(&scopes, reservation).await {
            p.settle(Some(600));
        }
    }
    limiter.flush().await;

    let mut on_path = Vec::with_capacity(ROUNDS);
    let mut one_step = Vec::with_capacity(ROUNDS);
    let mut settle = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let admission = limiter.admit(&scopes).await.expect("admitted");
        let permit = limiter
            .acquire_admitted(&scopes, reservation, admission)
            .await
            .expect("admitted");
        on_path.push(t.elapsed());
        let t = Instant::now();
        permit.settle(Some(600));
        limiter.flush().await;
        settle.push(t.elapsed());

        let t = Instant::now();
        let p = limiter
            .acquire(&scopes, reservation)
            .await
            .expect("admitted");
        one_step.push(t.elapsed());
        p.settle(Some(600));
    }
    limiter.flush().await;
    report(
        &format!("{name}: admit + acquire_admitted (per request)"),
        on_path,
    );
    report(&format!("{name}: acquire (one step)"), one_step);
    report(&format!("{name}: settle + flush (background)"), settle);
}

fn main() {
    let Ok(url) = std::env::var("PORTCULLIS_TEST_REDIS_URL") else {
        eprintln!(
            "PORTCULLIS_TEST_REDIS_URL is not set: start a Redis on loopback (scripts/test.sh \
             does) and export it to run this bench"
        );
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let memory = MemoryLimiter::new(Arc::new(portcullis_core::SystemClock));
        run("memory", &memory).await;
        let mut s = RedisSettings::new(url);
        s.prefix = format!("bench:{}:", std::process::id());
        let redis = RedisLimiter::start(s, None).await.expect("redis url");
        assert!(!redis.is_degraded(), "Redis does not answer");
        run("redis", &redis).await;
    });
}
