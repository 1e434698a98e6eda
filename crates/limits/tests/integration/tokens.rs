//! Token budgets: reservation, settlement, the minute window and the daily rollover.

use crate::common::*;
use portcullis_limits::{LimitKind, LimitSettings, ScopeKey, TokenReservation, UtcOffset};

fn budget(tpm: Option<u64>, per_day: Option<u64>) -> LimitSettings {
    LimitSettings {
        tpm,
        tokens_per_day: per_day,
        ..settings()
    }
}

#[tokio::test]
async fn reservation_and_settlement_arithmetic() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = budget(Some(10_000), Some(100_000));

    let p = llm(&limiter, &key, &s, 3_000).await.unwrap();
    assert_eq!(p.reserved_tokens(), 3_000);
    let info = *p.rate_info().unwrap();
    assert_eq!(info.limit, LimitKind::Tpm, "70% left beats 97% left");
    assert_eq!(info.remaining, 7_000);
    assert_eq!(info.reset_unix, NOON + 61);
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 3_000);

    // Settling releases the difference.
    p.settle(Some(1_200));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 1_200);

    // Exactly the rest of the minute budget fits, then nothing.
    let p = llm(&limiter, &key, &s, 8_800).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 0);
    let refused = llm(&limiter, &key, &s, 1).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Tpm);
    assert_eq!(refused.limit_value, 10_000);
    assert_eq!(refused.requested, 1);
    assert_eq!(refused.remaining, 0);
    assert_eq!(refused.retry_after_secs, 61);
    assert!(!refused.never_fits);

    // Usage above the reservation (the estimate was low) is charged in full.
    p.settle(Some(9_000));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 10_200);

    // A request without reservation (not an LLM call) is not held back by token budgets.
    let plain_permit = plain(&limiter, &key, &s).await.unwrap();
    assert_eq!(plain_permit.reserved_tokens(), 0);
    assert!(plain_permit.rate_info().is_none());
}

#[tokio::test]
async fn missing_usage_and_abort_keep_the_full_reservation() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = budget(Some(10_000), None);

    llm(&limiter, &key, &s, 3_000).await.unwrap().settle(None);
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 3_000);

    drop(llm(&limiter, &key, &s, 4_000).await.unwrap());
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 7_000);

    let refused = llm(&limiter, &key, &s, 3_001).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Tpm);
    llm(&limiter, &key, &s, 3_000)
        .await
        .unwrap()
        .settle(Some(0));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 7_000);
}

#[tokio::test]
async fn estimate_from_body_size_and_default_max_tokens() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        tpm: Some(10_000),
        default_max_tokens: 4_096,
        ..settings()
    };
    // No max_tokens: 4096 + ceil(1001 / 4) = 4096 + 251.
    let r = TokenReservation::estimate(&s, None, 1_001);
    let p = limiter.acquire_one(&key, &s, Some(r)).await.unwrap();
    assert_eq!(p.reserved_tokens(), 4_347);
    assert_eq!(p.rate_info().unwrap().remaining, 10_000 - 4_347);
}

#[tokio::test]
async fn a_reservation_larger_than_the_budget_can_never_fit() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");

    let refused = llm(&limiter, &key, &budget(Some(1_000), None), 1_001)
        .await
        .unwrap_err();
    assert_eq!(refused.limit, LimitKind::Tpm);
    assert!(refused.never_fits);
    assert_eq!(refused.requested, 1_001);
    assert!(refused.retry_after_secs >= 1);
    let detail = refused.detail();
    assert!(
        detail.contains("never") && detail.contains("1001"),
        "{detail}"
    );

    let refused = llm(&limiter, &key, &budget(None, Some(500)), 501)
        .await
        .unwrap_err();
    assert_eq!(refused.limit, LimitKind::TokensPerDay);
    assert!(refused.never_fits);

    // Never-fits outranks a refusal that would clear later.
    let s = LimitSettings {
        rpm: Some(1),
        ..budget(Some(1_000), None)
    };
    let _first = llm(&limiter, &key, &s, 10).await.unwrap();
    let refused = llm(&limiter, &key, &s, 5_000).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::Tpm);
    assert!(refused.never_fits);
}

