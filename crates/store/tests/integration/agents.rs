//! Agents and sub-agents: round trips, conflicts, validation, updates, upserts, revision.

use portcullis_core::{Agent, AgentLimits, AgentMode, AgentSource, AgentStatus, RiskLevel};
use portcullis_store::{sha256_hex, Store, StoreError};
use serde_json::json;

crate::both_backends!(
    create_get_round_trips_every_field,
    every_enum_value_round_trips,
    duplicate_id_is_a_conflict_and_keeps_the_original,
    malformed_agents_are_refused_and_not_stored,
    update_replaces_record_keeps_created_at_and_bumps,
    upsert_inserts_updates_and_skips_no_op_writes,
    runtime_writes_on_config_agents_record_overrides,
    subagents_register_once_under_their_parent,
    list_filters_by_tenant_and_groups_subagents_after_parent,
    moving_a_parent_to_another_tenant_moves_its_subagents,
    secret_hash_is_stored_but_never_serialized,
    created_subagents_need_their_parent_and_its_tenant,
);

fn full_agent(id: &str, tenant: &str) -> Agent {
    let mut a = Agent::new(id, tenant, 1_700_000_000);
    a.groups = vec!["payments".into(), "beta testers".into()];
    a.status = AgentStatus::Suspended;
    a.mode = AgentMode::Shadow;
    a.risk_level = RiskLevel::Critical;
    a.allowed_scopes = vec![
        "stripe:customer:read".into(),
        "Stripe:Customer:Write".into(),
    ];
    a.token_ttl_secs = 3600;
    a.attributes =
        json!({"team": "core", "cost_center": 42, "nested": {"a": [1, 2, null]}, "ü": "ñ"})
            .as_object()
            .cloned()
            .unwrap_or_default();
    a.generation = 7;
    a.secret_sha256 = Some(sha256_hex("s3cret"));
    a.limits = AgentLimits {
        rpm: Some(60),
        tpm: None,
        tokens_per_day: Some(1_000_000),
        max_concurrent: Some(4),
        mcp_calls_per_minute: Some(12),
        usd_per_day: Some(portcullis_core::Usd::from_micros(2_500_001)),
        usd_per_month: None,
    };
    a.source = AgentSource::Config;
    a
}

async fn create_get_round_trips_every_field(s: Store) -> Result<(), StoreError> {
    let a = full_agent("billing_bot", "acme");
    s.create_agent(&a).await?;
    assert_eq!(s.get_agent("billing_bot").await?, Some(a.clone()));
    assert_eq!(s.get_agent("unknown_bot").await?, None);

    let plain = Agent::new("plain", "acme", 5);
    s.create_agent(&plain).await?;
    assert_eq!(s.get_agent("plain").await?, Some(plain));
    Ok(())
}

async fn every_enum_value_round_trips(s: Store) -> Result<(), StoreError> {
    let statuses = [
        AgentStatus::Active,
        AgentStatus::Suspended,
        AgentStatus::Revoked,
    ];
    let modes = [AgentMode::Active, AgentMode::Shadow, AgentMode::Disabled];
    let risks = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];
    let mut n = 0;
    for status in statuses {
        for mode in modes {
            for risk_level in risks {
                let mut a = Agent::new(format!("agent_{n}"), "t", 1);
                a.status = status;
                a.mode = mode;
                a.risk_level = risk_level;
                s.create_agent(&a).await?;
                assert_eq!(s.get_agent(&a.id).await?, Some(a));
                n += 1;
            }
        }
    }
    Ok(())
}

async fn duplicate_id_is_a_conflict_and_keeps_the_original(s: Store) -> Result<(), StoreError> {
    let a = full_agent("dup_bot", "acme");
    s.create_agent(&a).await?;
    let rev = s.revision().await?;
    // Same id in another tenant still conflicts: top-level ids are global.
    let other = Agent::new("dup_bot", "globex", 9);
    match s.create_agent(&other).await {
        Err(StoreError::Conflict { what, id }) => {
            assert_eq!(what, "agent");
            assert_eq!(id, "dup_bot");
        }
        r => panic!("expected conflict, got {r:?}"),
    }
    assert_eq!(s.get_agent("dup_bot").await?, Some(a));
    assert_eq!(
        s.revision().await?,
        rev,
        "a failed write must not bump the revision"
    );
    Ok(())
}

