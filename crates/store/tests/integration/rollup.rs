//! The per-minute rollups behind the console's aggregates (usage, shadow report, agent
//! activity, sub-agents seen): a retried batch counts once,
//! retention takes the rollups of the minutes it removed, shadow examples span minutes,
//! and the migration's backfill of older records equals what inserts maintain.

use crate::console::{acme, fixture, Rec, BASE, T};
use portcullis_store::testing::TestDatabase;
use portcullis_store::{AuditRow, Dimension, Scope, Store, StoreError, TopRow};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use std::time::Duration;

crate::both_backends!(
    a_retried_batch_counts_once,
    retention_takes_the_rollups_of_the_minutes_it_removed,
    shadow_examples_are_the_newest_across_minutes,
);

const DAY_MS: i64 = 86_400_000;

fn top(key: &str, requests: u64, tokens: u64, refused: u64) -> TopRow {
    TopRow {
        key: key.to_owned(),
        requests,
        tokens,
        refused,
    }
}

async fn a_retried_batch_counts_once(s: Store) -> Result<(), StoreError> {
    let rows = fixture();
    assert_eq!(s.insert_audit_batch(&rows).await?, 8);
    assert_eq!(s.insert_audit_batch(&rows).await?, 0, "all stored already");
    // A batch retried with one new record: only that one is counted.
    let mut retry = rows[..3].to_vec();
    retry.push(
        Rec {
            id: "a7",
            ts: T + 5_000,
            tokens: Some(11),
            ..BASE
        }
        .row(),
    );
    assert_eq!(s.insert_audit_batch(&retry).await?, 1);
    assert_eq!(
        s.console_top(&acme(), T, T + 120_000, Dimension::Agent, 10)
            .await?,
        [
            top("alpha", 4, 111, 2),
            top("beta", 2, 50, 1),
            top("gamma", 1, 0, 0)
        ]
    );
    let shadow = s.console_shadow(&acme(), T, T + 120_000, 5).await?;
    let counts: Vec<(String, u64)> = shadow.into_iter().map(|r| (r.policy, r.count)).collect();
    assert_eq!(
        counts,
        [("beta_rules".to_owned(), 2), ("strict".to_owned(), 1)]
    );
    Ok(())
}

async fn retention_takes_the_rollups_of_the_minutes_it_removed(s: Store) -> Result<(), StoreError> {
    // One record the day before T (gone with a cut-off at T on both backends: SQLite deletes
    // by time, PostgreSQL drops whole days), the fixture from T on.
    let old = Rec {
        id: "a0",
        ts: T - 1_000,
        tokens: Some(1_000),
        would_deny: &["strict"],
        verdict: "would_deny",
        ..BASE
    }
    .row();
    assert_eq!(s.insert_audit_batch(&[old]).await?, 1);
    assert_eq!(s.insert_audit_batch(&fixture()).await?, 8);
    let whole = (T - DAY_MS, T + 120_000);
    assert_eq!(
        s.console_top(&acme(), whole.0, whole.1, Dimension::Agent, 1)
            .await?,
        [top("alpha", 4, 1_100, 2)]
    );
    let retention = Duration::from_secs(86_400);
    s.maintain_audit(T + DAY_MS, Some(retention)).await?;
    assert_eq!(
        s.console_top(&acme(), whole.0, whole.1, Dimension::Agent, 1)
            .await?,
        [top("alpha", 3, 100, 2)],
        "the day before the cut-off is gone, rollups included"
    );
    let shadow = s.console_shadow(&acme(), whole.0, whole.1, 5).await?;
    let strict = shadow.iter().find(|r| r.policy == "strict");
    assert_eq!(strict.map(|r| r.count), Some(1));
    // `prune_audit` takes the rollups of the minutes it empties too.
    assert_eq!(s.console_subagents(&acme(), whole.0, 10).await?.len(), 2);
    s.prune_audit(T + 60_000).await?;
    assert!(s.console_subagents(&acme(), whole.0, 10).await?.is_empty());
    assert_eq!(
        s.console_top(&acme(), whole.0, whole.1, Dimension::Agent, 10)
            .await?,
        [top("alpha", 1, 0, 1), top("gamma", 1, 0, 0)]
    );
    Ok(())
}

