//! Server time of the console's pages over a store holding 1,000,000 audit records from the
//! last 24 hours (the Requests page's default view must answer in 300 ms or less). Each
//! measurement is the whole handler: session lookup, the page query, the capped count and
//! rendering.
//!
//! - SQLite (default): a file built once in `target/console-bench/` (about a minute).
//! - PostgreSQL: `CONSOLE_BENCH_BACKEND=postgres` with `PORTCULLIS_TEST_POSTGRES_URL` (a
//!   superuser URL; `source scripts/services/postgres.sh` starts a throwaway server). The
//!   records go into the database `portcullis_console_bench_<N>` (created when missing,
//!   kept for the next run), into day partitions as the gateway creates them (the 24 hours
//!   straddle two), then vacuumed and analysed as autovacuum would.
//!
//! Either store is reused while it holds the expected records (the clock is fixed, so the
//! window is the same every run). `CONSOLE_BENCH_RECORDS` changes the size.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::Full;
use portcullis_admin::{Admin, ControlPlane, PolicyApi};
use portcullis_console::{Console, ConsoleSettings, Overview};
use portcullis_core::{Agent, Clock, ManualClock};
use portcullis_store::{AuditRow, Role, Store};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The records end at this time (Unix seconds, 2026-01-01T12:00:00Z: the 24 hours before
/// straddle two days); the clock stands one minute later.
const END_SECS: u64 = 1_767_268_800;
const AGENTS: [&str; 8] = [
    "billing_bot",
    "support_bot",
    "research_bot",
    "triage_bot",
    "coder",
    "planner",
    "scribe",
    "indexer",
];
const HOSTS: [&str; 4] = [
    "api.openai.com",
    "api.anthropic.com",
    "api.github.com",
    "pypi.org",
];

fn row(seq: u64, n: u64) -> AuditRow {
    // Spread evenly over the 24 hours before END_SECS.
    let span_ms = 86_400_000i64 - 1;
    let ts_ms = i64::try_from(END_SECS).unwrap_or(0) * 1000 - span_ms
        + i64::try_from(seq).unwrap_or(0) * span_ms / i64::try_from(n).unwrap_or(1);
    let id = format!("{ts_ms:013x}{seq:013x}");
    let agent = AGENTS[(seq % 8) as usize];
    let host = HOSTS[(seq % 4) as usize];
    let verdict = match seq % 50 {
        0..=2 => "deny",
        3 => "would_deny",
        4 => "rate_limited",
        5 => "error",
        _ => "allow",
    };
    let llm = host.starts_with("api.open") || host.starts_with("api.anth");
    let record = json!({
        "id": id, "ts": "2025-12-31T12:00:00.000Z", "tenant": "default", "agent_id": agent,
        "subagent": if seq.is_multiple_of(7) { json!("planner") } else { json!(null) }, "kind": "http",
        "method": "POST", "scheme": "https", "host": host, "port": 443,
        "path": "/v1/chat/completions", "provider": if llm { json!("openai") } else { json!(null) },
        "api": "chat.completions", "model": if llm { json!("gpt-4o-mini") } else { json!(null) },
        "stream": true, "verdict": verdict, "policy": "llm_allowlist", "reasons": [],
        "would_deny": if verdict == "would_deny" { json!(["beta_rules"]) } else { json!([]) },
        "decision_id": format!("dec_{seq:016x}"), "status": if verdict == "allow" { 200 } else { 403 },
        "error": null, "latency_ms": 812, "policy_us": 41, "upstream_ttfb_ms": 230,
        "bytes_in": 1834, "bytes_out": 20411,
        "usage": if llm { json!({"input_tokens": 1200, "output_tokens": 310,
            "cached_input_tokens": 1024, "reasoning_tokens": 0, "total_tokens": 1510,
            "source": "provider"}) } else { json!(null) },
        "tls_intercepted": true, "client_addr": "127.0.0.1:53124", "credential": null
    });
    AuditRow {
        id,
        ts_ms,
        tenant: "default".into(),
        agent_id: agent.into(),
        subagent: seq.is_multiple_of(7).then(|| "planner".to_owned()),
        verdict: verdict.into(),
        policy: Some("llm_allowlist".into()),
        policy_revision: Some("sha256:0123456789abcdef0123".into()),
        provider: llm.then(|| "openai".to_owned()),
        model: llm.then(|| "gpt-4o-mini".to_owned()),
        kind: "http".into(),
        status: Some(if verdict == "allow" { 200 } else { 403 }),
        cost_usd_micros: None,
        rollup: None,
        record_json: record.to_string(),
    }
}

/// The store of the chosen backend holding `n` records.
async fn store(n: u64) -> Result<Store, Box<dyn std::error::Error>> {
    match std::env::var("CONSOLE_BENCH_BACKEND").as_deref() {
        Ok("postgres") => postgres_store(n).await,
        Ok("sqlite") | Err(_) => sqlite_store(n).await,
        Ok(other) => {
            Err(format!("CONSOLE_BENCH_BACKEND={other}: expected sqlite or postgres").into())
        }
    }
}

/// Whether `s` holds exactly the `n` records [`row`] makes (count and newest id).
async fn holds(s: &Store, n: u64) -> Result<bool, Box<dyn std::error::Error>> {
    let page = s
        .query_audit(&portcullis_store::AuditQuery {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let newest = page.records.first().and_then(|r| r["id"].as_str());
    Ok(page.total == n && n > 0 && newest == Some(row(n - 1, n).id.as_str()))
}

async fn fill(s: &Store, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let batch = 5_000u64;
    let mut seq = 0;
    while seq < n {
        let rows: Vec<AuditRow> = (seq..(seq + batch).min(n)).map(|i| row(i, n)).collect();
        s.insert_audit_batch(&rows).await?;
        seq += batch;
    }
    eprintln!("filled {n} records in {:.1?}", started.elapsed());
    Ok(())
}

async fn sqlite_store(n: u64) -> Result<Store, Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("audit-{n}.db"));
    let url = format!("sqlite://{}", path.display());
    let s = Store::connect(&url).await?;
    if holds(&s, n).await? {
        return Ok(s);
    }
    s.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let s = Store::connect(&url).await?;
    fill(&s, n).await?;
    Ok(s)
}

async fn postgres_store(n: u64) -> Result<Store, Box<dyn std::error::Error>> {
    use portcullis_store::testing::{postgres_url, with_database};
    use sqlx::Connection;
    let server = postgres_url();
    let name = format!("portcullis_console_bench_{n}");
    let url = with_database(&server, &name);
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_some() {
        let s = Store::connect(&url).await?;
        if holds(&s, n).await? {
            admin.close().await?;
            return Ok(s);
        }
        s.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let s = Store::connect(&url).await?;
    // The day partitions the gateway would have made by then.
    s.maintain_audit(i64::try_from(END_SECS)? * 1000, None)
        .await?;
    fill(&s, n).await?;
    let mut c = sqlx::PgConnection::connect(&url).await?;
    sqlx::query("VACUUM (ANALYZE) audit_records")
        .execute(&mut c)
        .await?;
    c.close().await?;
    Ok(s)
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("CONSOLE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        eprintln!("cannot build a tokio runtime");
        return;
    };
    let setup = rt.block_on(async {
        let s = store(n).await?;
        if s.get_agent("billing_bot").await?.is_none() {
            for a in AGENTS {
                s.create_agent(&Agent::new(a, "default", END_SECS)).await?;
            }
        }
        let (_, key) = s
            .create_api_key("default", Role::Admin, "bench", END_SECS)
            .await?;
        let clock = Arc::new(ManualClock::at(END_SECS + 60));
        let cp = ControlPlane::new(
            s.clone(),
            Arc::new(portcullis_identity::Registry::new()),
            clock.clone() as Arc<dyn Clock>,
        );
        cp.reload_registry().await?;
        let engine = portcullis_policy::PolicyEngine::with_sources(
            portcullis_policy::EngineConfig::default(),
            clock as Arc<dyn Clock>,
            portcullis_policy::example_sources(),
        )?;
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let admin = Admin::with_policy(
            prometheus::Registry::new(),
            Vec::new(),
            rx,
            cp,
            Some(PolicyApi::new(Arc::new(engine))),
        );
        let console = Console::new(ConsoleSettings::default(), Overview::default());
        let login = Request::builder()
            .method("POST")
            .uri("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("key={key}"))))?;
        let r = console.handle(&admin, login, peer()).await;
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .to_owned();
        Ok::<_, Box<dyn std::error::Error>>((admin, console, cookie, s.backend()))
    });
    let (admin, console, cookie, backend) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("bench setup failed: {e}");
            return;
        }
    };
    let backend = match backend {
        portcullis_store::Backend::Sqlite => "sqlite",
        portcullis_store::Backend::Postgres => "postgres",
    };
    let mut group = c.benchmark_group(format!("console_{backend}_{n}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for (name, path) in [
        ("requests_default_24h", "/ui/"),
        ("requests_verdict_deny", "/ui/?verdict=deny"),
        ("requests_agent", "/ui/?agent=coder"),
        ("requests_host", "/ui/?host=pypi.org"),
        ("requests_live_refresh", "/ui/requests/live?since=24h"),
        ("agents", "/ui/agents"),
        ("policies_shadow_24h", "/ui/policies"),
        ("usage_24h", "/ui/usage"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = Request::builder()
                        .uri(path)
                        .header("cookie", &cookie)
                        .body(Full::new(Bytes::new()))
                        .unwrap_or_default();
                    let r = console.handle(&admin, req, peer()).await;
                    assert_eq!(r.status(), 200, "{path}");
                })
            });
        });
    }
    group.finish();
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50000))
}

criterion_group!(benches, bench);
criterion_main!(benches);