async fn malformed_agents_are_refused_and_not_stored(s: Store) -> Result<(), StoreError> {
    let mut cases = Vec::new();
    for id in [
        "",
        "A",
        "Bad",
        "1abc",
        "a-b",
        "a",
        "bot;drop table agents",
        &"a".repeat(65),
    ] {
        cases.push(Agent::new(id, "t", 1));
    }
    let mut a = Agent::new("ok_id", "t", 1);
    a.allowed_scopes = vec!["a::b".into()];
    cases.push(a);
    let mut a = Agent::new("ok_id", "", 1);
    a.tenant = String::new();
    cases.push(a);
    cases.push(Agent::new("ok_id", "bad\ntenant", 1));
    cases.push(Agent::new("ok_id", "x".repeat(129), 1));
    let mut a = Agent::new("ok_id", "t", 1);
    a.secret_sha256 = Some("not-a-hash".into());
    cases.push(a);
    let mut a = Agent::new("ok_id", "t", 1);
    a.secret_sha256 = Some(sha256_hex("x").to_uppercase());
    cases.push(a);
    let mut a = Agent::new("ok_id", "t", 1);
    a.token_ttl_secs = u64::MAX;
    cases.push(a);
    let mut a = Agent::new("ok_id", "t", 1);
    a.parent = Some("Bad Parent".into());
    cases.push(a);
    let mut a = Agent::new("ok_id", "t", 1);
    a.groups = vec![String::new()];
    cases.push(a);

    for a in cases {
        match s.create_agent(&a).await {
            Err(StoreError::Invalid { .. }) => {}
            r => panic!("{:?} accepted: {r:?}", a.id),
        }
    }
    assert!(s.list_agents(None).await?.is_empty());
    assert_eq!(s.revision().await?, 0);
    Ok(())
}

async fn update_replaces_record_keeps_created_at_and_bumps(s: Store) -> Result<(), StoreError> {
    let a = Agent::new("upd_bot", "acme", 100);
    s.create_agent(&a).await?;
    let rev = s.revision().await?;

    let mut changed = full_agent("upd_bot", "acme");
    changed.created_at = 5; // ignored: creation time is kept
    let stored = s.update_agent(&changed, 200).await?;
    assert_eq!(stored.created_at, 100);
    assert_eq!(stored.updated_at, 200);
    assert_eq!(stored.status, AgentStatus::Suspended);
    assert_eq!(stored.risk_level, RiskLevel::Critical);
    assert_eq!(stored.generation, 7);
    assert_eq!(s.get_agent("upd_bot").await?, Some(stored));
    assert_eq!(s.revision().await?, rev + 1);

    match s
        .update_agent(&Agent::new("ghost_bot", "acme", 1), 300)
        .await
    {
        Err(StoreError::NotFound { what: "agent", id }) => assert_eq!(id, "ghost_bot"),
        r => panic!("expected not found, got {r:?}"),
    }
    assert_eq!(s.revision().await?, rev + 1);
    Ok(())
}

async fn upsert_inserts_updates_and_skips_no_op_writes(s: Store) -> Result<(), StoreError> {
    let a = full_agent("cfg_bot", "acme");
    let first = s.upsert_agent(&a, 1_000).await?;
    assert_eq!(first.created_at, a.created_at);
    assert_eq!(first.updated_at, 1_000);
    let rev = s.revision().await?;
    assert_eq!(rev, 1);

    // Same content at a later start: nothing written.
    let again = s.upsert_agent(&a, 2_000).await?;
    assert_eq!(again, first);
    assert_eq!(s.revision().await?, rev);

    // Changed content: updated, creation time kept.
    let mut b = a.clone();
    b.allowed_scopes.push("openai:chat:create".into());
    b.created_at = 1;
    let second = s.upsert_agent(&b, 3_000).await?;
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.updated_at, 3_000);
    assert_eq!(second.allowed_scopes.len(), 3);
    assert_eq!(s.revision().await?, rev + 1);
    assert_eq!(s.get_agent("cfg_bot").await?, Some(second));
    Ok(())
}

