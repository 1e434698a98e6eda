//! Dollar budgets: the worst-case cost reserved, settled with the real cost, the daily and
//! monthly rollovers, unpriced models, and concurrent reservations that never overshoot.

use crate::common::*;
use portcullis_limits::{
    LimitKind, LimitScopes, LimitSettings, ScopeKey, ScopeKind, TokenPrice, TokenReservation,
    Usage, Usd, UtcOffset,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

/// $1 per million input and output tokens: one micro-dollar per token.
const PRICE: TokenPrice = TokenPrice {
    input: 1_000_000,
    cached_input: 500_000,
    output: 1_000_000,
    reasoning: 3_000_000,
};

/// 2026-11-30T12:00:00Z: the last day of November.
const END_OF_NOVEMBER: u64 = 1_796_040_000;

fn usd(micros: u64) -> Usd {
    Usd::from_micros(micros)
}

fn dollars(per_day: Option<u64>, per_month: Option<u64>) -> LimitSettings {
    LimitSettings {
        usd_per_day: per_day.map(usd),
        usd_per_month: per_month.map(usd),
        ..settings()
    }
}

/// A priced reservation of `prompt` prompt tokens and `output` output tokens: worst case
/// `prompt + 3 × output` µ$ (reasoning is the dearer output price).
fn priced(prompt: u64, output: u64) -> Option<TokenReservation> {
    let s = LimitSettings {
        chars_per_token: 1,
        ..LimitSettings::default()
    };
    Some(TokenReservation::estimate(&s, Some(output), prompt).with_price(Some(PRICE)))
}

#[tokio::test]
async fn the_worst_case_is_reserved_and_the_real_cost_settled() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = dollars(Some(10_000), Some(1_000_000));

    // 1000 prompt + 1000 output at the reasoning price: 4000 µ$ reserved.
    let p = limiter
        .acquire_one(&key, &s, priced(1_000, 1_000))
        .await
        .unwrap();
    let u = limiter.usage_snapshot(&key).await;
    assert_eq!((u.usd_today, u.usd_month), (usd(4_000), usd(4_000)));
    assert!(
        p.rate_info().is_none(),
        "dollar budgets set no X-RateLimit headers"
    );

    // The real usage: 900 input (400 cached), 300 output (100 reasoning):
    // 500 + 400 × 0.5 + 200 + 100 × 3 = 1200 µ$.
    p.settle_usage(Some(&Usage::provider(900, 300, 400, 100)));
    let u = limiter.usage_snapshot(&key).await;
    assert_eq!((u.usd_today, u.usd_month), (usd(1_200), usd(1_200)));
    assert_eq!(u.tokens_today, 1_200, "the tokens are settled too");

    // Missing or truncated usage keeps the whole reservation; so does an abort.
    let p = limiter
        .acquire_one(&key, &s, priced(100, 100))
        .await
        .unwrap();
    p.settle_usage(Some(&Usage::missing(false)));
    let p2 = limiter
        .acquire_one(&key, &s, priced(100, 100))
        .await
        .unwrap();
    let mut truncated = Usage::provider(10, 10, 0, 0);
    truncated.truncated = true;
    p2.settle_usage(Some(&truncated));
    drop(
        limiter
            .acquire_one(&key, &s, priced(100, 100))
            .await
            .unwrap(),
    );
    assert_eq!(
        limiter.usage_snapshot(&key).await.usd_today,
        usd(1_200 + 3 * 400)
    );

    // Nothing billed (the upstream could not be reached): everything back.
    let p = limiter
        .acquire_one(&key, &s, priced(100, 100))
        .await
        .unwrap();
    p.settle(Some(0));
    assert_eq!(limiter.usage_snapshot(&key).await.usd_today, usd(2_400));

    // A cost above the reservation is charged in full.
    let p = limiter.acquire_one(&key, &s, priced(10, 10)).await.unwrap();
    p.settle_usage(Some(&Usage::provider(1_000, 0, 0, 0)));
    assert_eq!(limiter.usage_snapshot(&key).await.usd_today, usd(3_400));
}

#[tokio::test]
async fn a_request_that_does_not_fit_is_refused_with_the_budget_it_hit() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = dollars(Some(5_000), None);

    let p = limiter
        .acquire_one(&key, &s, priced(1_000, 1_000))
        .await
        .unwrap();
    let refused = limiter
        .acquire_one(&key, &s, priced(1_000, 1))
        .await
        .unwrap_err();
    assert_eq!(refused.limit, LimitKind::UsdPerDay);
    assert_eq!(refused.limit_value, 5_000);
    assert_eq!(refused.requested, 1_003);
    assert_eq!(refused.retry_after_secs, 12 * 3600, "until midnight");
    assert_eq!(refused.reset_unix, MIDNIGHT + 86_400);
    assert!(!refused.never_fits && !refused.unpriced);
    assert!(refused.detail().contains("$0.005"), "{}", refused.detail());
    // Settling the first frees room.
    p.settle_usage(Some(&Usage::provider(100, 100, 0, 0)));
    drop(
        limiter
            .acquire_one(&key, &s, priced(1_000, 1))
            .await
            .unwrap(),
    );

    // More than the whole budget: never fits.
    let never = limiter
        .acquire_one(&key, &s, priced(6_000, 0))
        .await
        .unwrap_err();
    assert!(never.never_fits, "{never:?}");
    // A request that is not an LLM call is not held back by dollar budgets.
    drop(limiter.acquire_one(&key, &s, None).await.unwrap());
}

