//! Redis unreachable: each `on_redis_error` behaviour, the degraded state and its metrics.
//! (Redis stopped and restarted under a running gateway is tested end to end.)

use crate::common::*;
use portcullis_core::ManualClock;
use portcullis_limits::{LimitError, LimitKind, LimitSettings, Limiter, ScopeKey};
use portcullis_limits_redis::{OnRedisError, RedisLimiter, RedisMetrics, RedisSettings};
use std::sync::Arc;
use std::time::Duration;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn unreachable(on_error: OnRedisError) -> (RedisLimiter, RedisMetrics) {
    let clock = Arc::new(ManualClock::at(NOON));
    let mut s = RedisSettings::new(format!("redis://127.0.0.1:{}", closed_port()));
    s.prefix = unique_prefix();
    s.time = portcullis_limits_redis::TimeSource::Clock(clock);
    s.on_error = on_error;
    s.timeout = Duration::from_millis(200);
    let registry = prometheus::Registry::new();
    let metrics = RedisMetrics::register(&registry).unwrap();
    let limiter = RedisLimiter::start(s, Some(metrics.clone())).await.unwrap();
    (limiter, metrics)
}

fn rpm(n: u64) -> LimitSettings {
    LimitSettings {
        rpm: Some(n),
        ..LimitSettings::default()
    }
}

#[tokio::test]
async fn local_falls_back_to_per_replica_limits() {
    let (limiter, metrics) = unreachable(OnRedisError::Local).await;
    assert!(limiter.is_degraded());
    assert_eq!(metrics.degraded.get(), 1);
    assert!(metrics.errors.get() >= 1);
    let detail = limiter.degraded().unwrap();
    assert!(detail.contains("on_redis_error = local"), "{detail}");
    let key = ScopeKey::agent("bot");
    let s = rpm(2);
    let a = limiter.acquire_one(&key, &s, None).await.unwrap();
    assert_eq!(a.rate_info().map(|r| r.remaining), Some(1));
    let _b = limiter.acquire_one(&key, &s, None).await.unwrap();
    match limiter.acquire_one(&key, &s, None).await {
        Err(LimitError::Limited(r)) => assert_eq!(r.limit, LimitKind::Rpm),
        other => panic!("expected the local rpm refusal, got {other:?}"),
    }
    // Admission and charge, and the usage the policy sees, come from the local limiter.
    let admission = limiter
        .admit(&portcullis_limits::LimitScopes::agent(&key, &s))
        .await
        .unwrap();
    assert_eq!(admission.usage().requests_last_minute, 2);
    assert_eq!(limiter.usage_snapshot(&key).await.requests_last_minute, 2);
}

#[tokio::test]
async fn deny_refuses_as_unavailable() {
    let (limiter, metrics) = unreachable(OnRedisError::Deny).await;
    let key = ScopeKey::agent("bot");
    match limiter.acquire_one(&key, &rpm(100), None).await {
        Err(LimitError::Unavailable(why)) => {
            assert!(why.contains("on_redis_error = deny"), "{why}");
            assert!(why.contains("redis://127.0.0.1:"), "{why}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    let open = LimitSettings::default();
    let scopes = portcullis_limits::LimitScopes::agent(&key, &open);
    assert!(matches!(
        limiter.admit(&scopes).await,
        Err(LimitError::Unavailable(_))
    ));
    assert_eq!(metrics.degraded.get(), 1);
}

#[tokio::test]
async fn allow_admits_without_limits() {
    let (limiter, _metrics) = unreachable(OnRedisError::Allow).await;
    let key = ScopeKey::agent("bot");
    for _ in 0..5 {
        let p = limiter.acquire_one(&key, &rpm(1), None).await.unwrap();
        assert!(p.rate_info().is_none(), "no limit applied, no rate headers");
    }
    assert_eq!(limiter.usage_snapshot(&key).await, Default::default());
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_an_error_without_its_password() {
    let s = RedisSettings::new("redis://user:hunter2@[::1");
    let e = RedisLimiter::start(s, None).await.unwrap_err().to_string();
    assert!(e.starts_with("limits.redis_url"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
