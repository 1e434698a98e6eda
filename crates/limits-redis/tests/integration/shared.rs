//! What only a shared backend has: several limiters (replicas) on one budget, and leases that
//! come back when the process holding them dies.

use crate::common::*;
use portcullis_core::ManualClock;
use portcullis_limits::{
    LimitKind, LimitSettings, Limiter, ScopeKey, TokenPrice, TokenReservation, Usage, Usd,
};
use portcullis_limits_redis::RedisLimiter;
use std::sync::Arc;
use std::time::Duration;

async fn replica(settings: &portcullis_limits_redis::RedisSettings) -> TestLimiter<RedisLimiter> {
    TestLimiter(RedisLimiter::start(settings.clone(), None).await.unwrap())
}

#[tokio::test]
async fn three_replicas_share_one_rpm_budget_and_one_token_budget() {
    let clock = Arc::new(ManualClock::at(NOON));
    let settings = test_settings(&clock);
    let replicas = [
        replica(&settings).await,
        replica(&settings).await,
        replica(&settings).await,
    ];
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(30),
        ..LimitSettings::default()
    };
    let mut admitted = 0;
    for i in 0..90 {
        if replicas[i % 3].acquire_one(&key, &s, None).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 30, "exactly rpm across the replicas");
    let refused = replicas[1].acquire_one(&key, &s, None).await.unwrap_err();
    assert_eq!(
        (refused.limit, refused.retry_after_secs),
        (LimitKind::Rpm, 2)
    );

    let budget = LimitSettings {
        tpm: Some(1_000),
        ..LimitSettings::default()
    };
    let other = ScopeKey::agent("other");
    let a = replicas[0]
        .acquire_one(&other, &budget, Some(TokenReservation::tokens(600)))
        .await
        .unwrap();
    let r = replicas[2]
        .acquire_one(&other, &budget, Some(TokenReservation::tokens(600)))
        .await
        .unwrap_err();
    assert_eq!(r.limit, LimitKind::Tpm);
    a.settle(Some(100));
    replicas[0].flush().await;
    let b = replicas[2]
        .acquire_one(&other, &budget, Some(TokenReservation::tokens(600)))
        .await
        .unwrap();
    assert_eq!(b.rate_info().unwrap().remaining, 300);
    assert_eq!(replicas[1].usage_snapshot(&other).await.tokens_today, 700);
}

/// Dollar budgets are one budget for every replica: a reservation on one is seen by the
/// others, and its settlement (sent in the background) frees what the real cost did not use.
#[tokio::test]
async fn replicas_share_one_dollar_budget() {
    let clock = Arc::new(ManualClock::at(NOON));
    let settings = test_settings(&clock);
    let (a, b) = (replica(&settings).await, replica(&settings).await);
    let key = ScopeKey::agent("spender");
    let s = LimitSettings {
        usd_per_day: Some(Usd::from_micros(1_000)),
        usd_per_month: Some(Usd::from_micros(1_500)),
        ..LimitSettings::default()
    };
    // 1 µ$ per token: 600 tokens reserve 600 µ$.
    let price = TokenPrice {
        input: 1_000_000,
        cached_input: 1_000_000,
        output: 1_000_000,
        reasoning: 1_000_000,
    };
    let r = || Some(TokenReservation::tokens(600).with_price(Some(price)));
    let first = a.acquire_one(&key, &s, r()).await.unwrap();
    let refused = b.acquire_one(&key, &s, r()).await.unwrap_err();
    assert_eq!(
        (refused.limit, refused.requested),
        (LimitKind::UsdPerDay, 600)
    );
    first.settle_usage(Some(&Usage::provider(300, 0, 0, 0)));
    a.flush().await;
    let u = b.usage_snapshot(&key).await;
    assert_eq!(
        (u.usd_today, u.usd_month),
        (Usd::from_micros(300), Usd::from_micros(300))
    );
    b.acquire_one(&key, &s, r()).await.unwrap().settle(None);
    b.flush().await;
    // The next day: the daily budget is fresh, the month (1500 µ$) has 600 left.
    clock.advance(Duration::from_secs(86_400));
    let c = a.acquire_one(&key, &s, r()).await.unwrap();
    let month = b.acquire_one(&key, &s, r()).await.unwrap_err();
    assert_eq!(month.limit, LimitKind::UsdPerMonth);
    drop(c);
    a.flush().await;
    let u = a.usage_snapshot(&key).await;
    assert_eq!(
        (u.usd_today, u.usd_month),
        (Usd::from_micros(600), Usd::from_micros(1_500))
    );
}

#[tokio::test]
async fn the_slots_of_a_dead_replica_come_back_when_their_leases_expire() {
    let clock = Arc::new(ManualClock::at(NOON));
    let mut settings = test_settings(&clock);
    settings.lease = Duration::from_secs(10);
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        max_concurrent: Some(2),
        ..LimitSettings::default()
    };
    {
        // A replica takes both slots and dies without giving them back.
        let dying = replica(&settings).await;
        std::mem::forget(dying.acquire_one(&key, &s, None).await.unwrap());
        std::mem::forget(dying.acquire_one(&key, &s, None).await.unwrap());
    }
    let survivor = replica(&settings).await;
    let refused = survivor.acquire_one(&key, &s, None).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Concurrent);
    clock.advance(Duration::from_secs(9));
    assert!(
        survivor.acquire_one(&key, &s, None).await.is_err(),
        "still leased"
    );
    clock.advance(Duration::from_secs(2));
    let back = survivor.acquire_one(&key, &s, None).await.unwrap();
    let again = survivor.acquire_one(&key, &s, None).await.unwrap();
    drop((back, again));
}

#[tokio::test]
async fn a_live_replica_renews_its_leases() {
    let clock = Arc::new(ManualClock::at(NOON));
    let mut settings = test_settings(&clock);
    // Renewed every 100 ms of real time, each time to the manual clock's now + 1 s.
    settings.lease = Duration::from_millis(300);
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        max_concurrent: Some(1),
        ..LimitSettings::default()
    };
    let holder = replica(&settings).await;
    let other = replica(&settings).await;
    let held = holder.acquire_one(&key, &s, None).await.unwrap();
    for _ in 0..5 {
        // Past the lease as first granted; the holder keeps renewing it.
        clock.advance(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            other.acquire_one(&key, &s, None).await.unwrap_err().limit,
            LimitKind::Concurrent
        );
    }
    drop(held);
    holder.flush().await;
    assert!(other.acquire_one(&key, &s, None).await.is_ok());
}