#[tokio::test]
async fn minute_window_frees_tokens_61_buckets_after_they_were_charged() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = budget(Some(1_000), None);

    llm(&limiter, &key, &s, 600)
        .await
        .unwrap()
        .settle(Some(600));
    clock.advance(secs(30));
    llm(&limiter, &key, &s, 400)
        .await
        .unwrap()
        .settle(Some(400));
    clock.advance(secs(10));
    // Needs 500: the 600 of second 0 must expire first, at NOON + 61.
    let refused = llm(&limiter, &key, &s, 500).await.unwrap_err();
    assert_eq!(refused.retry_after_secs, 21);
    assert_eq!(
        refused.reset_unix,
        NOON + 30 + 61,
        "fully free when the last charge expires"
    );
    clock.advance(secs(20));
    assert_eq!(
        llm(&limiter, &key, &s, 500)
            .await
            .unwrap_err()
            .retry_after_secs,
        1
    );
    clock.advance(secs(1));
    let p = llm(&limiter, &key, &s, 500).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 100);
}

#[tokio::test]
async fn no_60_second_interval_exceeds_the_minute_budget() {
    // Admit greedily every 250 ms for five minutes and check every 60 s interval.
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = budget(Some(1_000), None);
    let mut admitted: Vec<(u64, u64)> = Vec::new(); // (ms since start, tokens)
    for step in 0..1_200u64 {
        let tokens = 90 + (step * 37) % 200;
        if let Ok(p) = llm(&limiter, &key, &s, tokens).await {
            admitted.push((step * 250, tokens));
            p.settle(Some(tokens));
        }
        clock.advance(std::time::Duration::from_millis(250));
    }
    assert!(
        admitted.len() >= 20,
        "the window lets traffic through: {}",
        admitted.len()
    );
    for &(start, _) in &admitted {
        let in_window: u64 = admitted
            .iter()
            .filter(|(t, _)| *t >= start && *t <= start + 60_000)
            .map(|(_, n)| n)
            .sum();
        assert!(
            in_window <= 1_000,
            "{in_window} tokens in the 60 s from {start} ms"
        );
    }
}

#[tokio::test]
async fn day_rolls_over_at_utc_midnight() {
    let (clock, limiter) = limiter_at(MIDNIGHT + 86_400 - 10).await;
    let key = ScopeKey::agent("bot");
    let s = budget(None, Some(1_000));

    llm(&limiter, &key, &s, 1_000)
        .await
        .unwrap()
        .settle(Some(1_000));
    let refused = llm(&limiter, &key, &s, 1).await.unwrap_err();
    assert_eq!(refused.limit, LimitKind::TokensPerDay);
    assert_eq!(refused.retry_after_secs, 10);
    assert_eq!(refused.reset_unix, MIDNIGHT + 86_400);

    // A reservation opened before midnight and settled after refunds nothing to the new day.
    clock.advance(secs(9));
    assert!(llm(&limiter, &key, &s, 1).await.is_err());
    clock.advance(secs(1));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 0);
    let p = llm(&limiter, &key, &s, 1_000).await.unwrap();
    assert_eq!(p.rate_info().unwrap().reset_unix, MIDNIGHT + 2 * 86_400);
    assert_eq!(p.rate_info().unwrap().remaining, 0);
    p.settle(Some(250));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 250);
}

#[tokio::test]
async fn settlement_after_midnight_does_not_refund_into_the_new_day() {
    let (clock, limiter) = limiter_at(MIDNIGHT + 86_400 - 1).await;
    let key = ScopeKey::agent("bot");
    let s = budget(None, Some(1_000));
    let late = llm(&limiter, &key, &s, 800).await.unwrap();
    clock.advance(secs(2));
    llm(&limiter, &key, &s, 300)
        .await
        .unwrap()
        .settle(Some(300));
    late.settle(Some(0));
    assert_eq!(
        limiter.usage_snapshot(&key).await.tokens_today,
        300,
        "yesterday's refund must not lower today's counter"
    );
}

