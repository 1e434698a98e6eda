//! The queryable audit table: batched inserts, filtered pages, lookups and a tail cursor.
//!
//! Each [`AuditRecord`] is stored as an [`AuditRow`]: the filterable fields as columns plus
//! the full record as JSON text, returned verbatim by the queries. The queries are the same
//! on both backends; inserts differ (SQLite: multi-row `VALUES`; PostgreSQL: one `INSERT ..
//! SELECT FROM UNNEST` of column arrays per chunk, into the day-partitioned table).

use crate::backend::{on_pool, Columns, Pool};
use crate::error::{Result, StoreError};
use crate::rollup::{self, facts_of, Rollup};
use crate::row::{AuditRow, RollupFacts};
use crate::store::Store;
use serde_json::Value;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Database, Encode, Postgres, QueryBuilder, Sqlite, Type};
use std::borrow::Cow;
use std::collections::HashSet;

/// Rows per multi-row `INSERT` (14 parameters each; SQLite allows 32766 per statement).
/// Smaller tails are inserted in power-of-two chunks so only a few statement shapes are
/// prepared and cached.
const ROWS_PER_INSERT: usize = 256;
/// Rows per PostgreSQL `INSERT .. UNNEST` (one statement shape whatever the count; the
/// chunk bounds the size of one message).
const PG_ROWS_PER_INSERT: usize = 5_000;
/// The PostgreSQL insert: fourteen arrays, one element per row. A row whose (id, ts) is
/// already stored is skipped; the ids of the rows inserted are returned.
const PG_INSERT: &str = "INSERT INTO audit_records (id, ts, tenant, agent_id, subagent, verdict, \
     policy, policy_revision, provider, model, kind, status, record, cost_usd_micros) \
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], \
     $13::text[], $14::int8[]) ON CONFLICT DO NOTHING RETURNING id";
/// Largest page [`Store::query_audit`] and [`Store::audit_after`] return.
pub const MAX_AUDIT_PAGE: u32 = 10_000;

/// Filters of an audit query; `None` means "any". Tenant `None` sees every tenant (CLI);
/// the admin API always sets the operator's tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this tenant's records.
    pub tenant: Option<String>,
    /// With `tenant`: also the records no tenant is known for (refused before an agent
    /// was identified, stored with an empty tenant). For the platform tenant's operators.
    pub include_unattributed: bool,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this sub-agent.
    pub subagent: Option<String>,
    /// Only this verdict.
    pub verdict: Option<String>,
    /// Only decisions of this policy.
    pub policy: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Records at or after this time (Unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Records before this time (Unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Page size, capped at [`MAX_AUDIT_PAGE`].
    pub limit: u32,
    /// Records to skip (newest first).
    pub offset: u64,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            tenant: None,
            include_unattributed: false,
            agent_id: None,
            subagent: None,
            verdict: None,
            policy: None,
            provider: None,
            model: None,
            since_ms: None,
            until_ms: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// One page of an audit query.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// Records, newest first (by timestamp, then id).
    pub records: Vec<Value>,
    /// How many records match the filters in all (ignoring limit and offset).
    pub total: u64,
    /// What the matching records cost in all, micro-dollars (`None` when none is priced).
    pub cost_usd_micros: Option<u64>,
    /// How many of the matching records are priced (the others' cost is unknown).
    pub priced: u64,
}

/// A record with its id and timestamp, as the tail cursor returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Record id: pass the last one seen to [`Store::audit_after`].
    pub id: String,
    /// Timestamp, Unix milliseconds.
    pub ts_ms: i64,
    /// The full record.
    pub record: Value,
}

