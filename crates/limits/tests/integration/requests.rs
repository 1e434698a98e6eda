//! Requests per minute (GCRA) and concurrency, with a manual clock.

use crate::common::*;
use portcullis_core::AgentLimits;
use portcullis_limits::{LimitKind, LimitSettings, Limiter, ScopeKey, ScopeKind};
use std::time::Duration;

#[tokio::test]
async fn rpm_admits_a_burst_of_n_then_refills_one_every_60_over_n() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(3),
        ..settings()
    };
    for (remaining, reset_in) in [(2, 20), (1, 40), (0, 60)] {
        let p = plain(&limiter, &key, &s).await.unwrap();
        let info = *p.rate_info().unwrap();
        assert_eq!(info.limit, LimitKind::Rpm);
        assert_eq!(info.limit_value, 3);
        assert_eq!(info.remaining, remaining);
        assert_eq!(
            info.reset_unix,
            NOON + reset_in,
            "full again after {reset_in} s"
        );
    }

    let refused = plain(&limiter, &key, &s).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Rpm);
    assert_eq!(refused.scope, ScopeKind::Agent);
    assert_eq!(refused.limit_value, 3);
    assert_eq!(refused.remaining, 0);
    assert_eq!(refused.retry_after_secs, 20);
    assert_eq!(refused.reset_unix, NOON + 60);
    assert!(!refused.never_fits);

    // Refusals consume nothing: still 20 s - 19 s = 1 s to wait, then exactly one fits.
    clock.advance(secs(19));
    assert_eq!(
        plain(&limiter, &key, &s)
            .await
            .unwrap_err()
            .retry_after_secs,
        1
    );
    clock.advance(Duration::from_millis(999));
    assert_eq!(
        plain(&limiter, &key, &s)
            .await
            .unwrap_err()
            .retry_after_secs,
        1
    );
    clock.advance(Duration::from_millis(1));
    let p = plain(&limiter, &key, &s).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 0);
    drop(p);
    assert_eq!(
        plain(&limiter, &key, &s)
            .await
            .unwrap_err()
            .retry_after_secs,
        20
    );

    // A full minute after the last admission the whole burst is back.
    clock.advance(secs(60));
    for remaining in (0..3).rev() {
        assert_eq!(
            plain(&limiter, &key, &s)
                .await
                .unwrap()
                .rate_info()
                .unwrap()
                .remaining,
            remaining
        );
    }
    assert!(plain(&limiter, &key, &s).await.is_err());
}

#[tokio::test]
async fn sub_second_intervals_report_retry_after_of_at_least_one_second() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("fast");
    let s = LimitSettings {
        rpm: Some(600), // one every 100 ms
        ..settings()
    };
    for _ in 0..600 {
        let _admitted = plain(&limiter, &key, &s).await.unwrap();
    }
    let refused = plain(&limiter, &key, &s).await.unwrap_err();
    assert_eq!(refused.retry_after_secs, 1);
    clock.advance(Duration::from_millis(100));
    assert!(plain(&limiter, &key, &s).await.is_ok());
    assert!(plain(&limiter, &key, &s).await.is_err());
}

#[tokio::test]
async fn concurrency_slot_is_released_on_success_error_and_abort() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        max_concurrent: Some(2),
        ..settings()
    };
    let a = plain(&limiter, &key, &s).await.unwrap();
    let b = plain(&limiter, &key, &s).await.unwrap();
    let refused = plain(&limiter, &key, &s).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Concurrent);
    assert_eq!(refused.limit_value, 2);
    assert_eq!(refused.retry_after_secs, 1);
    assert!(!refused.never_fits);

    // Success: settled with usage.
    a.settle(Some(10));
    let c = plain(&limiter, &key, &s).await.unwrap();
    assert!(plain(&limiter, &key, &s).await.is_err());

    // Error path: settled without usage.
    b.settle(None);
    let d = plain(&limiter, &key, &s).await.unwrap();
    assert!(plain(&limiter, &key, &s).await.is_err());

    // Client abort: the permit is just dropped.
    drop(c);
    let e = plain(&limiter, &key, &s).await.unwrap();
    assert!(plain(&limiter, &key, &s).await.is_err());

    drop((d, e));
    let _f = plain(&limiter, &key, &s).await.unwrap();
    let _g = plain(&limiter, &key, &s).await.unwrap();
}

