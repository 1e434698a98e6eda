//! What the operator console reads from the audit table beyond `GET /v1/decisions`:
//! pages by keyset (newest first, fast at any depth), host and status filters, a capped
//! count, and aggregates (requests per verdict over time, tokens per agent, model or
//! provider, top lists, refusals by cause, the shadow report, per-agent activity,
//! sub-agents seen).
//!
//! Every query takes a [`Scope`] (the caller's tenant) and a time window. Pages and counts
//! walk one of the `(…, ts, id)` indexes of migration 1 (on PostgreSQL, within the day
//! partitions the window leaves). The aggregates read the per-minute rollups of migration 7
//! (`rollup.rs`), a few rows per minute instead of every record's JSON, and so count the
//! whole minutes the window overlaps (a window on minute boundaries, as the console's are,
//! is exact). The SQL is the same on both backends except the JSON accessors (`Json`:
//! `record` is TEXT on both, read with `json_extract` by SQLite and parsed as `json` by
//! PostgreSQL) and sums, cast back to BIGINT because PostgreSQL sums BIGINTs as NUMERIC.

use crate::backend::{on_pool, Columns};
use crate::error::{Result, StoreError};
use crate::rollup::{MINUTE_MS, SHADOW_VERDICTS};
use crate::store::{Backend, Store};
use serde_json::Value;
use sqlx::{Database, Encode, QueryBuilder, Type};

/// The JSON accessors of one dialect.
struct Json {
    /// `host` of a record, as TEXT.
    host: &'static str,
    /// The shadow policies of a record (`would_deny`) as rows `je` with a `value` column.
    would_deny_rows: &'static str,
}

const SQLITE_JSON: Json = Json {
    host: "json_extract(record, '$.host')",
    would_deny_rows: "json_each(audit_records.record, '$.would_deny') AS je",
};

/// `record` is TEXT: each accessor parses it as `json`, which extracts a field without
/// building the `jsonb` tree. `would_deny` is extracted once per record (LATERAL) and
/// expanded only when it is an array (`json_array_elements_text` raises on anything else).
const POSTGRES_JSON: Json = Json {
    host: "(audit_records.record::json ->> 'host')",
    would_deny_rows: "LATERAL (SELECT audit_records.record::json -> 'would_deny' AS wd) AS wdl, \
         json_array_elements_text(CASE WHEN json_typeof(wdl.wd) = 'array' THEN wdl.wd END) \
         AS je(value)",
};

fn json(backend: Backend) -> &'static Json {
    match backend {
        Backend::Sqlite => &SQLITE_JSON,
        Backend::Postgres => &POSTGRES_JSON,
    }
}

/// Largest page of console records.
pub const MAX_CONSOLE_PAGE: u32 = 500;

/// Whose records a query sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Only this tenant's records (`None`: every tenant, for tools only).
    pub tenant: Option<String>,
    /// With `tenant`: also the records of requests refused before any agent was identified
    /// (stored with an empty tenant). For the platform tenant.
    pub include_unattributed: bool,
}

/// Filters of the console's Requests page; `None` means "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFilter {
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
    /// Only this target host.
    pub host: Option<String>,
    /// Only this HTTP status.
    pub status: Option<u16>,
    /// Records at or after this time (Unix ms).
    pub since_ms: i64,
    /// Records before this time (Unix ms), if bounded.
    pub until_ms: Option<i64>,
}

/// A position in the newest-first order: a record's time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp, Unix ms.
    pub ts_ms: i64,
    /// Record id.
    pub id: String,
}

/// A record with its cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleRecord {
    /// Where it sits in the order (pass it back for the next page or for newer records).
    pub cursor: Cursor,
    /// The full record.
    pub record: Value,
}

/// Requests per verdict in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictBucket {
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Verdict.
    pub verdict: String,
    /// Records.
    pub requests: u64,
}

/// What usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The agent.
    Agent,
    /// The LLM model.
    Model,
    /// The LLM provider.
    Provider,
}

impl Dimension {
    fn column(self) -> &'static str {
        match self {
            Dimension::Agent => "agent_id",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
        }
    }
}

/// Tokens and requests of one group in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// The group (agent id, model or provider; empty when unknown).
    pub key: String,
    /// Reported tokens (records without reported usage add nothing).
    pub tokens: u64,
    /// Records.
    pub requests: u64,
}

