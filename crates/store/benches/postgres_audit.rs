//! The audit table on PostgreSQL (needs `PORTCULLIS_TEST_POSTGRES_URL`, as the store tests:
//! `source scripts/services/postgres.sh` starts a throwaway server):
//!
//! - `postgres_audit_insert/N`: batched inserts (`INSERT .. SELECT FROM UNNEST`) of N fresh
//!   records per transaction into the day-partitioned table, in records per second;
//! - `postgres_decisions_1m/*`: the `/v1/decisions` query (page of 50 plus the total) over
//!   1,000,000 stored records, all within the last 24 hours, a third of them the operator's
//!   tenant's: the default query (that tenant and the unattributed records, the last 24
//!   hours; 333,334 matches to count) and one filtered by agent (33,334), after the
//!   vacuum autovacuum would run.
//!
//! Each run uses a database of its own, dropped at the end.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_store::testing::TestDatabase;
use portcullis_store::{AuditQuery, AuditRow, Store};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Records stored for the query benchmarks.
const QUERY_RECORDS: u64 = 1_000_000;
/// The default `since` of `/v1/decisions` (portcullis-audit's `DEFAULT_SINCE_MS`).
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A record shaped like DESIGN §5 (about 700 bytes of JSON) at `ts_ms`, for one of 3
/// tenants and 30 agents.
fn record(seq: u64, ts_ms: i64) -> AuditRow {
    let id = format!("{ts_ms:013x}{seq:012x}");
    let tenant = ["default", "acme", "globex"][(seq % 3) as usize];
    let agent = format!("bot_{}", seq % 30);
    let verdict = if seq.is_multiple_of(10) {
        "deny"
    } else {
        "allow"
    };
    let record = json!({
        "id": id, "ts": ts_ms, "tenant": tenant, "agent_id": agent,
        "subagent": null, "kind": "http", "method": "POST", "scheme": "https",
        "host": "api.openai.com", "port": 443, "path": "/v1/chat/completions",
        "provider": "openai", "api": "chat.completions", "model": "gpt-4o-mini", "stream": true,
        "verdict": verdict, "policy": "llm_allowlist", "reasons": [], "would_deny": [],
        "decision_id": format!("dec_{seq:016x}"), "status": 200, "error": null,
        "latency_ms": 812, "policy_us": 41, "upstream_ttfb_ms": 230, "bytes_in": 1834,
        "bytes_out": 20411, "usage": {"input_tokens": 1200, "output_tokens": 310,
        "cached_input_tokens": 1024, "reasoning_tokens": 0, "total_tokens": 1510,
        "source": "provider"}, "tls_intercepted": true, "client_addr": "127.0.0.1:53124"
    });
    AuditRow {
        id,
        ts_ms,
        tenant: tenant.into(),
        agent_id: agent,
        subagent: None,
        verdict: verdict.into(),
        policy: Some("llm_allowlist".into()),
        policy_revision: None,
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        kind: "http".into(),
        status: Some(200),
        cost_usd_micros: None,
        rollup: None,
        record_json: record.to_string(),
    }
}

/// A store on a fresh database with today's partitions created (as `serve` does at start).
async fn fresh_store() -> (TestDatabase, Store) {
    let db = TestDatabase::create().await;
    let store = match Store::connect(db.url()).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    if let Err(e) = store.maintain_audit(now_ms(), None).await {
        panic!("audit upkeep: {e}");
    }
    (db, store)
}

fn insert(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (_db, store) = rt.block_on(fresh_store());
    let mut group = c.benchmark_group("postgres_audit_insert");
    group.sample_size(20);
    let mut seq = 0u64;
    let base = now_ms();
    for batch in [100u64, 1_000, 5_000] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let rows: Vec<AuditRow> = (seq..seq + batch)
                        .map(|s| record(s, base + i64::try_from(s / 16).unwrap_or(0)))
                        .collect();
                    seq += batch;
                    let start = Instant::now();
                    match rt.block_on(store.insert_audit_batch(&rows)) {
                        Ok(n) if n == batch => {}
                        Ok(n) => panic!("{n} of {batch} records inserted"),
                        Err(e) => panic!("insert: {e}"),
                    }
                    spent += start.elapsed();
                }
                spent
            });
        });
    }
    group.finish();
    rt.block_on(store.close());
}

fn decisions(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (db, store) = rt.block_on(fresh_store());
    // 1,000,000 records spread evenly over the last 24 hours: every one of them is inside
    // the default window, the worst case for the default query's total.
    let now = now_ms();
    let step = DAY_MS / i64::try_from(QUERY_RECORDS).unwrap_or(1);
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < QUERY_RECORDS {
        let end = (seq + 10_000).min(QUERY_RECORDS);
        let rows: Vec<AuditRow> = (seq..end)
            .map(|s| {
                let back = i64::try_from(QUERY_RECORDS - s).unwrap_or(0) * step;
                record(s, now - back)
            })
            .collect();
        if let Err(e) = rt.block_on(store.insert_audit_batch(&rows)) {
            panic!("fill: {e}");
        }
        seq = end;
    }
    let fill = start.elapsed();
    eprintln!(
        "filled {QUERY_RECORDS} records in {:.1}s ({:.0} records/s, batches of 10,000)",
        fill.as_secs_f64(),
        QUERY_RECORDS as f64 / fill.as_secs_f64()
    );
    match rt.block_on(vacuum_analyze(db.url())) {
        Ok(bytes) => eprintln!(
            "audit_records with its indexes: {} MB, {:.0} bytes per record",
            bytes / 1_000_000,
            bytes as f64 / QUERY_RECORDS as f64
        ),
        Err(e) => panic!("vacuum: {e}"),
    }

    let default_query = AuditQuery {
        tenant: Some("default".into()),
        include_unattributed: true,
        since_ms: Some(now_ms() - DAY_MS),
        limit: 50,
        ..AuditQuery::default()
    };
    let by_agent = AuditQuery {
        // bot_3 is one of the default tenant's ten agents (seq % 3 == 0).
        agent_id: Some("bot_3".into()),
        ..default_query.clone()
    };
    let mut group = c.benchmark_group("postgres_decisions_1m");
    group.sample_size(30);
    for (name, q) in [("default", &default_query), ("agent", &by_agent)] {
        group.bench_function(name, |b| {
            b.iter(|| match rt.block_on(store.query_audit(q)) {
                Ok(page) if page.records.len() == 50 => page.total,
                Ok(page) => panic!("{} records on the page", page.records.len()),
                Err(e) => panic!("query: {e}"),
            });
        });
    }
    group.finish();
    rt.block_on(store.close());
}

/// What autovacuum does to an insert-only table (PostgreSQL 13+): statistics, and the
/// visibility map that lets the count be an index-only scan. Right after a bulk load,
/// before that, the count reads the heap. Returns the bytes the table and its indexes take
/// on disk, over every partition.
async fn vacuum_analyze(url: &str) -> Result<i64, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("VACUUM ANALYZE audit_records")
        .execute(&mut conn)
        .await?;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::int8 FROM pg_inherits \
         WHERE inhparent = 'audit_records'::regclass",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(bytes)
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build a tokio runtime: {e}"),
    };
    insert(c, &rt);
    decisions(c, &rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