async fn shadow_examples_are_the_newest_across_minutes(s: Store) -> Result<(), StoreError> {
    // Policy "p" would deny 2 records in minute 0, 1 in minute 2, 3 in minute 5.
    let at = [
        ("m0a", 1_000),
        ("m0b", 2_000),
        ("m2a", 121_000),
        ("m5a", 301_000),
        ("m5b", 302_000),
        ("m5c", 303_000),
    ];
    let rows: Vec<AuditRow> = at
        .iter()
        .map(|&(id, off)| {
            Rec {
                id,
                ts: T + off,
                verdict: "would_deny",
                would_deny: &["p"],
                ..BASE
            }
            .row()
        })
        .collect();
    assert_eq!(s.insert_audit_batch(&rows).await?, 6);
    let ids =
        |examples: &[Value]| -> Vec<Value> { examples.iter().map(|e| e["id"].clone()).collect() };
    let report = s.console_shadow(&acme(), T, T + 600_000, 4).await?;
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].count, 6);
    assert_eq!(
        ids(&report[0].examples),
        [json!("m5c"), json!("m5b"), json!("m5a"), json!("m2a")]
    );
    // A window ending inside minute 5 (at T+5m+2.5s): the minute counts whole, its
    // examples stay inside the window.
    let report = s.console_shadow(&acme(), T, T + 302_500, 3).await?;
    assert_eq!(report[0].count, 6);
    assert_eq!(
        ids(&report[0].examples),
        [json!("m5b"), json!("m5a"), json!("m2a")]
    );
    let none = Scope {
        tenant: Some("globex".to_owned()),
        include_unattributed: false,
    };
    assert!(s.console_shadow(&none, T, T + 600_000, 4).await?.is_empty());
    Ok(())
}

/// The fixture and a budget alert record (which no aggregate counts).
fn with_alert() -> Vec<AuditRow> {
    let mut rows = fixture();
    let mut alert = Rec {
        id: "al1",
        ts: T + 1_500,
        tokens: Some(9_999),
        ..BASE
    }
    .row();
    alert.kind = "alert".to_owned();
    rows.push(alert);
    rows
}

/// The backfill statements of a migration file: everything after its marker line.
fn backfill(migration: &str) -> &str {
    let marker = "-- The records stored before this version";
    match migration.find(marker) {
        Some(at) => &migration[at..],
        None => panic!("the migration has no backfill section"),
    }
}

/// What the console's aggregates say of the fixture, as one comparable value.
async fn aggregates(s: &Store) -> Result<String, StoreError> {
    let sc = Scope::default();
    let (a, b) = (T, T + 120_000);
    Ok(format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        s.console_verdict_series(&sc, a, b, 60_000).await?,
        s.console_token_series(&sc, a, b, 60_000, Dimension::Model)
            .await?,
        s.console_top(&sc, a, b, Dimension::Agent, 10).await?,
        s.console_refusals(&sc, a, b, 10).await?,
        s.console_shadow(&sc, a, b, 5).await?,
        s.console_subagents(&sc, a, 10).await?,
        s.console_agent_activity(&sc, b, a).await?,
    ))
}

/// Empties the rollups, runs the migration's backfill, and checks the aggregates are what
/// the inserts had made them.
async fn backfill_equals_inserts<C: Connection>(s: &Store, raw: &mut C, migration: &str)
where
    for<'c> &'c mut C: Executor<'c>,
{
    let before = match aggregates(s).await {
        Ok(a) => a,
        Err(e) => panic!("aggregates: {e}"),
    };
    assert!(
        before.contains("beta_rules") && before.contains("planner"),
        "{before}"
    );
    assert!(
        !before.contains("9999"),
        "the alert counts nowhere: {before}"
    );
    for sql in [
        "DELETE FROM audit_rollup",
        "DELETE FROM audit_shadow_rollup",
        "DELETE FROM audit_subagent_rollup",
        backfill(migration),
    ] {
        if let Err(e) = raw.execute(sql).await {
            panic!("{sql}: {e}");
        }
    }
    let after = match aggregates(s).await {
        Ok(a) => a,
        Err(e) => panic!("aggregates: {e}"),
    };
    assert_eq!(after, before);
}

#[tokio::test]
async fn sqlite_backfill_equals_what_inserts_maintain() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", path.display());
    let s = crate::ok(Store::connect(&url).await);
    assert_eq!(crate::ok(s.insert_audit_batch(&with_alert()).await), 9);
    let mut raw = sqlx::SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("raw connection: {e}"));
    backfill_equals_inserts(
        &s,
        &mut raw,
        include_str!("../../migrations/sqlite/0007_audit_rollups.sql"),
    )
    .await;
    s.close().await;
}

#[tokio::test]
async fn postgres_backfill_equals_what_inserts_maintain() {
    let db = TestDatabase::create().await;
    let s = crate::ok(Store::connect(db.url()).await);
    assert_eq!(crate::ok(s.insert_audit_batch(&with_alert()).await), 9);
    let mut raw = sqlx::PgConnection::connect(db.url())
        .await
        .unwrap_or_else(|e| panic!("raw connection: {e}"));
    backfill_equals_inserts(
        &s,
        &mut raw,
        include_str!("../../migrations/postgres/0007_audit_rollups.sql"),
    )
    .await;
    s.close().await;
}