/// One row of a top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// The group (agent id, model or provider; empty when unknown).
    pub key: String,
    /// Records.
    pub requests: u64,
    /// Reported tokens.
    pub tokens: u64,
    /// Records refused (deny, rate_limited, error).
    pub refused: u64,
}

/// Refusals of one cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// `deny`, `rate_limited` or `error`.
    pub verdict: String,
    /// The deciding policy, when one decided.
    pub policy: Option<String>,
    /// The machine error code, when one was recorded.
    pub code: Option<String>,
    /// Records.
    pub count: u64,
}

/// Would-be denials of one shadow policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRow {
    /// Policy name.
    pub policy: String,
    /// Records it would have denied.
    pub count: u64,
    /// The newest such records.
    pub examples: Vec<Value>,
}

/// Recent activity of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentActivity {
    /// Records since the minute mark.
    pub requests_last_minute: u64,
    /// Reported tokens since the day mark.
    pub tokens_today: u64,
}

/// A sub-agent seen in the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubagentSeen {
    /// Parent agent.
    pub agent_id: String,
    /// Sub-agent name as the agent sent it.
    pub subagent: String,
    /// Records.
    pub requests: u64,
    /// Newest record, Unix ms.
    pub last_ms: i64,
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

fn push_scope<'a, DB>(qb: &mut QueryBuilder<'a, DB>, sep: &mut Sep, scope: &'a Scope)
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    if let Some(t) = &scope.tenant {
        if scope.include_unattributed {
            qb.push(sep.next())
                .push("tenant IN (")
                .push_bind(t.as_str())
                .push(", '')");
        } else {
            qb.push(sep.next()).push("tenant = ").push_bind(t.as_str());
        }
    }
}

fn push_window<'a, DB>(qb: &mut QueryBuilder<'a, DB>, sep: &mut Sep, since: i64, until: Option<i64>)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    qb.push(sep.next()).push("ts >= ").push_bind(since);
    if let Some(u) = until {
        qb.push(sep.next()).push("ts < ").push_bind(u);
    }
}

fn push_filter<'a, DB>(
    qb: &mut QueryBuilder<'a, DB>,
    sep: &mut Sep,
    json: &Json,
    scope: &'a Scope,
    f: &'a RequestFilter,
) where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    push_scope(qb, sep, scope);
    let text = [
        ("agent_id = ", &f.agent_id),
        ("subagent = ", &f.subagent),
        ("verdict = ", &f.verdict),
        ("policy = ", &f.policy),
        ("provider = ", &f.provider),
        ("model = ", &f.model),
    ];
    for (cond, value) in text {
        if let Some(v) = value {
            qb.push(sep.next()).push(cond).push_bind(v.as_str());
        }
    }
    if let Some(h) = &f.host {
        qb.push(sep.next())
            .push(json.host)
            .push(" = ")
            .push_bind(h.as_str());
    }
    if let Some(s) = f.status {
        qb.push(sep.next())
            .push("status = ")
            .push_bind(i64::from(s));
    }
    push_window(qb, sep, f.since_ms, f.until_ms);
}

/// The rollup minutes overlapping `[since, until)`.
fn push_minutes<'a, DB>(
    qb: &mut QueryBuilder<'a, DB>,
    sep: &mut Sep,
    since: i64,
    until: Option<i64>,
) where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    qb.push(sep.next())
        .push("minute > ")
        .push_bind(since.saturating_sub(MINUTE_MS));
    if let Some(u) = until {
        qb.push(sep.next()).push("minute < ").push_bind(u);
    }
}

/// `'a', 'b', 'c'` of SQL string literals (constants only, never input).
fn sql_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rollup's `''` (absent) as `None`.
fn absent_as_none(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A count or sum column (NULL, e.g. a sum over no reported usage, reads as 0).
fn u64_of(row: &impl Columns, col: &str) -> Result<u64> {
    Ok(row
        .opt_int(col)?
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0))
}

fn json_of(row: &impl Columns) -> Result<Value> {
    let text = row.text("record")?;
    serde_json::from_str(&text).map_err(|e| StoreError::corrupt("audit_records.record", e))
}