impl Store {
    /// Writes `rows` in one transaction and returns how many were new. A row whose id is
    /// already stored is skipped, so a batch retried after an unclear failure writes no
    /// duplicate. Fails without writing anything when a `record_json` is not valid JSON.
    /// The per-minute rollups of the records inserted are updated in the same transaction.
    ///
    /// Each commit costs far more than a row (measured: about 60k rows per CPU-second in
    /// batches of 100, 110k in batches of 1,000), so writers should batch generously.
    pub async fn insert_audit_batch(&self, rows: &[AuditRow]) -> Result<u64> {
        let facts = facts_of(rows)?;
        if rows.is_empty() {
            return Ok(0);
        }
        match &self.pool {
            Pool::Sqlite(p) => insert_sqlite(p, rows, &facts).await,
            Pool::Postgres(p) => insert_postgres(p, rows, &facts).await,
        }
    }

    /// One page of records matching `q`, newest first, with the total number of matches.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<AuditPage> {
        let offset = i64::try_from(q.offset)
            .map_err(|_| StoreError::invalid("offset", format!("{} is too large", q.offset)))?;
        let limit = i64::from(q.limit.min(MAX_AUDIT_PAGE));
        let (total, records, cost, priced) = on_pool!(&self.pool, |p| {
            // One read transaction: the page and the total come from the same snapshot
            // (SQLite's transactions are snapshots; PostgreSQL needs REPEATABLE READ).
            let mut tx = match self.backend() {
                crate::Backend::Sqlite => p.begin().await?,
                crate::Backend::Postgres => {
                    p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .await?
                }
            };
            let mut count = QueryBuilder::new(
                "SELECT COUNT(*) AS n, CAST(SUM(cost_usd_micros) AS BIGINT) AS cost, \
                 COUNT(cost_usd_micros) AS priced FROM audit_records",
            );
            push_filters(&mut count, q);
            let totals = count.build().fetch_one(&mut *tx).await?;
            let total = totals.int("n")?;
            let cost = totals.opt_int("cost")?;
            let priced = totals.int("priced")?;

            let mut page = QueryBuilder::new("SELECT record FROM audit_records");
            push_filters(&mut page, q);
            page.push(" ORDER BY ts DESC, id DESC LIMIT ")
                .push_bind(limit)
                .push(" OFFSET ")
                .push_bind(offset);
            let rows = page.build().fetch_all(&mut *tx).await?;
            tx.commit().await?;
            let records = rows.iter().map(record_of).collect::<Result<Vec<_>>>()?;
            (total, records, cost, priced)
        });
        Ok(AuditPage {
            records,
            total: u64::try_from(total).unwrap_or(0),
            cost_usd_micros: cost.map(|c| u64::try_from(c).unwrap_or(0)),
            priced: u64::try_from(priced).unwrap_or(0),
        })
    }

    /// The record `id`, if it exists (and belongs to `tenant` when given).
    pub async fn get_audit(&self, tenant: Option<&str>, id: &str) -> Result<Option<Value>> {
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT record FROM audit_records WHERE id = ");
            qb.push_bind(id);
            if let Some(t) = tenant {
                qb.push(" AND tenant = ").push_bind(t);
            }
            let row = qb.build().fetch_optional(p).await?;
            row.as_ref().map(record_of).transpose()
        })
    }

    /// For `audit tail`: records with an id greater than `after_id`, oldest first, at most
    /// `limit`; with no cursor, the newest `limit` records (still oldest first). Pass the last
    /// returned id back to follow new records.
    pub async fn audit_after(
        &self,
        tenant: Option<&str>,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let limit = i64::from(limit.min(MAX_AUDIT_PAGE));
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT id, ts, record FROM audit_records");
            let mut sep = Sep::default();
            if let Some(t) = tenant {
                qb.push(sep.next()).push("tenant = ").push_bind(t);
            }
            let rows = match after_id {
                Some(cursor) => {
                    qb.push(sep.next()).push("id > ").push_bind(cursor);
                    qb.push(" ORDER BY id ASC LIMIT ").push_bind(limit);
                    qb.build().fetch_all(p).await?
                }
                None => {
                    qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
                    let mut rows = qb.build().fetch_all(p).await?;
                    rows.reverse();
                    rows
                }
            };
            rows.iter()
                .map(|row| {
                    Ok(AuditEntry {
                        id: row.text("id")?,
                        ts_ms: row.int("ts")?,
                        record: record_of(row)?,
                    })
                })
                .collect()
        })
    }

    /// Deletes records older than `before_ms` (Unix ms) at once; returns how many were
    /// removed. For routine retention use [`Store::maintain_audit`], which works in bounded
    /// batches (SQLite) or drops whole day partitions (PostgreSQL).
    pub async fn prune_audit(&self, before_ms: i64) -> Result<u64> {
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            let n = sqlx::query("DELETE FROM audit_records WHERE ts < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            for sql in rollup::PRUNE {
                sqlx::query(sql)
                    .bind(rollup::last_pruned_minute(before_ms))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(n)
        })
    }
}