/// A run-time write on a config agent remembers the config values it overrode; the
/// overrides round-trip, a caller cannot erase them, and the upsert writes what it is given.
async fn runtime_writes_on_config_agents_record_overrides(s: Store) -> Result<(), StoreError> {
    let mut cfg = Agent::new("cfg_bot", "acme", 1);
    cfg.source = AgentSource::Config;
    cfg.secret_sha256 = Some(sha256_hex("config secret"));
    s.upsert_agent(&cfg, 10).await?;

    // Rotate and disable at run time (as the CLI and admin API do).
    let mut a = s.get_agent("cfg_bot").await?.expect("stored");
    a.secret_sha256 = Some(sha256_hex("rotated"));
    a.generation += 1;
    a.mode = AgentMode::Disabled;
    let stored = s.update_agent(&a, 20).await?;
    assert_eq!(stored.config_overrides.mode, Some(AgentMode::Active));
    assert_eq!(
        stored.config_overrides.secret_sha256,
        Some(sha256_hex("config secret"))
    );
    assert_eq!(s.get_agent("cfg_bot").await?.as_ref(), Some(&stored));

    // A later write that passes no overrides keeps them; a second rotation keeps the
    // config's secret as the one rotated away.
    let mut b = stored.clone();
    b.config_overrides = Default::default();
    b.secret_sha256 = Some(sha256_hex("rotated again"));
    let stored = s.update_agent(&b, 30).await?;
    assert_eq!(
        stored.config_overrides.secret_sha256,
        Some(sha256_hex("config secret"))
    );
    assert_eq!(stored.config_overrides.mode, Some(AgentMode::Active));

    // The same config at the next start: run-time values stay.
    let mut again = stored.clone();
    again.reconcile_config(AgentMode::Active, &sha256_hex("config secret"));
    let kept = s.upsert_agent(&again, 40).await?;
    assert_eq!(kept.secret_sha256, Some(sha256_hex("rotated again")));
    assert_eq!(kept.mode, AgentMode::Disabled);
    assert_eq!(kept.generation, 2);

    // A store-created agent never records overrides.
    let api = Agent::new("api_bot", "acme", 1);
    s.create_agent(&api).await?;
    let mut changed = api.clone();
    changed.mode = AgentMode::Shadow;
    changed.secret_sha256 = Some(sha256_hex("x"));
    assert!(s
        .update_agent(&changed, 50)
        .await?
        .config_overrides
        .is_empty());

    // A malformed remembered hash is refused like a malformed secret hash.
    let mut bad = kept.clone();
    bad.config_overrides.secret_sha256 = Some("nope".into());
    assert!(matches!(
        s.upsert_agent(&bad, 60).await,
        Err(StoreError::Invalid {
            what: "secret_sha256",
            ..
        })
    ));
    Ok(())
}