#[tokio::test]
async fn an_unpriced_model_is_refused_only_where_a_dollar_budget_applies() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let (agent, tenant) = (ScopeKey::agent("bot"), ScopeKey::tenant("acme"));
    let free = settings();
    let capped = dollars(None, Some(1_000_000));
    let unpriced = Some(TokenReservation::tokens(100));

    // No dollar budget: admitted and counted in tokens only.
    let p = limiter.acquire_one(&agent, &free, unpriced).await.unwrap();
    p.settle(Some(50));
    let u = limiter.usage_snapshot(&agent).await;
    assert_eq!((u.tokens_today, u.usd_today), (50, Usd::ZERO));

    // The tenant has a monthly budget: refused, nothing charged anywhere.
    let scopes = LimitScopes::agent(&agent, &free).with_tenant(&tenant, &capped);
    let r = limiter.acquire(&scopes, unpriced).await.unwrap_err();
    assert_eq!(
        (r.limit, r.scope, r.unpriced, r.never_fits),
        (LimitKind::UsdPerMonth, ScopeKind::Tenant, true, true)
    );
    assert!(r.detail().contains("[[llm.prices]]"), "{}", r.detail());
    assert_eq!(limiter.usage_snapshot(&agent).await.requests_last_minute, 1);
    // Priced, the same request is admitted and charged to both scopes.
    let p = limiter.acquire(&scopes, priced(10, 10)).await.unwrap();
    p.settle_usage(Some(&Usage::provider(10, 10, 0, 0)));
    assert_eq!(limiter.usage_snapshot(&tenant).await.usd_month, usd(20));
    assert_eq!(limiter.usage_snapshot(&agent).await.usd_month, usd(20));
}

#[tokio::test]
async fn the_day_resets_at_midnight_and_the_month_on_the_first() {
    let (clock, limiter) = limiter_at(END_OF_NOVEMBER).await;
    let key = ScopeKey::agent("bot");
    let s = dollars(Some(3_000), Some(5_000));

    limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap()
        .settle(None);
    let r = limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap_err();
    assert_eq!(r.limit, LimitKind::UsdPerDay);

    // December 1st: a new day and a new month.
    clock.advance(Duration::from_secs(12 * 3600));
    let u = limiter.usage_snapshot(&key).await;
    assert_eq!((u.usd_today, u.usd_month), (Usd::ZERO, Usd::ZERO));
    limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap()
        .settle(None);
    // December 2nd: the day is new, the month still counts.
    clock.advance(Duration::from_secs(86_400));
    limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap()
        .settle(None);
    let r = limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap_err();
    assert_eq!(r.limit, LimitKind::UsdPerMonth);
    assert_eq!(r.limit_value, 5_000);
    // 2027-01-01T00:00:00Z, the next month.
    assert_eq!(r.reset_unix, 1_798_761_600);
    let u = limiter.usage_snapshot(&key).await;
    assert_eq!((u.usd_today, u.usd_month), (usd(2_000), usd(4_000)));
}

#[tokio::test]
async fn the_month_follows_the_day_reset_offset() {
    // 2026-11-30T22:00Z is December 1st at +03:00.
    let (_clock, limiter) = limiter_at(END_OF_NOVEMBER + 10 * 3600).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        day_reset_offset: "+03:00".parse::<UtcOffset>().unwrap(),
        ..dollars(None, Some(1_000))
    };
    let r = limiter
        .acquire_one(&key, &s, priced(2_000, 0))
        .await
        .unwrap_err();
    // The month ends at 2026-12-31T21:00Z.
    assert_eq!(r.reset_unix, 1_798_750_800);
}

/// A settlement after the day rolled over refunds nothing to the new day (but the month,
/// still the same, gets its refund).
#[tokio::test]
async fn a_late_settlement_refunds_only_the_periods_it_was_charged_to() {
    let (clock, limiter) = limiter_at(MIDNIGHT + 86_400 - 10).await;
    let key = ScopeKey::agent("bot");
    let s = dollars(Some(100_000), Some(100_000));
    let p = limiter
        .acquire_one(&key, &s, priced(1_000, 0))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));
    p.settle_usage(Some(&Usage::provider(100, 0, 0, 0)));
    let u = limiter.usage_snapshot(&key).await;
    assert_eq!((u.usd_today, u.usd_month), (Usd::ZERO, usd(100)));
}

/// Many streams reserve at once against a small daily budget: the sum of what they settle
/// never exceeds it, and the counter agrees with the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_priced_streams_never_overshoot_the_daily_budget() {
    const TASKS: u64 = 40;
    const BUDGET: u64 = 20_000;
    for round in 0..5u64 {
        let (_clock, limiter) = limiter_at(NOON).await;
        let limiter = Arc::new(limiter);
        let key = ScopeKey::agent("bot");
        let s = dollars(Some(BUDGET), None);
        let start = Arc::new(Barrier::new(TASKS as usize));
        let spent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (limiter, key, s) = (limiter.clone(), key.clone(), s.clone());
            let (start, spent) = (start.clone(), spent.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let out = 200 + (i * 37 + round) % 600;
                if let Ok(permit) = limiter.acquire_one(&key, &s, priced(500, out)).await {
                    // Used: the whole prompt and a share of the output, no reasoning.
                    let used_out = out * (i % 4) / 4;
                    spent.fetch_add(500 + used_out, Ordering::SeqCst);
                    permit.settle_usage(Some(&Usage::provider(500, used_out, 0, 0)));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let spent = spent.load(Ordering::SeqCst);
        assert!(spent <= BUDGET, "round {round}: {spent} > {BUDGET}");
        assert_eq!(
            limiter.usage_snapshot(&key).await.usd_today,
            usd(spent),
            "round {round}"
        );
    }
}