#[tokio::test]
async fn concurrency_is_counted_even_while_unlimited() {
    // Requests admitted while no concurrency limit applied still hold slots once one is set.
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let open = settings();
    let limited = LimitSettings {
        max_concurrent: Some(2),
        ..settings()
    };
    let a = plain(&limiter, &key, &open).await.unwrap();
    let b = plain(&limiter, &key, &open).await.unwrap();
    assert_eq!(
        plain(&limiter, &key, &limited).await.unwrap_err().limit,
        LimitKind::Concurrent
    );
    drop(a);
    let _c = plain(&limiter, &key, &limited).await.unwrap();
    drop(b);
}

#[tokio::test]
async fn overrides_apply_to_the_next_request() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let defaults = LimitSettings {
        rpm: Some(2),
        max_concurrent: Some(10),
        ..settings()
    };
    let mut held = Vec::new();
    held.push(plain(&limiter, &key, &defaults).await.unwrap());
    held.push(plain(&limiter, &key, &defaults).await.unwrap());
    assert!(plain(&limiter, &key, &defaults).await.is_err());

    // `portcullis agent set --rpm 5`: the agent's next request sees 5.
    let raised = defaults.with_overrides(&AgentLimits {
        rpm: Some(5),
        ..AgentLimits::default()
    });
    for remaining in (0..3).rev() {
        let p = plain(&limiter, &key, &raised).await.unwrap();
        assert_eq!(p.rate_info().unwrap().limit_value, 5);
        assert_eq!(p.rate_info().unwrap().remaining, remaining);
        held.push(p);
    }
    assert!(plain(&limiter, &key, &raised).await.is_err());

    // Lowering max_concurrent below the requests in flight refuses the next one.
    let lowered = raised.with_overrides(&AgentLimits {
        rpm: Some(1000),
        max_concurrent: Some(5),
        ..AgentLimits::default()
    });
    let refused = plain(&limiter, &key, &lowered).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Concurrent);
    assert_eq!(refused.limit_value, 5);
    held.pop();
    assert!(plain(&limiter, &key, &lowered).await.is_ok());
}

#[tokio::test]
async fn zero_limits_refuse_without_panicking() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    for s in [
        LimitSettings {
            rpm: Some(0),
            ..settings()
        },
        LimitSettings {
            max_concurrent: Some(0),
            ..settings()
        },
    ] {
        let refused = plain(&limiter, &key, &s).await.unwrap_err();
        assert!(refused.never_fits, "{refused:?}");
        assert!(refused.retry_after_secs >= 1);
        assert!(refused.detail().contains("never"));
    }
    // Nothing was charged by the refusals.
    assert_eq!(limiter.usage_snapshot(&key).await.requests_last_minute, 0);
}

#[tokio::test]
async fn unlimited_settings_admit_everything_without_rate_info() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("free");
    let s = settings();
    for _ in 0..1000 {
        let p = llm(&limiter, &key, &s, 1_000_000).await.unwrap();
        assert!(p.rate_info().is_none());
    }
    assert_eq!(
        limiter.usage_snapshot(&key).await.requests_last_minute,
        1000
    );
    assert_eq!(
        limiter.usage_snapshot(&key).await.tokens_today,
        1_000_000_000
    );
}

#[tokio::test]
async fn requests_last_minute_counts_admitted_requests_only() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(5),
        ..settings()
    };
    for _ in 0..8 {
        let _ = plain(&limiter, &key, &s).await;
    }
    assert_eq!(limiter.usage_snapshot(&key).await.requests_last_minute, 5);
    clock.advance(secs(30));
    let _ = plain(&limiter, &key, &s).await.unwrap();
    assert_eq!(limiter.usage_snapshot(&key).await.requests_last_minute, 6);
    clock.advance(secs(31));
    assert_eq!(
        limiter.usage_snapshot(&key).await.requests_last_minute,
        1,
        "the first five expired after 61 s"
    );
    assert_eq!(
        limiter.usage_snapshot(&ScopeKey::agent("unknown")).await,
        Default::default()
    );
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let shared: TestLimiter<std::sync::Arc<dyn Limiter>> =
        TestLimiter(std::sync::Arc::new(limiter.0));
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(1),
        ..settings()
    };
    let p = shared.acquire_one(&key, &s, None).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 0);
    assert_eq!(
        shared.acquire_one(&key, &s, None).await.unwrap_err().limit,
        LimitKind::Rpm
    );
    drop(p);
    assert_eq!(shared.sweep(), 0, "the rpm burst is still refilling");
}