async fn subagents_register_once_under_their_parent(s: Store) -> Result<(), StoreError> {
    s.create_agent(&Agent::new("parent_a", "acme", 1)).await?;
    s.create_agent(&Agent::new("parent_b", "globex", 1)).await?;
    let rev = s.revision().await?;

    let sub = s.register_subagent("parent_a", "researcher", 50).await?;
    assert_eq!(sub.parent.as_deref(), Some("parent_a"));
    assert_eq!(sub.tenant, "acme");
    assert_eq!(sub.source, AgentSource::Subagent);
    assert_eq!(sub.created_at, 50);
    assert_eq!(s.revision().await?, rev + 1);

    // Idempotent: the existing record, no write.
    let again = s.register_subagent("parent_a", "researcher", 99).await?;
    assert_eq!(again, sub);
    assert_eq!(s.revision().await?, rev + 1);

    // The same name under another parent is a different sub-agent in that parent's tenant.
    let other = s.register_subagent("parent_b", "researcher", 60).await?;
    assert_eq!(other.tenant, "globex");
    assert_eq!(s.get_subagent("parent_a", "researcher").await?, Some(sub));
    assert_eq!(s.get_subagent("parent_b", "researcher").await?, Some(other));
    // A sub-agent is not a top-level agent: its name cannot authenticate.
    assert_eq!(s.get_agent("researcher").await?, None);
    // A sub-agent name may equal a top-level id.
    s.register_subagent("parent_a", "parent_b", 70).await?;
    assert!(s
        .get_agent("parent_b")
        .await?
        .is_some_and(|a| a.parent.is_none()));

    match s.register_subagent("nobody", "x_sub", 1).await {
        Err(StoreError::NotFound { what: "agent", id }) => assert_eq!(id, "nobody"),
        r => panic!("expected not found, got {r:?}"),
    }
    // Sub-agents cannot nest: a sub-agent is not a valid parent.
    assert!(matches!(
        s.register_subagent("researcher", "deeper", 1).await,
        Err(StoreError::NotFound { .. })
    ));
    for bad in ["", "UPPER", "with-dash", "a", "x\u{0}y", &"s".repeat(65)] {
        assert!(
            matches!(
                s.register_subagent("parent_a", bad, 1).await,
                Err(StoreError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    Ok(())
}

async fn list_filters_by_tenant_and_groups_subagents_after_parent(
    s: Store,
) -> Result<(), StoreError> {
    for (id, tenant) in [("zeta", "acme"), ("alpha", "acme"), ("mid", "globex")] {
        s.create_agent(&Agent::new(id, tenant, 1)).await?;
    }
    s.register_subagent("alpha", "zz_sub", 2).await?;
    s.register_subagent("alpha", "aa_sub", 2).await?;
    s.register_subagent("mid", "helper", 2).await?;

    let key = |a: &Agent| format!("{}/{}", a.parent.as_deref().unwrap_or(""), a.id);
    let acme: Vec<String> = s.list_agents(Some("acme")).await?.iter().map(key).collect();
    assert_eq!(acme, ["/alpha", "alpha/aa_sub", "alpha/zz_sub", "/zeta"]);
    let globex: Vec<String> = s
        .list_agents(Some("globex"))
        .await?
        .iter()
        .map(key)
        .collect();
    assert_eq!(globex, ["/mid", "mid/helper"]);
    assert_eq!(s.list_agents(None).await?.len(), 6);
    assert!(s.list_agents(Some("nobody")).await?.is_empty());
    assert!(s.list_agents(Some("acme' OR '1'='1")).await?.is_empty());
    Ok(())
}

async fn moving_a_parent_to_another_tenant_moves_its_subagents(s: Store) -> Result<(), StoreError> {
    s.create_agent(&Agent::new("mover", "acme", 1)).await?;
    s.register_subagent("mover", "child", 2).await?;
    let mut moved = Agent::new("mover", "globex", 1);
    moved.generation = 2;
    s.update_agent(&moved, 3).await?;
    let child = s.get_subagent("mover", "child").await?;
    assert_eq!(child.map(|c| c.tenant).as_deref(), Some("globex"));
    assert!(s.list_agents(Some("acme")).await?.is_empty());
    Ok(())
}

async fn secret_hash_is_stored_but_never_serialized(s: Store) -> Result<(), StoreError> {
    let a = full_agent("secret_bot", "acme");
    s.create_agent(&a).await?;
    let got = s.get_agent("secret_bot").await?;
    let hash = sha256_hex("s3cret");
    assert_eq!(
        got.as_ref().and_then(|a| a.secret_sha256.clone()),
        Some(hash.clone())
    );
    let text = serde_json::to_string(&got).unwrap_or_default();
    assert!(!text.contains(&hash));
    Ok(())
}

async fn created_subagents_need_their_parent_and_its_tenant(s: Store) -> Result<(), StoreError> {
    let mut sub = Agent::new("child", "acme", 1);
    sub.parent = Some("parent_x".into());
    assert!(matches!(
        s.create_agent(&sub).await,
        Err(StoreError::NotFound { .. })
    ));
    s.create_agent(&Agent::new("parent_x", "globex", 1)).await?;
    assert!(matches!(
        s.create_agent(&sub).await,
        Err(StoreError::Invalid { .. })
    ));
    sub.tenant = "globex".into();
    s.create_agent(&sub).await?;
    assert_eq!(
        s.get_subagent("parent_x", "child").await?,
        Some(sub.clone())
    );
    assert!(matches!(
        s.create_agent(&sub).await,
        Err(StoreError::Conflict { .. })
    ));
    Ok(())
}

crate::both_backends!(
    modify_reads_under_the_lock_and_writes_only_on_request,
    concurrent_modifications_never_undo_each_other,
);

async fn modify_reads_under_the_lock_and_writes_only_on_request(
    s: Store,
) -> Result<(), StoreError> {
    let mut a = Agent::new("mod_bot", "acme", 5);
    a.source = AgentSource::Config;
    a.mode = AgentMode::Active;
    s.create_agent(&a).await?;
    let rev = s.revision().await?;
    // Ok(false): nothing written, no bump.
    let same = s
        .modify_agent("mod_bot", 9, |a| {
            a.mode = AgentMode::Shadow;
            Ok::<_, String>(false)
        })
        .await
        .map_err(|e| StoreError::Invalid {
            what: "test",
            reason: e.to_string(),
        })?;
    assert_eq!(same.mode, AgentMode::Active);
    assert_eq!(s.revision().await?, rev);
    // Err: refused, nothing written.
    let refused = s
        .modify_agent("mod_bot", 9, |_| Err::<bool, _>("no".to_owned()))
        .await;
    assert!(matches!(refused, Err(portcullis_store::Modified::Refused(ref e)) if e == "no"));
    // Ok(true): written with updated_at, the config override noted, revision bumped.
    let stored = s
        .modify_agent("mod_bot", 9, |a| {
            a.mode = AgentMode::Shadow;
            a.id = "cannot_rename".to_owned();
            Ok::<_, String>(true)
        })
        .await
        .map_err(|e| StoreError::Invalid {
            what: "test",
            reason: e.to_string(),
        })?;
    assert_eq!(
        (stored.id.as_str(), stored.mode),
        ("mod_bot", AgentMode::Shadow)
    );
    assert_eq!((stored.created_at, stored.updated_at), (5, 9));
    assert_eq!(stored.config_overrides.mode, Some(AgentMode::Active));
    assert_eq!(s.revision().await?, rev + 1);
    assert_eq!(s.get_agent("mod_bot").await?, Some(stored));
    let missing = s.modify_agent("ghost", 1, |_| Ok::<_, String>(true)).await;
    assert!(matches!(
        missing,
        Err(portcullis_store::Modified::Store(
            StoreError::NotFound { .. }
        ))
    ));
    Ok(())
}

async fn concurrent_modifications_never_undo_each_other(s: Store) -> Result<(), StoreError> {
    let start = Agent::new("busy_bot", "acme", 1);
    s.create_agent(&start).await?;
    // Sixteen writers each bump the generation once (as rotations through several
    // gateways would): none is lost.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.modify_agent("busy_bot", 2, |a| {
                a.generation += 1;
                Ok::<_, String>(true)
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            other => panic!("a writer failed: {other:?}"),
        }
    }
    assert_eq!(
        s.get_agent("busy_bot").await?.map(|a| a.generation),
        Some(start.generation + 16)
    );
    Ok(())
}
