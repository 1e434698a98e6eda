//! Audit table: batch inserts, filters, ordering, pagination and total, tenant scoping, tail.

use portcullis_store::{AuditQuery, AuditRow, CostGroup, CostRow, Store, StoreError};
use serde_json::{json, Value};

crate::both_backends!(
    batch_insert_is_complete_idempotent_and_verbatim,
    invalid_json_rejects_the_whole_batch,
    newest_first_with_ties_broken_by_id,
    every_filter_matches_exactly_what_it_should,
    pages_tile_the_result_and_total_ignores_paging,
    tenants_never_see_each_others_records,
    tail_cursor_follows_new_records_in_order,
    prune_removes_only_older_records,
    audit_writes_do_not_bump_the_agent_revision,
    costs_are_summed_exactly_and_unpriced_records_are_not_zero,
    costs_are_grouped_dearest_first,
);

/// A row whose JSON record mirrors its columns, plus a payload the store must not touch.
fn row(i: u32, ts_ms: i64, tenant: &str, agent: &str, verdict: &str) -> AuditRow {
    let id = format!("{ts_ms:013}-{i:06}");
    let provider = i.is_multiple_of(3).then(|| "openai".to_owned());
    let model = provider.as_ref().map(|_| format!("gpt-{}", i % 2));
    let record = json!({
        "id": id, "ts": ts_ms, "tenant": tenant, "agent_id": agent, "verdict": verdict,
        "subagent": i.is_multiple_of(4).then_some("helper"), "provider": provider, "model": model,
        "policy": (verdict != "allow").then_some("block_pii"), "kind": "http", "status": 200,
        "reasons": ["r \"quoted\" ü", "line\nbreak"], "usage": {"input_tokens": i, "source": "provider"},
    });
    AuditRow {
        id,
        ts_ms,
        tenant: tenant.to_owned(),
        agent_id: agent.to_owned(),
        subagent: i.is_multiple_of(4).then(|| "helper".to_owned()),
        verdict: verdict.to_owned(),
        policy: (verdict != "allow").then(|| "block_pii".to_owned()),
        policy_revision: None,
        provider,
        model,
        kind: "http".to_owned(),
        status: Some(200),
        cost_usd_micros: None,
        rollup: None,
        record_json: record.to_string(),
    }
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// 300 rows over two tenants, three agents, three verdicts; ts 1000..=300_000 step 1000.
fn fixture() -> Vec<AuditRow> {
    (1..=300u32)
        .map(|i| {
            let tenant = if i.is_multiple_of(5) {
                "globex"
            } else {
                "acme"
            };
            let agent = ["alpha", "beta", "gamma"][(i % 3) as usize];
            let verdict = ["allow", "deny", "would_deny"][(i % 7 % 3) as usize];
            row(i, i64::from(i) * 1000, tenant, agent, verdict)
        })
        .collect()
}

async fn batch_insert_is_complete_idempotent_and_verbatim(s: Store) -> Result<(), StoreError> {
    let rows: Vec<AuditRow> = (0..1_000u32)
        .map(|i| row(i, 1_000 + i64::from(i), "t", "a", "allow"))
        .collect();
    assert_eq!(s.insert_audit_batch(&rows).await?, 1_000);
    // A retried batch writes no duplicate; a mixed one writes only the new rows.
    assert_eq!(s.insert_audit_batch(&rows).await?, 0);
    let mut mixed = rows[990..].to_vec();
    mixed.push(row(5_000, 9_999, "t", "a", "allow"));
    assert_eq!(s.insert_audit_batch(&mixed).await?, 1);
    assert_eq!(s.insert_audit_batch(&[]).await?, 0);

    let page = s
        .query_audit(&AuditQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await?;
    assert_eq!(page.total, 1_001);
    assert_eq!(page.records.len(), 1_001);
    for r in &rows {
        let stored = s.get_audit(None, &r.id).await?;
        let original: Value = serde_json::from_str(&r.record_json).unwrap_or(Value::Null);
        assert_eq!(stored, Some(original));
    }
    Ok(())
}

async fn invalid_json_rejects_the_whole_batch(s: Store) -> Result<(), StoreError> {
    let mut rows = vec![row(1, 1, "t", "a", "allow"), row(2, 2, "t", "a", "allow")];
    rows[1].record_json = "{\"id\": truncated".to_owned();
    assert!(matches!(
        s.insert_audit_batch(&rows).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(s.query_audit(&AuditQuery::default()).await?.total, 0);
    Ok(())
}

async fn newest_first_with_ties_broken_by_id(s: Store) -> Result<(), StoreError> {
    // Inserted out of order, two share a timestamp.
    let rows = vec![
        row(2, 2_000, "t", "a", "allow"),
        row(3, 3_000, "t", "a", "allow"),
        row(1, 1_000, "t", "a", "allow"),
        row(9, 2_000, "t", "a", "deny"),
    ];
    s.insert_audit_batch(&rows).await?;
    let page = s.query_audit(&AuditQuery::default()).await?;
    assert_eq!(
        ids(&page.records),
        [
            "0000000003000-000003",
            "0000000002000-000009",
            "0000000002000-000002",
            "0000000001000-000001"
        ]
    );
    Ok(())
}

async fn every_filter_matches_exactly_what_it_should(s: Store) -> Result<(), StoreError> {
    let rows = fixture();
    s.insert_audit_batch(&rows).await?;

    type Pred = fn(&AuditRow) -> bool;
    let some = |v: &str| Some(v.to_owned());
    let cases: Vec<(AuditQuery, Pred)> = vec![
        (
            AuditQuery {
                agent_id: some("beta"),
                ..Default::default()
            },
            |r| r.agent_id == "beta",
        ),
        (
            AuditQuery {
                subagent: some("helper"),
                ..Default::default()
            },
            |r| r.subagent.is_some(),
        ),
        (
            AuditQuery {
                verdict: some("deny"),
                ..Default::default()
            },
            |r| r.verdict == "deny",
        ),
        (
            AuditQuery {
                policy: some("block_pii"),
                ..Default::default()
            },
            |r| r.policy.is_some(),
        ),
        (
            AuditQuery {
                provider: some("openai"),
                ..Default::default()
            },
            |r| r.provider.is_some(),
        ),
        (
            AuditQuery {
                model: some("gpt-1"),
                ..Default::default()
            },
            |r| r.model.as_deref() == Some("gpt-1"),
        ),
        (
            AuditQuery {
                tenant: some("globex"),
                ..Default::default()
            },
            |r| r.tenant == "globex",
        ),
        (
            AuditQuery {
                since_ms: Some(100_000),
                ..Default::default()
            },
            |r| r.ts_ms >= 100_000,
        ),
        (
            AuditQuery {
                until_ms: Some(100_000),
                ..Default::default()
            },
            |r| r.ts_ms < 100_000,
        ),
        (
            AuditQuery {
                since_ms: Some(50_000),
                until_ms: Some(60_000),
                ..Default::default()
            },
            |r| (50_000..60_000).contains(&r.ts_ms),
        ),
        (
            AuditQuery {
                tenant: some("acme"),
                agent_id: some("alpha"),
                verdict: some("would_deny"),
                since_ms: Some(20_000),
                ..Default::default()
            },
            |r| {
                r.tenant == "acme"
                    && r.agent_id == "alpha"
                    && r.verdict == "would_deny"
                    && r.ts_ms >= 20_000
            },
        ),
        (
            AuditQuery {
                agent_id: some("alpha' OR '1'='1"),
                ..Default::default()
            },
            |_| false,
        ),
        (
            AuditQuery {
                verdict: some("ALLOW"),
                ..Default::default()
            },
            |_| false,
        ),
        (
            AuditQuery {
                since_ms: Some(200_000),
                until_ms: Some(100_000),
                ..Default::default()
            },
            |_| false,
        ),
    ];
    for (mut q, pred) in cases {
        q.limit = 1_000;
        let mut want: Vec<&AuditRow> = rows.iter().filter(|r| pred(r)).collect();
        want.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
        let want: Vec<String> = want.iter().map(|r| r.id.clone()).collect();
        let page = s.query_audit(&q).await?;
        assert_eq!(ids(&page.records), want, "{q:?}");
        assert_eq!(page.total, want.len() as u64, "{q:?}");
    }
    Ok(())
}

async fn pages_tile_the_result_and_total_ignores_paging(s: Store) -> Result<(), StoreError> {
    s.insert_audit_batch(&fixture()).await?;
    let base = AuditQuery {
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let all = s
        .query_audit(&AuditQuery {
            limit: 1_000,
            ..base.clone()
        })
        .await?;
    assert_eq!(all.total, 240);

    let mut stitched = Vec::new();
    for page_no in 0..6u64 {
        let q = AuditQuery {
            limit: 50,
            offset: page_no * 50,
            ..base.clone()
        };
        let page = s.query_audit(&q).await?;
        assert_eq!(page.total, 240);
        assert_eq!(
            page.records.len(),
            if page_no < 4 {
                50
            } else if page_no == 4 {
                40
            } else {
                0
            }
        );
        stitched.extend(page.records);
    }
    assert_eq!(ids(&stitched), ids(&all.records));

    let empty = s
        .query_audit(&AuditQuery {
            limit: 0,
            ..base.clone()
        })
        .await?;
    assert!(empty.records.is_empty());
    assert_eq!(empty.total, 240);
    let far = s
        .query_audit(&AuditQuery {
            offset: u64::MAX / 2,
            ..base.clone()
        })
        .await?;
    assert!(far.records.is_empty());
    assert!(matches!(
        s.query_audit(&AuditQuery {
            offset: u64::MAX,
            ..base
        })
        .await,
        Err(StoreError::Invalid { .. })
    ));
    Ok(())
}

async fn tenants_never_see_each_others_records(s: Store) -> Result<(), StoreError> {
    let rows = fixture();
    s.insert_audit_batch(&rows).await?;
    let page = s
        .query_audit(&AuditQuery {
            tenant: Some("globex".into()),
            limit: 1_000,
            ..Default::default()
        })
        .await?;
    assert_eq!(page.total, 60);
    assert!(page.records.iter().all(|r| r["tenant"] == "globex"));

    let acme_row = rows
        .iter()
        .find(|r| r.tenant == "acme")
        .map(|r| r.id.clone())
        .unwrap_or_default();
    assert!(s.get_audit(Some("acme"), &acme_row).await?.is_some());
    assert_eq!(s.get_audit(Some("globex"), &acme_row).await?, None);
    assert!(s.get_audit(None, &acme_row).await?.is_some());
    assert_eq!(s.get_audit(None, "no-such-id").await?, None);

    let tail = s.audit_after(Some("globex"), None, 1_000).await?;
    assert_eq!(tail.len(), 60);
    assert!(tail.iter().all(|e| e.record["tenant"] == "globex"));
    Ok(())
}

async fn tail_cursor_follows_new_records_in_order(s: Store) -> Result<(), StoreError> {
    assert!(s.audit_after(None, None, 10).await?.is_empty());
    let first: Vec<AuditRow> = (1..=5u32)
        .map(|i| row(i, i64::from(i), "t", "a", "allow"))
        .collect();
    s.insert_audit_batch(&first).await?;

    // Without a cursor: the newest N, oldest first.
    let start = s.audit_after(None, None, 3).await?;
    let got: Vec<&str> = start.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, [&first[2].id, &first[3].id, &first[4].id]);
    assert_eq!(start[2].ts_ms, 5);
    let cursor = start[2].id.clone();

    assert!(s.audit_after(None, Some(&cursor), 10).await?.is_empty());
    let more: Vec<AuditRow> = (6..=9u32)
        .map(|i| row(i, i64::from(i), "t", "a", "deny"))
        .collect();
    s.insert_audit_batch(&more).await?;
    let next = s.audit_after(None, Some(&cursor), 3).await?;
    let got: Vec<&str> = next.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, [&more[0].id, &more[1].id, &more[2].id]);
    let last = s.audit_after(None, Some(&next[2].id), 3).await?;
    assert_eq!(last.len(), 1);
    assert_eq!(
        last[0].record,
        serde_json::from_str::<Value>(&more[3].record_json).unwrap_or(Value::Null)
    );
    Ok(())
}

async fn prune_removes_only_older_records(s: Store) -> Result<(), StoreError> {
    s.insert_audit_batch(&fixture()).await?;
    assert_eq!(s.prune_audit(100_000).await?, 99);
    let page = s
        .query_audit(&AuditQuery {
            limit: 1_000,
            ..Default::default()
        })
        .await?;
    assert_eq!(page.total, 201);
    assert!(page
        .records
        .iter()
        .all(|r| r["ts"].as_i64().is_some_and(|t| t >= 100_000)));
    Ok(())
}

async fn audit_writes_do_not_bump_the_agent_revision(s: Store) -> Result<(), StoreError> {
    s.insert_audit_batch(&fixture()).await?;
    assert_eq!(s.revision().await?, 0);
    Ok(())
}

async fn costs_are_summed_exactly_and_unpriced_records_are_not_zero(
    s: Store,
) -> Result<(), StoreError> {
    // Every third record priced at i micro-dollars; the others unpriced (NULL, not 0).
    let rows: Vec<AuditRow> = (1..=30u32)
        .map(|i| {
            let mut r = row(i, 1_000 + i64::from(i), "acme", "alpha", "allow");
            r.cost_usd_micros = i.is_multiple_of(3).then(|| i64::from(i) * 1_000_001);
            r
        })
        .collect();
    s.insert_audit_batch(&rows).await?;
    let q = AuditQuery {
        limit: 5,
        ..AuditQuery::default()
    };
    let page = s.query_audit(&q).await?;
    assert_eq!(page.total, 30);
    assert_eq!(page.priced, 10);
    // 3 + 6 + ... + 30 = 165, times 1_000_001 µ$: the sum ignores paging and is exact.
    assert_eq!(page.cost_usd_micros, Some(165 * 1_000_001));
    let filtered = s
        .query_audit(&AuditQuery {
            since_ms: Some(1_025),
            ..q.clone()
        })
        .await?;
    assert_eq!(
        (filtered.priced, filtered.cost_usd_micros),
        (2, Some(57 * 1_000_001))
    );
    let none = s
        .query_audit(&AuditQuery {
            until_ms: Some(1_003),
            ..q
        })
        .await?;
    assert_eq!(
        (none.total, none.priced, none.cost_usd_micros),
        (2, 0, None)
    );
    Ok(())
}

async fn costs_are_grouped_dearest_first(s: Store) -> Result<(), StoreError> {
    // `row` gives every third record provider `openai` and model `gpt-{i % 2}`.
    let rows: Vec<AuditRow> = (1..=12u32)
        .map(|i| {
            let agent = if i <= 6 { "alpha" } else { "beta" };
            let mut r = row(i, 1_000 + i64::from(i), "acme", agent, "allow");
            r.cost_usd_micros = (i != 12 && i.is_multiple_of(3)).then(|| i64::from(i) * 10);
            r
        })
        .collect();
    s.insert_audit_batch(&rows).await?;
    let q = AuditQuery::default();
    let by_model = s.audit_cost_by(&q, CostGroup::Model).await?;
    // gpt-1: 3 and 9 (90 + 30 µ$); gpt-0: 6 (60 µ$) and 12 (unpriced).
    let row = |key: &str, records, priced, cost| CostRow {
        key: key.to_owned(),
        records,
        priced,
        cost_usd_micros: cost,
    };
    assert_eq!(
        by_model,
        vec![row("gpt-1", 2, 2, Some(120)), row("gpt-0", 2, 1, Some(60))]
    );
    let by_agent = s.audit_cost_by(&q, CostGroup::Agent).await?;
    assert_eq!(
        by_agent,
        vec![row("alpha", 6, 2, Some(90)), row("beta", 6, 1, Some(90))]
    );
    // Filters apply; a group with nothing priced has no cost, not zero.
    let beta = AuditQuery {
        agent_id: Some("beta".into()),
        since_ms: Some(1_010),
        ..q
    };
    assert_eq!(
        s.audit_cost_by(&beta, CostGroup::Tenant).await?,
        vec![row("acme", 3, 0, None)]
    );
    assert_eq!(CostGroup::parse("model"), Some(CostGroup::Model));
    assert_eq!(CostGroup::parse("models"), None);
    Ok(())
}