/// SQLite: multi-row `VALUES` in chunks, then the rollups, one transaction.
async fn insert_sqlite(
    pool: &SqlitePool,
    rows: &[AuditRow],
    facts: &[Cow<'_, RollupFacts>],
) -> Result<u64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut inserted = 0;
    let mut rollup = Rollup::default();
    let mut rest = rows;
    let mut rest_facts = facts;
    while !rest.is_empty() {
        let n = chunk_len(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let (chunk_facts, facts_tail) = rest_facts.split_at(n);
        rest = tail;
        rest_facts = facts_tail;
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_records (id, ts, tenant, agent_id, subagent, verdict, policy, \
             policy_revision, provider, model, kind, status, record, cost_usd_micros) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(&r.id)
                .push_bind(r.ts_ms)
                .push_bind(&r.tenant)
                .push_bind(&r.agent_id)
                .push_bind(&r.subagent)
                .push_bind(&r.verdict)
                .push_bind(&r.policy)
                .push_bind(&r.policy_revision)
                .push_bind(&r.provider)
                .push_bind(&r.model)
                .push_bind(&r.kind)
                .push_bind(r.status.map(i64::from))
                .push_bind(&r.record_json)
                .push_bind(r.cost_usd_micros);
        });
        qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        let ids: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
        inserted += count_inserted(&mut rollup, chunk, chunk_facts, ids);
    }
    for mut upsert in rollup.upserts::<Sqlite>() {
        upsert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Counts in `rollup` the rows of `chunk` a statement inserted (`ids`, returned by it), and
/// returns how many there were.
fn count_inserted<'a>(
    rollup: &mut Rollup<'a>,
    chunk: &'a [AuditRow],
    facts: &'a [Cow<'a, RollupFacts>],
    ids: Vec<String>,
) -> u64 {
    let n = ids.len() as u64;
    if ids.len() == chunk.len() {
        rollup.add_inserted(chunk, facts, None);
    } else {
        let ids: HashSet<String> = ids.into_iter().collect();
        rollup.add_inserted(chunk, facts, Some(&ids));
    }
    n
}

