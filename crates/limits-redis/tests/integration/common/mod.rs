//! The Redis backend for the limiter's shared test bodies (crates/limits/tests/integration):
//! a real Redis (`PORTCULLIS_TEST_REDIS_URL`, set up by scripts/test.sh), a unique key prefix
//! per limiter, and the injected manual clock sent with every call.
#![allow(dead_code, unreachable_pub)]

#[path = "../../../../limits/tests/integration/harness.rs"]
mod harness;

pub use harness::*;

use portcullis_core::ManualClock;
use portcullis_limits_redis::{OnRedisError, RedisLimiter, RedisSettings, TimeSource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where token counts saturate: 2^53 − 1, the largest integer a script computes with exactly.
pub const SATURATED: u64 = (1 << 53) - 1;

/// The Redis the tests use; a missing one fails the test with how to get one.
pub fn redis_url() -> String {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PORTCULLIS_TEST_REDIS_URL is not set: these tests need a Redis. Run them through \
             scripts/test.sh (it installs and starts a throwaway Redis), or start one and export \
             PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:PORT"
        ),
    }
}

/// A key prefix no other test (or earlier run) uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "test:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings on the manual `clock` with a unique prefix; a Redis failure refuses (so it shows).
pub fn test_settings(clock: &Arc<ManualClock>) -> RedisSettings {
    let mut s = RedisSettings::new(redis_url());
    s.prefix = unique_prefix();
    s.time = TimeSource::Clock(clock.clone());
    s.on_error = OnRedisError::Deny;
    // Leases in manual time: long enough that no test body's clock jumps expire them.
    s.lease = Duration::from_secs(30 * 86_400);
    s.timeout = Duration::from_secs(5);
    s
}

/// A fresh Redis limiter on a manual clock at `unix`.
pub async fn limiter_at(unix: u64) -> (Arc<ManualClock>, TestLimiter<RedisLimiter>) {
    let clock = Arc::new(ManualClock::at(unix));
    let limiter = RedisLimiter::start(test_settings(&clock), None)
        .await
        .expect("redis url");
    assert!(
        !limiter.is_degraded(),
        "Redis at PORTCULLIS_TEST_REDIS_URL does not answer"
    );
    (clock, TestLimiter(limiter))
}
