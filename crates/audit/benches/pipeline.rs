//! Sustained audit throughput: records submitted and written to SQLite + JSONL; and the
//! per-request part of it, serialising one record once for every sink (what `submit` does
//! on the request's own task).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_audit::{
    AuditMetrics, AuditPipeline, AuditRecord, AuditSettings, RequestKind, SinkKind,
};
use portcullis_core::Verdict;
use portcullis_llm::Usage;
use portcullis_store::Store;
use std::time::{Duration, Instant};

const PER_ITER: u64 = 20_000;

fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("01JDZ{i:021}"),
        1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
        "acme",
        "agent-1",
        RequestKind::Http,
        Verdict::Allow,
    );
    r.subagent = Some("researcher".into());
    r.method = Some("POST".into());
    r.scheme = Some("https".into());
    r.host = Some("api.openai.com".into());
    r.port = Some(443);
    r.path = Some("/v1/chat/completions".into());
    r.provider = Some("openai".into());
    r.api = Some("chat.completions".into());
    r.model = Some("gpt-4o-mini".into());
    r.stream = Some(true);
    r.policy = Some("models".into());
    r.reasons = vec!["allowed by models".into()];
    r.decision_id = Some(format!("dec-{i}"));
    r.status = Some(200);
    r.latency_ms = 812;
    r.policy_us = Some(45);
    r.upstream_ttfb_ms = Some(240);
    r.bytes_in = 1_834;
    r.bytes_out = 9_120;
    r.usage = Some(Usage::provider(1_200, 350, 1_024, 0));
    r.tls_intercepted = true;
    r.client_addr = Some("127.0.0.1:53124".into());
    r
}

fn pipeline(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let Ok(store) = rt.block_on(Store::connect(&db)) else {
        return;
    };
    let cfg = AuditSettings {
        sinks: vec![SinkKind::Store, SinkKind::Jsonl],
        jsonl_path: dir.path().join("audit.jsonl"),
        jsonl_max_bytes: 256 * 1024 * 1024,
        ..AuditSettings::default()
    };
    let Ok(metrics) = AuditMetrics::unregistered() else {
        return;
    };
    let started = rt.block_on(async { AuditPipeline::start(cfg, Some(store), metrics) });
    let Ok((audit, _task)) = started else { return };

    let mut group = c.benchmark_group("audit_pipeline");
    group.throughput(Throughput::Elements(PER_ITER));
    group.sample_size(10);
    let mut next = 0u64;
    group.bench_function("sqlite+jsonl", |b| {
        b.iter_custom(|iters| {
            let audit = audit.clone();
            let first = next;
            next += iters * PER_ITER;
            let last = next;
            rt.block_on(async move {
                let start = Instant::now();
                for i in first..last {
                    if audit.submit_wait(record(i)).await.is_err() {
                        break;
                    }
                }
                let m = audit.metrics();
                while (m.written(SinkKind::Store) < last || m.written(SinkKind::Jsonl) < last)
                    && m.failed(SinkKind::Store) + m.failed(SinkKind::Jsonl) == 0
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    rt.block_on(audit.shutdown());
}

fn serialise(c: &mut Criterion) {
    let r = record(7);
    c.bench_function("audit_record_serialise_once", |b| {
        b.iter(|| portcullis_store::AuditRow::from(std::hint::black_box(r.clone())))
    });
    c.bench_function("audit_record_clone_only", |b| {
        b.iter(|| std::hint::black_box(r.clone()))
    });
}

criterion_group!(benches, serialise, pipeline);
criterion_main!(benches);