/// PostgreSQL: column arrays through `UNNEST`, one statement per chunk, one transaction.
async fn insert_postgres(
    pool: &PgPool,
    rows: &[AuditRow],
    facts: &[Cow<'_, RollupFacts>],
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    let mut rollup = Rollup::default();
    for (chunk, chunk_facts) in rows
        .chunks(PG_ROWS_PER_INSERT)
        .zip(facts.chunks(PG_ROWS_PER_INSERT))
    {
        let text = |f: fn(&AuditRow) -> &str| chunk.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&AuditRow) -> Option<&str>| chunk.iter().map(f).collect::<Vec<_>>();
        let ids: Vec<String> = sqlx::query_scalar(PG_INSERT)
            .bind(text(|r| &r.id))
            .bind(chunk.iter().map(|r| r.ts_ms).collect::<Vec<i64>>())
            .bind(text(|r| &r.tenant))
            .bind(text(|r| &r.agent_id))
            .bind(opt(|r| r.subagent.as_deref()))
            .bind(text(|r| &r.verdict))
            .bind(opt(|r| r.policy.as_deref()))
            .bind(opt(|r| r.policy_revision.as_deref()))
            .bind(opt(|r| r.provider.as_deref()))
            .bind(opt(|r| r.model.as_deref()))
            .bind(text(|r| &r.kind))
            .bind(
                chunk
                    .iter()
                    .map(|r| r.status.map(i64::from))
                    .collect::<Vec<Option<i64>>>(),
            )
            .bind(text(|r| &r.record_json))
            .bind(
                chunk
                    .iter()
                    .map(|r| r.cost_usd_micros)
                    .collect::<Vec<Option<i64>>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
        inserted += count_inserted(&mut rollup, chunk, chunk_facts, ids);
    }
    for mut upsert in rollup.upserts::<Postgres>() {
        upsert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// `WHERE` for the first condition, `AND` after.
#[derive(Default)]
struct Sep(bool);

impl Sep {
    fn next(&mut self) -> &'static str {
        if std::mem::replace(&mut self.0, true) {
            " AND "
        } else {
            " WHERE "
        }
    }
}

/// The `WHERE` clause of `q`, on either backend; `true` when it wrote one (a further
/// condition then starts with `AND`).
pub(crate) fn push_filters<'a, DB: Database>(
    qb: &mut QueryBuilder<'a, DB>,
    q: &'a AuditQuery,
) -> bool
where
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut sep = Sep::default();
    if let Some(t) = &q.tenant {
        if q.include_unattributed {
            qb.push(sep.next())
                .push("tenant IN (")
                .push_bind(t.as_str())
                .push(", '')");
        } else {
            qb.push(sep.next()).push("tenant = ").push_bind(t.as_str());
        }
    }
    let text = [
        ("agent_id = ", &q.agent_id),
        ("subagent = ", &q.subagent),
        ("verdict = ", &q.verdict),
        ("policy = ", &q.policy),
        ("provider = ", &q.provider),
        ("model = ", &q.model),
    ];
    for (cond, value) in text {
        if let Some(v) = value {
            qb.push(sep.next()).push(cond).push_bind(v.as_str());
        }
    }
    if let Some(since) = q.since_ms {
        qb.push(sep.next()).push("ts >= ").push_bind(since);
    }
    if let Some(until) = q.until_ms {
        qb.push(sep.next()).push("ts < ").push_bind(until);
    }
    sep.0
}

/// Largest chunk for `remaining` rows: full chunks, then powers of two.
fn chunk_len(remaining: usize) -> usize {
    if remaining >= ROWS_PER_INSERT {
        ROWS_PER_INSERT
    } else {
        // Highest power of two not above `remaining` (>= 1 since remaining >= 1).
        1 << (usize::BITS - 1 - remaining.leading_zeros())
    }
}

