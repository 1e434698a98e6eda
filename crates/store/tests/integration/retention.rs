//! Audit retention: records older than the retention are removed, newer ones kept, on both
//! backends (SQLite: batched deletes; PostgreSQL: whole day partitions dropped plus the
//! default partition's old rows).

use portcullis_store::{AuditQuery, AuditRow, Store, StoreError};
use std::time::Duration;

crate::both_backends!(retention_keeps_exactly_the_recent_records);

const DAY_MS: i64 = 86_400_000;

fn row(id: &str, ts_ms: i64) -> AuditRow {
    AuditRow {
        id: id.to_owned(),
        ts_ms,
        tenant: "acme".to_owned(),
        agent_id: "bot".to_owned(),
        subagent: None,
        verdict: "allow".to_owned(),
        policy: None,
        policy_revision: None,
        provider: None,
        model: None,
        kind: "http".to_owned(),
        status: Some(200),
        cost_usd_micros: None,
        rollup: None,
        record_json: format!(r#"{{"id":"{id}"}}"#),
    }
}

async fn retention_keeps_exactly_the_recent_records(s: Store) -> Result<(), StoreError> {
    // "Now" is noon of day 20000 (2024-10-04); retention 2 days: the cut-off is noon of
    // day 19998. On PostgreSQL, an upkeep ten days earlier made the day partitions
    // 19989-19993 and today's makes 19999-20003; days 19994-19998 land in the default
    // partition. So retention both drops whole partitions and deletes default rows.
    let now = 20_000 * DAY_MS + DAY_MS / 2;
    s.maintain_audit(now - 10 * DAY_MS, None).await?;
    s.maintain_audit(now, None).await?;
    let cutoff = now - 2 * DAY_MS;
    let mut rows: Vec<AuditRow> = Vec::new();
    // 12 000 old records (more than one delete batch), spread over days 19990-19998,
    // all before the cut-off; then records around and after it.
    for i in 0..12_000i64 {
        rows.push(row(&format!("old{i:05}"), 19_990 * DAY_MS + i * 60_000));
    }
    rows.push(row("just_before", cutoff - 1));
    rows.push(row("at_cutoff", cutoff));
    rows.push(row("yesterday", now - DAY_MS));
    rows.push(row("now", now));
    rows.push(row("future", now + 2 * DAY_MS));
    assert_eq!(s.insert_audit_batch(&rows).await?, 12_005);

    s.maintain_audit(now, Some(Duration::from_secs(2 * 86_400)))
        .await?;
    let page = s
        .query_audit(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await?;
    let mut ids: Vec<String> = page
        .records
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["at_cutoff", "future", "now", "yesterday"]);
    assert_eq!(page.total, 4);

    // Idempotent: a second round removes nothing more.
    let again = s
        .maintain_audit(now, Some(Duration::from_secs(2 * 86_400)))
        .await?;
    assert_eq!((again.rows_deleted, again.partitions_dropped), (0, 0));
    Ok(())
}
