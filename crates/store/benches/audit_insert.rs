//! Batched audit inserts into a file-backed SQLite store (WAL), in records per second.
//!
//! Each iteration writes one batch of fresh records (built outside the timed section) into a
//! table that keeps growing, as the audit writer does.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis_store::{AuditRow, Store};
use serde_json::json;
use std::time::{Duration, Instant};

/// A record shaped like DESIGN §5 (about 700 bytes of JSON).
fn record(seq: u64) -> AuditRow {
    let ts_ms = 1_763_900_000_000 + i64::try_from(seq).unwrap_or(0);
    let id = format!("{ts_ms:013x}{seq:012x}");
    let agent = ["billing_bot", "support_bot", "research_bot"][(seq % 3) as usize];
    let verdict = if seq.is_multiple_of(10) {
        "deny"
    } else {
        "allow"
    };
    let record = json!({
        "id": id, "ts": "2026-11-23T21:00:00.000Z", "tenant": "acme", "agent_id": agent,
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
        tenant: "acme".into(),
        agent_id: agent.into(),
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

fn bench(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        eprintln!("cannot build a tokio runtime");
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("cannot create a temp dir");
        return;
    };
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = match rt.block_on(Store::connect(&url)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect: {e}");
            return;
        }
    };

    let mut group = c.benchmark_group("audit_insert");
    let mut seq = 0u64;
    for batch in [100u64, 1_000, 5_000] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let rows: Vec<AuditRow> = (seq..seq + batch).map(record).collect();
                    seq += batch;
                    let start = Instant::now();
                    if let Err(e) = rt.block_on(store.insert_audit_batch(&rows)) {
                        eprintln!("insert: {e}");
                    }
                    spent += start.elapsed();
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
