//! The spool: store records survive a store outage (and a restart) and are written exactly
//! once; a full spool refuses, counts, and then either drops (`block`) or pushes back
//! (`fail_closed`).

use portcullis_audit::{
    AuditFull, AuditHandle, AuditMetrics, AuditPipeline, AuditRecord, AuditSettings, OnFull,
    RequestKind, SinkKind, SpoolSettings,
};
use portcullis_core::Verdict;
use portcullis_store::testing::{server_address, with_address, Relay, TestDatabase};
use portcullis_store::{AuditQuery, Store};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn rec(i: usize) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("spool-{i:08}"),
        1_700_000_000_000 + i64::try_from(i).unwrap_or(0),
        "acme",
        "agent-1",
        RequestKind::Http,
        Verdict::Allow,
    );
    r.host = Some("api.openai.com".into());
    r.status = Some(200);
    r
}

fn settings(dir: &Path, max_bytes: u64) -> AuditSettings {
    AuditSettings {
        sinks: vec![SinkKind::Store],
        flush_interval: Duration::from_millis(5),
        drain_timeout: Duration::from_millis(500),
        spool: Some(SpoolSettings {
            path: dir.join("spool").join("audit-spool.jsonl"),
            max_bytes,
        }),
        ..AuditSettings::default()
    }
}

fn start(cfg: AuditSettings, store: &Store) -> (AuditHandle, tokio::task::JoinHandle<()>) {
    match AuditPipeline::start(
        cfg,
        Some(store.clone()),
        AuditMetrics::unregistered().unwrap(),
    ) {
        Ok(x) => x,
        Err(e) => panic!("start: {e}"),
    }
}

/// Polls until `cond` holds; panics with `what` after a generous bound.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never reached: {what}");
}

async fn ids(store: &Store) -> Vec<String> {
    let page = store
        .query_audit(&AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total as usize, page.records.len());
    page.records
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn expect_exactly(found: Vec<String>, n: usize) {
    let unique: BTreeSet<String> = found.iter().cloned().collect();
    assert_eq!(found.len(), unique.len(), "no record twice");
    let wanted: BTreeSet<String> = (0..n).map(|i| rec(i).id).collect();
    assert_eq!(unique, wanted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_in_the_spool_while_postgres_is_down_and_arrive_once() {
    let db = TestDatabase::create().await;
    let relay = Relay::start(server_address(db.url())).unwrap();
    let direct = Store::connect(db.url()).await.unwrap();
    let store = Store::connect(&with_address(db.url(), relay.addr()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (audit, task) = start(settings(dir.path(), 64 << 20), &store);
    let m = audit.metrics().clone();

    for i in 0..100 {
        audit.submit(rec(i)).unwrap();
    }
    until("the first records are stored", || {
        m.written(SinkKind::Store) == 100
    })
    .await;

    relay.cut();
    for i in 100..400 {
        audit.submit(rec(i)).unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    until("the outage's records are spooled", || {
        m.spool("spooled") == 300
    })
    .await;
    assert_eq!(
        m.queue_depth(),
        0,
        "the queue keeps moving during the outage"
    );
    assert!(m.spool_bytes() > 0);
    assert!(m.failed(SinkKind::Store) >= 1);
    assert_eq!(m.written(SinkKind::Store), 100);

    relay.restore().unwrap();
    until("the spool is written", || {
        m.written(SinkKind::Store) == 400 && m.spool_bytes() == 0
    })
    .await;
    assert_eq!(m.spool("unspooled"), 300);
    assert_eq!((m.spool("refused"), m.dropped(SinkKind::Store)), (0, 0));
    expect_exactly(ids(&direct).await, 400);
    audit.shutdown().await;
    task.await.unwrap();
    store.close().await;
    direct.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_an_outage_keeps_the_records_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let down = Store::connect(&url).await.unwrap();
    down.close().await;
    let (audit, task) = start(settings(dir.path(), 64 << 20), &down);
    for i in 0..250 {
        audit.submit_wait(rec(i)).await.unwrap();
    }
    // SIGTERM: the queue drains into the spool; nothing is dropped.
    audit.shutdown().await;
    task.await.unwrap();
    let m = audit.metrics();
    assert_eq!(m.spool("spooled"), 250);
    assert_eq!(m.dropped(SinkKind::Store), 0);
    let spool = dir.path().join("spool").join("audit-spool.jsonl");
    assert!(std::fs::metadata(&spool).unwrap().len() > 0);

    // The next start, with the store back, writes them, each once.
    let up = Store::connect(&url).await.unwrap();
    let (audit, task) = start(settings(dir.path(), 64 << 20), &up);
    let m = audit.metrics().clone();
    until("the previous run's spool is written", || {
        m.written(SinkKind::Store) == 250
    })
    .await;
    audit.shutdown().await;
    task.await.unwrap();
    expect_exactly(ids(&up).await, 250);
    assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0);
}

/// Bytes of one spooled record of `rec(i)` (all the same length).
fn line_len() -> u64 {
    let row = portcullis_store::AuditRow::from(rec(0));
    serde_json::to_vec(&row).unwrap().len() as u64 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_bound_block_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let down = Store::connect("sqlite::memory:").await.unwrap();
    down.close().await;
    let (audit, task) = start(settings(dir.path(), line_len() * 10), &down);
    let m = audit.metrics().clone();
    for i in 0..30 {
        audit.submit(rec(i)).unwrap();
    }
    until("every record is accounted for", || {
        m.spool("spooled") + m.spool("refused") == 30
    })
    .await;
    assert_eq!(m.spool("spooled"), 10);
    assert_eq!(m.dropped(SinkKind::Store), 20);
    assert_eq!(m.queue_depth(), 0);
    audit.shutdown().await;
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_bound_fail_closed_pushes_back_on_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let down = Store::connect("sqlite::memory:").await.unwrap();
    down.close().await;
    let mut cfg = settings(dir.path(), line_len() * 10);
    cfg.on_full = OnFull::FailClosed;
    cfg.queue = 16;
    cfg.batch_max = 4;
    let (audit, task) = start(cfg, &down);
    let m = audit.metrics().clone();
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..200 {
        match audit.submit(rec(i)) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The spool took 10, the writer holds what it refused, and then stops taking records:
    // the queue fills and refuses (the proxy answers 503 instead of forwarding unaudited).
    assert_eq!(refused, Some(AuditFull::Full));
    assert_eq!(m.spool("spooled"), 10);
    assert!(m.spool("refused") >= 1);
    assert_eq!(
        m.dropped(SinkKind::Store),
        0,
        "nothing dropped while pushing back"
    );
    assert!(accepted <= 10 + 16 + 4 + 4, "accepted {accepted}");
    assert!(m.full() >= 1);
    audit.shutdown().await;
    task.await.unwrap();
}