fn record_of(row: &impl Columns) -> Result<Value> {
    let text = row.text("record")?;
    serde_json::from_str(&text).map_err(|e| StoreError::corrupt("audit_records.record", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_full_then_powers_of_two() {
        let mut shapes = std::collections::BTreeSet::new();
        for total in 1..=1000usize {
            let mut left = total;
            let mut sum = 0;
            while left > 0 {
                let n = chunk_len(left);
                assert!(n >= 1 && n <= left && n <= ROWS_PER_INSERT);
                shapes.insert(n);
                left -= n;
                sum += n;
            }
            assert_eq!(sum, total);
        }
        assert_eq!(shapes.len(), 9, "{shapes:?}");
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    fn row(id: &str, usage: Value) -> AuditRow {
        AuditRow {
            id: id.to_owned(),
            ts_ms: 1,
            tenant: "acme".to_owned(),
            agent_id: "bot".to_owned(),
            subagent: None,
            verdict: "allow".to_owned(),
            policy: None,
            policy_revision: None,
            provider: Some("openai".to_owned()),
            model: None,
            kind: "http".to_owned(),
            status: Some(200),
            cost_usd_micros: None,
            rollup: None,
            record_json: serde_json::json!({"id": id, "usage": usage}).to_string(),
        }
    }

    /// Missing usage is stored with `null` counts (the audit record's form): they come back
    /// as `null`, and a sum over the table skips them instead of adding zeros.
    #[tokio::test]
    async fn null_counts_round_trip_and_are_skipped_by_sums() -> Result<()> {
        let store = Store::connect("sqlite::memory:").await?;
        let counts = |i: u64, o: u64| {
            serde_json::json!({"input_tokens": i, "output_tokens": o, "cached_input_tokens": 0,
                "reasoning_tokens": 0, "total_tokens": i + o, "source": "provider"})
        };
        let missing = serde_json::json!({"input_tokens": null, "output_tokens": null,
            "cached_input_tokens": null, "reasoning_tokens": null, "total_tokens": null,
            "source": "missing"});
        let rows = [
            row("a", counts(10, 5)),
            row("b", missing.clone()),
            row("c", counts(7, 0)),
            row("d", Value::Null),
        ];
        assert_eq!(store.insert_audit_batch(&rows).await?, 4);
        let back = store.get_audit(None, "b").await?;
        assert_eq!(back.map(|r| r["usage"].clone()), Some(missing));

        let Pool::Sqlite(pool) = &store.pool else {
            return Err(StoreError::invalid("test", "expected SQLite"));
        };
        let (sum, counted, all): (Option<i64>, i64, i64) = sqlx::query_as(
            "SELECT SUM(json_extract(record, '$.usage.total_tokens')), \
             COUNT(json_extract(record, '$.usage.total_tokens')), COUNT(*) FROM audit_records",
        )
        .fetch_one(pool)
        .await?;
        assert_eq!((sum, counted, all), (Some(22), 2, 4));
        let avg: Option<f64> = sqlx::query_scalar(
            "SELECT AVG(json_extract(record, '$.usage.input_tokens')) FROM audit_records",
        )
        .fetch_one(pool)
        .await?;
        assert_eq!(avg, Some(8.5), "an average over known counts only");
        let missing_rows: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_records \
             WHERE json_extract(record, '$.usage.source') = 'missing' \
             AND json_type(record, '$.usage.input_tokens') = 'null'",
        )
        .fetch_one(pool)
        .await?;
        assert_eq!(missing_rows, 1);
        Ok(())
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    /// The query plan of the page query for `q`, one line per step.
    async fn plan(store: &Store, q: &AuditQuery) -> Vec<String> {
        use sqlx::Row;
        let Pool::Sqlite(pool) = &store.pool else {
            return Vec::new();
        };
        let mut page =
            QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN SELECT record FROM audit_records");
        push_filters(&mut page, q);
        page.push(" ORDER BY ts DESC, id DESC LIMIT 50");
        let rows = page.build().fetch_all(pool).await.unwrap_or_default();
        rows.iter()
            .filter_map(|r| r.try_get::<String, _>("detail").ok())
            .collect()
    }

    #[tokio::test]
    async fn common_queries_use_an_index_and_need_no_sort() -> Result<()> {
        let store = Store::connect("sqlite::memory:").await?;
        let some = |v: &str| Some(v.to_owned());
        let queries = [
            AuditQuery {
                since_ms: Some(1),
                ..Default::default()
            },
            AuditQuery {
                tenant: some("acme"),
                since_ms: Some(1),
                ..Default::default()
            },
            AuditQuery {
                agent_id: some("a"),
                since_ms: Some(1),
                ..Default::default()
            },
            AuditQuery {
                verdict: some("deny"),
                since_ms: Some(1),
                ..Default::default()
            },
        ];
        for q in queries {
            let plan = plan(&store, &q).await;
            let text = plan.join(" | ");
            assert!(text.contains("USING INDEX"), "{q:?}: {text}");
            assert!(!text.contains("TEMP B-TREE"), "{q:?}: {text}");
        }
        Ok(())
    }
}
