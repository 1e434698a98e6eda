//! Eviction of idle scopes (the in-memory backend only: a shared backend expires its keys).

use crate::common::*;
use portcullis_limits::{LimitSettings, Limiter, ScopeKey};

#[tokio::test]
async fn sweep_evicts_idle_scopes_only() {
    let (clock, limiter) = limiter_at(NOON).await;
    let rpm = LimitSettings {
        rpm: Some(10),
        ..settings()
    };
    let daily = LimitSettings {
        tokens_per_day: Some(1_000_000),
        ..settings()
    };
    let idle = ScopeKey::agent("idle");
    let spender = ScopeKey::agent("spender");
    let busy = ScopeKey::agent("busy");
    let refunded = ScopeKey::agent("refunded");

    drop(plain(&limiter, &idle, &rpm).await.unwrap());
    llm(&limiter, &spender, &daily, 500)
        .await
        .unwrap()
        .settle(Some(400));
    let open = plain(&limiter, &busy, &rpm).await.unwrap();
    llm(&limiter, &refunded, &daily, 500)
        .await
        .unwrap()
        .settle(Some(0));
    assert_eq!(limiter.len(), 4);
    assert_eq!(limiter.sweep(), 0, "everything is fresh");

    clock.advance(secs(61));
    assert_eq!(limiter.sweep(), 2, "idle and refunded are forgotten");
    assert_eq!(limiter.len(), 2);
    assert_eq!(
        limiter.usage_snapshot(&spender).await.tokens_today,
        400,
        "today's spend is kept"
    );
    assert_eq!(limiter.usage_snapshot(&idle).await, Default::default());

    // After midnight the spender's counter means nothing any more.
    clock.advance(secs(12 * 3600));
    drop(open);
    assert_eq!(limiter.sweep(), 2);
    assert!(limiter.is_empty());

    // An evicted scope starts fresh with a full burst.
    let p = plain(&limiter, &idle, &rpm).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 9);
}

#[tokio::test]
async fn sweep_keeps_a_scope_whose_burst_is_still_refilling() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(1),
        ..settings()
    };
    drop(plain(&limiter, &key, &s).await.unwrap());
    clock.advance(secs(59));
    assert_eq!(limiter.sweep(), 0);
    assert!(
        plain(&limiter, &key, &s).await.is_err(),
        "eviction did not reset the limit"
    );
}
