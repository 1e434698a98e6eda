//! Several scopes per request (tenant, agent, sub-agent) and eviction of idle scopes.

use crate::common::*;
use portcullis_limits::{
    LimitKind, LimitScopes, LimitSettings, ScopeKey, ScopeKind, TokenReservation,
};

#[tokio::test]
async fn a_tenant_refusal_charges_nothing_to_the_agent() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let tenant = ScopeKey::tenant("acme");
    let agent = ScopeKey::agent("bot");
    let tenant_limits = LimitSettings {
        tpm: Some(1_000),
        ..settings()
    };
    let agent_limits = LimitSettings {
        rpm: Some(5),
        max_concurrent: Some(1),
        tpm: Some(5_000),
        ..settings()
    };
    let scopes = LimitScopes::agent(&agent, &agent_limits).with_tenant(&tenant, &tenant_limits);
    let reserve = |n| Some(TokenReservation::tokens(n));

    let p = limiter.acquire(&scopes, reserve(800)).await.unwrap();
    let info = *p.rate_info().unwrap();
    assert_eq!(
        (info.scope, info.limit, info.remaining),
        (ScopeKind::Tenant, LimitKind::Tpm, 200),
        "the tenant budget is the tightest"
    );
    p.settle(Some(800));

    let refused = limiter.acquire(&scopes, reserve(300)).await.unwrap_err();
    assert_eq!(
        (refused.scope, refused.limit),
        (ScopeKind::Tenant, LimitKind::Tpm)
    );

    let usage = limiter.usage_snapshot(&agent).await;
    assert_eq!((usage.requests_last_minute, usage.tokens_today), (1, 800));
    // The agent's concurrency slot and rpm were not taken by the refusal: 4 more fit.
    for _ in 0..4 {
        limiter
            .acquire(&scopes, reserve(50))
            .await
            .unwrap()
            .settle(Some(50));
    }
    assert_eq!(
        limiter
            .acquire(&scopes, reserve(0))
            .await
            .unwrap_err()
            .limit,
        LimitKind::Rpm
    );
    assert_eq!(limiter.usage_snapshot(&tenant).await.tokens_today, 1_000);
    assert_eq!(limiter.usage_snapshot(&agent).await.tokens_today, 1_000);
}

#[tokio::test]
async fn agents_of_one_tenant_share_its_budget() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let tenant = ScopeKey::tenant("acme");
    let tenant_limits = LimitSettings {
        tokens_per_day: Some(1_000),
        ..settings()
    };
    let open = settings();
    let a = ScopeKey::agent("a");
    let b = ScopeKey::agent("b");
    let reserve = Some(TokenReservation::tokens(600));
    let pa = limiter
        .acquire(
            &LimitScopes::agent(&a, &open).with_tenant(&tenant, &tenant_limits),
            reserve,
        )
        .await
        .unwrap();
    let refused = limiter
        .acquire(
            &LimitScopes::agent(&b, &open).with_tenant(&tenant, &tenant_limits),
            reserve,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.scope, ScopeKind::Tenant);
    assert_eq!(refused.limit, LimitKind::TokensPerDay);
    pa.settle(Some(100));
    limiter
        .acquire(
            &LimitScopes::agent(&b, &open).with_tenant(&tenant, &tenant_limits),
            reserve,
        )
        .await
        .unwrap()
        .settle(None);
    assert_eq!(limiter.usage_snapshot(&tenant).await.tokens_today, 700);
    assert_eq!(limiter.usage_snapshot(&a).await.tokens_today, 100);
    assert_eq!(limiter.usage_snapshot(&b).await.tokens_today, 600);
}

#[tokio::test]
async fn subagent_limits_apply_on_top_of_the_agent() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let agent = ScopeKey::agent("bot");
    let sub = ScopeKey::subagent("bot", "crawler");
    let agent_limits = LimitSettings {
        max_concurrent: Some(3),
        ..settings()
    };
    let sub_limits = LimitSettings {
        max_concurrent: Some(1),
        ..settings()
    };
    let sub_scopes = LimitScopes::agent(&agent, &agent_limits).with_subagent(&sub, &sub_limits);
    let agent_only = LimitScopes::agent(&agent, &agent_limits);

    let s1 = limiter.acquire(&sub_scopes, None).await.unwrap();
    let refused = limiter.acquire(&sub_scopes, None).await.unwrap_err();
    assert_eq!(
        (refused.scope, refused.limit),
        (ScopeKind::Subagent, LimitKind::Concurrent)
    );
    let a1 = limiter.acquire(&agent_only, None).await.unwrap();
    let a2 = limiter.acquire(&agent_only, None).await.unwrap();
    let refused = limiter.acquire(&agent_only, None).await.unwrap_err();
    assert_eq!(
        refused.scope,
        ScopeKind::Agent,
        "the sub-agent's request holds an agent slot"
    );
    drop(s1);
    let _a3 = limiter.acquire(&agent_only, None).await.unwrap();
    // The agent is full again, so the sub-agent is refused by the agent scope.
    let refused = limiter.acquire(&sub_scopes, None).await.unwrap_err();
    assert_eq!(refused.scope, ScopeKind::Agent);
    drop((a1, a2));
    assert!(limiter.acquire(&sub_scopes, None).await.is_ok());
}

#[tokio::test]
async fn a_key_given_twice_is_checked_once_without_deadlock() {
    let (_clock, limiter) = limiter_at(NOON).await;
    let key = ScopeKey::agent("bot");
    let s = LimitSettings {
        rpm: Some(2),
        ..settings()
    };
    let scopes = LimitScopes::agent(&key, &s)
        .with_subagent(&key, &s)
        .with_tenant(&key, &s);
    let _a = limiter.acquire(&scopes, None).await.unwrap();
    let _b = limiter.acquire(&scopes, None).await.unwrap();
    assert!(limiter.acquire(&scopes, None).await.is_err());
    assert_eq!(limiter.usage_snapshot(&key).await.requests_last_minute, 2);
}