fn entry_of(row: &impl Columns) -> Result<ConsoleRecord> {
    Ok(ConsoleRecord {
        cursor: Cursor {
            ts_ms: row.int("ts")?,
            id: row.text("id")?,
        },
        record: json_of(row)?,
    })
}

/// Verdicts of refused records.
const REFUSED: [&str; 3] = ["deny", "rate_limited", "error"];

/// The bucket number of a rollup minute: buckets of `bucket` ms from `since`; the minute
/// straddling `since` counts in the first.
fn push_bucket<'a, DB>(qb: &mut QueryBuilder<'a, DB>, since: i64, bucket: i64)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    qb.push("CASE WHEN minute < ")
        .push_bind(since)
        .push(" THEN 0 ELSE (minute - ")
        .push_bind(since)
        .push(") / ")
        .push_bind(bucket)
        .push(" END");
}

fn bucket_of(bucket_ms: i64) -> Result<i64> {
    if bucket_ms <= 0 {
        return Err(StoreError::invalid("bucket", "must be positive"));
    }
    Ok(bucket_ms)
}

impl Store {
    /// Records matching `f` in `scope`, newest first, strictly older than `before` when
    /// given (keyset paging: as fast on the last page as on the first), at most `limit`
    /// (capped at [`MAX_CONSOLE_PAGE`]).
    pub async fn console_requests(
        &self,
        scope: &Scope,
        f: &RequestFilter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ConsoleRecord>> {
        let json = json(self.backend());
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT id, ts, record FROM audit_records");
            let mut sep = Sep::default();
            push_filter(&mut qb, &mut sep, json, scope, f);
            if let Some(c) = before {
                qb.push(sep.next())
                    .push("(ts < ")
                    .push_bind(c.ts_ms)
                    .push(" OR (ts = ")
                    .push_bind(c.ts_ms)
                    .push(" AND id < ")
                    .push_bind(c.id.as_str())
                    .push("))");
            }
            qb.push(" ORDER BY ts DESC, id DESC LIMIT ")
                .push_bind(i64::from(limit.min(MAX_CONSOLE_PAGE)));
            let rows = qb.build().fetch_all(p).await?;
            rows.iter().map(entry_of).collect()
        })
    }

    /// How many records match, counting at most `cap` (so a count over a huge window costs
    /// no more than `cap` index steps); the answer is `cap` when there are at least `cap`.
    pub async fn console_count(&self, scope: &Scope, f: &RequestFilter, cap: u64) -> Result<u64> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let json = json(self.backend());
        on_pool!(&self.pool, |p| {
            let mut qb =
                QueryBuilder::new("SELECT COUNT(*) AS n FROM (SELECT 1 FROM audit_records");
            let mut sep = Sep::default();
            push_filter(&mut qb, &mut sep, json, scope, f);
            qb.push(" LIMIT ").push_bind(cap).push(") AS capped");
            let row = qb.build().fetch_one(p).await?;
            u64_of(&row, "n")
        })
    }

    /// Records per verdict in buckets of `bucket_ms` over `[since, until)` (the minute
    /// that straddles `since` counts in the first bucket).
    pub async fn console_verdict_series(
        &self,
        scope: &Scope,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<VerdictBucket>> {
        let bucket = bucket_of(bucket_ms)?;
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT ");
            push_bucket(&mut qb, since_ms, bucket);
            qb.push(" AS b, verdict, CAST(SUM(requests) AS BIGINT) AS n FROM audit_rollup");
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, Some(until_ms));
            qb.push(" GROUP BY b, verdict ORDER BY b");
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(VerdictBucket {
                        start_ms: since_ms.saturating_add(r.int("b")?.saturating_mul(bucket)),
                        verdict: r.text("verdict")?,
                        requests: u64_of(r, "n")?,
                    })
                })
                .collect()
        })
    }

    /// Reported tokens and records of LLM requests per `dim` in buckets of `bucket_ms` over
    /// `[since, until)`.
    pub async fn console_token_series(
        &self,
        scope: &Scope,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
        dim: Dimension,
    ) -> Result<Vec<TokenBucket>> {
        let bucket = bucket_of(bucket_ms)?;
        let col = dim.column();
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT ");
            push_bucket(&mut qb, since_ms, bucket);
            qb.push(format!(
                " AS b, {col} AS k, CAST(SUM(tokens) AS BIGINT) AS t, \
                 CAST(SUM(requests) AS BIGINT) AS n FROM audit_rollup"
            ));
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, Some(until_ms));
            qb.push(sep.next()).push("provider <> ''");
            qb.push(" GROUP BY b, k ORDER BY b");
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(TokenBucket {
                        start_ms: since_ms.saturating_add(r.int("b")?.saturating_mul(bucket)),
                        key: r.text("k")?,
                        tokens: u64_of(r, "t")?,
                        requests: u64_of(r, "n")?,
                    })
                })
                .collect()
        })
    }

    /// The `limit` groups of `dim` with the most records over `[since, until)`.
    pub async fn console_top(
        &self,
        scope: &Scope,
        since_ms: i64,
        until_ms: i64,
        dim: Dimension,
        limit: u32,
    ) -> Result<Vec<TopRow>> {
        let col = dim.column();
        let refused = sql_list(&REFUSED);
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new(format!(
                "SELECT {col} AS k, CAST(SUM(requests) AS BIGINT) AS n, \
                 CAST(SUM(tokens) AS BIGINT) AS t, \
                 CAST(SUM(CASE WHEN verdict IN ({refused}) THEN requests ELSE 0 END) \
                 AS BIGINT) AS refused FROM audit_rollup"
            ));
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, Some(until_ms));
            if dim != Dimension::Agent {
                qb.push(sep.next()).push(format!("{col} <> ''"));
            }
            qb.push(" GROUP BY k ORDER BY n DESC, k LIMIT ")
                .push_bind(i64::from(limit.min(MAX_CONSOLE_PAGE)));
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(TopRow {
                        key: r.text("k")?,
                        requests: u64_of(r, "n")?,
                        tokens: u64_of(r, "t")?,
                        refused: u64_of(r, "refused")?,
                    })
                })
                .collect()
        })
    }

    /// Refused records over `[since, until)` grouped by verdict, policy and error code,
    /// most frequent first, at most `limit` causes.
    pub async fn console_refusals(
        &self,
        scope: &Scope,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<RefusalRow>> {
        let refused = sql_list(&REFUSED);
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new(
                "SELECT verdict, policy, error, CAST(SUM(requests) AS BIGINT) AS n \
                 FROM audit_rollup",
            );
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, Some(until_ms));
            qb.push(sep.next()).push(format!("verdict IN ({refused})"));
            qb.push(
                " GROUP BY verdict, policy, error ORDER BY n DESC, verdict, policy, error LIMIT ",
            )
            .push_bind(i64::from(limit.min(MAX_CONSOLE_PAGE)));
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(RefusalRow {
                        verdict: r.text("verdict")?,
                        policy: absent_as_none(r.text("policy")?),
                        code: absent_as_none(r.text("error")?),
                        count: u64_of(r, "n")?,
                    })
                })
                .collect()
        })
    }

    /// The shadow report over `[since, until)`: for each policy named in records'
    /// `would_deny`, how many records it would have denied and the `examples` newest.
    ///
    /// The counts come from the shadow rollup; the examples are read from the records of
    /// the newest minutes the rollup names for that policy, one minute at a time, so a
    /// report never walks the window's records.
    pub async fn console_shadow(
        &self,
        scope: &Scope,
        since_ms: i64,
        until_ms: i64,
        examples: u32,
    ) -> Result<Vec<ShadowRow>> {
        let verdicts = format!("verdict IN ({})", sql_list(&SHADOW_VERDICTS));
        let rows_of = json(self.backend()).would_deny_rows;
        let examples = i64::from(examples.min(MAX_CONSOLE_PAGE));
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new(
                "SELECT policy, CAST(SUM(requests) AS BIGINT) AS n FROM audit_shadow_rollup",
            );
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, Some(until_ms));
            qb.push(" GROUP BY policy ORDER BY n DESC, policy LIMIT 100");
            let rows = qb.build().fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let policy = r.text("policy")?;
                let count = u64_of(r, "n")?;
                // Each minute named holds at least one such record; the two minutes that
                // straddle the window's ends may hold them outside it.
                let mut mq = QueryBuilder::new("SELECT DISTINCT minute FROM audit_shadow_rollup");
                let mut sep = Sep::default();
                push_scope(&mut mq, &mut sep, scope);
                push_minutes(&mut mq, &mut sep, since_ms, Some(until_ms));
                mq.push(sep.next())
                    .push("policy = ")
                    .push_bind(policy.as_str());
                mq.push(" ORDER BY minute DESC LIMIT ")
                    .push_bind(examples.saturating_add(2));
                let minutes: Vec<i64> = mq.build_query_scalar().fetch_all(p).await?;
                let mut found = Vec::new();
                for minute in minutes {
                    let want = examples - found.len() as i64;
                    if want <= 0 {
                        break;
                    }
                    let mut ex = QueryBuilder::new(format!(
                        "SELECT audit_records.record AS record FROM audit_records, {rows_of}"
                    ));
                    let mut sep = Sep::default();
                    push_scope(&mut ex, &mut sep, scope);
                    push_window(
                        &mut ex,
                        &mut sep,
                        minute.max(since_ms),
                        Some(minute.saturating_add(MINUTE_MS).min(until_ms)),
                    );
                    ex.push(sep.next()).push(&verdicts);
                    ex.push(sep.next())
                        .push("je.value = ")
                        .push_bind(policy.as_str());
                    // `id` alone would be json_each's column on SQLite.
                    ex.push(" ORDER BY audit_records.ts DESC, audit_records.id DESC LIMIT ")
                        .push_bind(want);
                    for row in ex.build().fetch_all(p).await? {
                        found.push(json_of(&row)?);
                    }
                }
                out.push(ShadowRow {
                    examples: found,
                    policy,
                    count,
                });
            }
            Ok(out)
        })
    }

    /// Per agent of `scope`: records since `minute_ms` (from the records) and reported
    /// tokens since `day_ms` (from the rollups: a day starts on a minute).
    pub async fn console_agent_activity(
        &self,
        scope: &Scope,
        minute_ms: i64,
        day_ms: i64,
    ) -> Result<Vec<(String, AgentActivity)>> {
        let mut out: std::collections::BTreeMap<String, AgentActivity> = Default::default();
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new("SELECT agent_id, COUNT(*) AS n FROM audit_records");
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_window(&mut qb, &mut sep, minute_ms, None);
            qb.push(" GROUP BY agent_id");
            for r in qb.build().fetch_all(p).await? {
                out.entry(r.text("agent_id")?)
                    .or_default()
                    .requests_last_minute = u64_of(&r, "n")?;
            }
            let mut qb = QueryBuilder::new(
                "SELECT agent_id, CAST(SUM(tokens) AS BIGINT) AS t FROM audit_rollup",
            );
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, day_ms, None);
            qb.push(sep.next()).push("provider <> ''");
            qb.push(" GROUP BY agent_id");
            for r in qb.build().fetch_all(p).await? {
                out.entry(r.text("agent_id")?).or_default().tokens_today = u64_of(&r, "t")?;
            }
        });
        Ok(out.into_iter().collect())
    }

    /// Sub-agents named in records since `since_ms`, by parent then name (from the
    /// rollups: the count includes the rest of the minute `since_ms` falls in).
    pub async fn console_subagents(
        &self,
        scope: &Scope,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<SubagentSeen>> {
        on_pool!(&self.pool, |p| {
            let mut qb = QueryBuilder::new(
                "SELECT agent_id, subagent, CAST(SUM(requests) AS BIGINT) AS n, \
                 MAX(last_ts) AS last FROM audit_subagent_rollup",
            );
            let mut sep = Sep::default();
            push_scope(&mut qb, &mut sep, scope);
            push_minutes(&mut qb, &mut sep, since_ms, None);
            qb.push(" GROUP BY agent_id, subagent HAVING MAX(last_ts) >= ")
                .push_bind(since_ms);
            qb.push(" ORDER BY agent_id, subagent LIMIT ")
                .push_bind(i64::from(limit.min(MAX_CONSOLE_PAGE)));
            let rows = qb.build().fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(SubagentSeen {
                        agent_id: r.text("agent_id")?,
                        subagent: r.text("subagent")?,
                        requests: u64_of(r, "n")?,
                        last_ms: r.opt_int("last")?.unwrap_or(0),
                    })
                })
                .collect()
        })
    }
}