#[tokio::test]
async fn day_rolls_over_at_a_configured_offset() {
    for (offset, local_midnight) in [
        ("+02:00", MIDNIGHT + 86_400 - 2 * 3600),
        ("-05:30", MIDNIGHT + 5 * 3600 + 1800),
    ] {
        let s = LimitSettings {
            tokens_per_day: Some(1_000),
            day_reset_offset: offset.parse::<UtcOffset>().unwrap(),
            ..settings()
        };
        let (clock, limiter) = limiter_at(local_midnight - 5).await;
        let key = ScopeKey::agent("bot");
        llm(&limiter, &key, &s, 1_000).await.unwrap().settle(None);
        let refused = llm(&limiter, &key, &s, 1).await.unwrap_err();
        assert_eq!(refused.reset_unix, local_midnight, "{offset}");
        assert_eq!(refused.retry_after_secs, 5, "{offset}");
        clock.advance(secs(4));
        assert!(llm(&limiter, &key, &s, 1).await.is_err(), "{offset}");
        clock.advance(secs(1));
        let p = llm(&limiter, &key, &s, 1_000).await.unwrap();
        assert_eq!(p.rate_info().unwrap().reset_unix, local_midnight + 86_400);
    }
}

#[tokio::test]
async fn utc_midnight_is_not_a_reset_under_an_offset() {
    let s = LimitSettings {
        tokens_per_day: Some(1_000),
        day_reset_offset: "+02:00".parse().unwrap(),
        ..settings()
    };
    let (clock, limiter) = limiter_at(MIDNIGHT - 60).await;
    let key = ScopeKey::agent("bot");
    llm(&limiter, &key, &s, 1_000).await.unwrap().settle(None);
    clock.advance(secs(120));
    let refused = llm(&limiter, &key, &s, 1).await.unwrap_err();
    assert_eq!(refused.reset_unix, MIDNIGHT + 22 * 3600);
}

#[tokio::test]
async fn token_refusal_charges_nothing_else() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(3),
        max_concurrent: Some(1),
        ..budget(Some(1_000), Some(5_000))
    };
    // Refused by tpm: no request, no slot, no tokens charged.
    for _ in 0..10 {
        assert_eq!(
            llm(&limiter, &key, &s, 2_000).await.unwrap_err().limit,
            LimitKind::Tpm
        );
    }
    assert_eq!(limiter.usage_snapshot(&key).await, Default::default());

    // Refused by rpm (after 3): the tokens of the refused requests are not charged either.
    for _ in 0..3 {
        llm(&limiter, &key, &s, 100)
            .await
            .unwrap()
            .settle(Some(100));
    }
    assert_eq!(
        llm(&limiter, &key, &s, 100).await.unwrap_err().limit,
        LimitKind::Rpm
    );
    let usage = limiter.usage_snapshot(&key).await;
    assert_eq!((usage.requests_last_minute, usage.tokens_today), (3, 300));

    // Refused by concurrency: the rpm budget is untouched.
    clock.advance(secs(60));
    let held = llm(&limiter, &key, &s, 100).await.unwrap();
    assert_eq!(held.rate_info().map(|r| r.limit), Some(LimitKind::Tpm));
    assert_eq!(
        llm(&limiter, &key, &s, 100).await.unwrap_err().limit,
        LimitKind::Concurrent
    );
    drop(held);
    let p = llm(&limiter, &key, &s, 100).await.unwrap();
    let usage = limiter.usage_snapshot(&key).await;
    assert_eq!(usage.tokens_today, 500);
    drop(p);
}

#[tokio::test]
async fn huge_reservations_saturate_instead_of_overflowing() {
    let (clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let open = settings();
    llm(&limiter, &key, &open, u64::MAX)
        .await
        .unwrap()
        .settle(None);
    llm(&limiter, &key, &open, u64::MAX)
        .await
        .unwrap()
        .settle(Some(u64::MAX));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, SATURATED);

    let other = ScopeKey::agent("other");
    let max = budget(Some(u64::MAX), Some(u64::MAX));
    let p = llm(&limiter, &other, &max, u64::MAX).await.unwrap();
    assert_eq!(p.rate_info().unwrap().remaining, 0);
    let refused = llm(&limiter, &other, &max, 1).await.unwrap_err();
    assert!(!refused.never_fits);
    p.settle(Some(0));
    assert!(llm(&limiter, &other, &max, 1).await.is_ok());
    clock.advance(secs(86_400));
    assert_eq!(limiter.usage_snapshot(&key).await.tokens_today, 0);
}
