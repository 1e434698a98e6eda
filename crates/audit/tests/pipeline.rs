//! The pipeline end to end: batching, rotation, failing sinks, full queues, shutdown.

use portcullis_audit::{
    AuditFull, AuditHandle, AuditKind, AuditMetrics, AuditPipeline, AuditRecord, AuditSettings,
    OnFull, SinkKind,
};
use portcullis_core::Verdict;
use portcullis_store::{AuditQuery, Store};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn rec(i: usize) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("rec-{i:08}"),
        1_700_000_000_000 + i64::try_from(i).unwrap(),
        "acme",
        "agent-1",
        AuditKind::Http,
        Verdict::Allow,
    );
    r.host = Some("api.openai.com".into());
    r.path = Some("/v1/chat/completions".into());
    r.status = Some(200);
    r
}

fn settings(dir: &Path, sinks: Vec<SinkKind>) -> AuditSettings {
    AuditSettings {
        sinks,
        jsonl_path: dir.join("audit").join("audit.jsonl"),
        jsonl_max_bytes: 0,
        flush_interval: Duration::from_millis(5),
        ..AuditSettings::default()
    }
}

fn ids_in(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn store_in(dir: &Path) -> Store {
    Store::connect(&format!("sqlite://{}", dir.join("db.sqlite").display()))
        .await
        .unwrap()
}

async fn stored(store: &Store) -> u64 {
    let q = AuditQuery {
        limit: 1,
        ..AuditQuery::default()
    };
    store.query_audit(&q).await.unwrap().total
}

/// Polls (yielding to the writer) until `cond` holds; panics after a generous bound.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

fn start(cfg: AuditSettings, store: Option<Store>) -> AuditHandle {
    let metrics = AuditMetrics::unregistered().unwrap();
    AuditPipeline::start(cfg, store, metrics).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_record_into_store_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let cfg = settings(dir.path(), vec![SinkKind::Store, SinkKind::Jsonl]);
    let path = cfg.jsonl_path.clone();
    let (audit, task) = AuditPipeline::start(
        cfg,
        Some(store.clone()),
        AuditMetrics::unregistered().unwrap(),
    )
    .unwrap();
    const N: usize = 20_000;
    let mut submitters = Vec::new();
    for t in 0..4 {
        let audit = audit.clone();
        submitters.push(tokio::spawn(async move {
            for i in (t * N / 4)..((t + 1) * N / 4) {
                audit.submit_wait(rec(i)).await.unwrap();
            }
        }));
    }
    for s in submitters {
        s.await.unwrap();
    }
    audit.shutdown().await;
    task.await.unwrap();

    assert_eq!(stored(&store).await, N as u64);
    let ids = ids_in(&path);
    assert_eq!(ids.len(), N);
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), N);
    let m = audit.metrics();
    assert_eq!(m.written(SinkKind::Store), N as u64);
    assert_eq!(m.written(SinkKind::Jsonl), N as u64);
    assert_eq!(m.failed(SinkKind::Jsonl) + m.dropped(SinkKind::Store), 0);
    assert_eq!(m.queue_depth(), 0);
    assert_eq!(audit.submit(rec(N)), Err(AuditFull::Closed));
    // A second shutdown returns at once.
    audit.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_batches_are_written_without_waiting_for_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    cfg.batch_max = 10;
    cfg.flush_interval = Duration::from_secs(3600);
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    for i in 0..25 {
        audit.submit(rec(i)).unwrap();
    }
    until(|| audit.metrics().written(SinkKind::Jsonl) == 20).await;
    // The writer takes the last 5 off the queue into its next batch (it may still be doing so
    // when the second batch is counted), where they wait for a full batch or the (hour-long)
    // interval.
    until(|| audit.metrics().queue_depth() == 0).await;
    assert_eq!(ids_in(&path).len(), 20);
    assert_eq!(audit.metrics().written(SinkKind::Jsonl), 20);
    audit.shutdown().await;
    let ids = ids_in(&path);
    assert_eq!(ids.len(), 25);
    assert_eq!(ids, (0..25).map(|i| rec(i).id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_n_files_under_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    let line_len = rec(0).to_json().len() as u64 + 1;
    cfg.jsonl_max_bytes = line_len * 3;
    cfg.jsonl_keep = 2;
    cfg.batch_max = 1;
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    for i in 0..20 {
        audit.submit_wait(rec(i)).await.unwrap();
    }
    audit.shutdown().await;

    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(!rotated(3).exists());
    // Newest last: path.2, path.1, path — each full (3 lines) except the live file.
    let mut all = Vec::new();
    for p in [rotated(2), rotated(1), path.clone()] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= line_len * 3, "{} is {size} bytes", p.display());
        all.extend(ids_in(&p));
    }
    assert_eq!(ids_in(&rotated(2)).len(), 3);
    assert_eq!(ids_in(&rotated(1)).len(), 3);
    assert_eq!(ids_in(&path).len(), 2);
    // The kept files hold the newest records, in order, with no gap.
    assert_eq!(all, (12..20).map(|i| rec(i).id).collect::<Vec<_>>());
    assert_eq!(audit.metrics().written(SinkKind::Jsonl), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_limit_still_lands_in_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    cfg.jsonl_max_bytes = 10;
    cfg.jsonl_keep = 0;
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    audit.submit(rec(0)).unwrap();
    until(|| audit.metrics().written(SinkKind::Jsonl) == 1).await;
    audit.submit(rec(1)).unwrap();
    audit.shutdown().await;
    // keep = 0: the full file is discarded, no `.1` is kept.
    assert_eq!(ids_in(&path), vec![rec(1).id]);
    assert!(!PathBuf::from(format!("{}.1", path.display())).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_jsonl_file_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    for i in 0..5 {
        audit.submit(rec(i)).unwrap();
    }
    until(|| audit.metrics().written(SinkKind::Jsonl) == 5).await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    for i in 5..8 {
        audit.submit(rec(i)).unwrap();
    }
    audit.shutdown().await;
    assert_eq!(ids_in(&path), (5..8).map(|i| rec(i).id).collect::<Vec<_>>());
    assert_eq!(audit.metrics().failed(SinkKind::Jsonl), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_counted_retried_and_recovers_without_hurting_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let cfg = settings(dir.path(), vec![SinkKind::Store, SinkKind::Jsonl]);
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, Some(store.clone()));
    // Put a directory where the file was: every open fails (even as root).
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    for i in 0..50 {
        audit.submit(rec(i)).unwrap();
    }
    until(|| audit.metrics().failed(SinkKind::Jsonl) >= 50).await;
    // The store sink is unaffected.
    until(|| audit.metrics().written(SinkKind::Store) == 50).await;
    for i in 50..60 {
        audit.submit(rec(i)).unwrap();
    }
    until(|| audit.metrics().written(SinkKind::Store) == 60).await;
    assert_eq!(audit.metrics().written(SinkKind::Jsonl), 0);
    // Repair: the backlog is written, oldest first, exactly once.
    std::fs::remove_dir(&path).unwrap();
    until(|| audit.metrics().written(SinkKind::Jsonl) == 60).await;
    audit.shutdown().await;
    assert_eq!(
        ids_in(&path),
        (0..60).map(|i| rec(i).id).collect::<Vec<_>>()
    );
    assert_eq!(stored(&store).await, 60);
    assert_eq!(audit.metrics().dropped(SinkKind::Jsonl), 0);
    assert!(audit.metrics().failed(SinkKind::Jsonl) >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_never_recovers_does_not_hang_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let mut cfg = settings(dir.path(), vec![SinkKind::Store, SinkKind::Jsonl]);
    cfg.drain_timeout = Duration::from_millis(300);
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, Some(store.clone()));
    store.close().await;
    for i in 0..30 {
        audit.submit(rec(i)).unwrap();
    }
    audit.shutdown().await;
    let m = audit.metrics();
    assert!(m.failed(SinkKind::Store) >= 30);
    assert_eq!(m.dropped(SinkKind::Store), 30);
    assert_eq!(m.written(SinkKind::Store), 0);
    assert_eq!(ids_in(&path).len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_backlog_is_bounded_by_the_queue_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    cfg.queue = 8;
    cfg.drain_timeout = Duration::ZERO;
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    for i in 0..40 {
        audit.submit_wait(rec(i)).await.unwrap();
    }
    audit.shutdown().await;
    let m = audit.metrics();
    // Every record is accounted for: at most `queue` kept for retry, the rest dropped.
    assert_eq!(m.dropped(SinkKind::Jsonl) + m.written(SinkKind::Jsonl), 40);
    assert!(m.dropped(SinkKind::Jsonl) >= 32);
}

/// A current-thread runtime whose only blocking thread the test can occupy, so the
/// writer's file write (on the blocking pool) stalls deterministically: a slow disk.
fn stalled_runtime() -> (tokio::runtime::Runtime, std::sync::mpsc::SyncSender<()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release, gate) = std::sync::mpsc::sync_channel::<()>(1);
    rt.spawn_blocking(move || {
        let _ = gate.recv();
    });
    (rt, release)
}

#[test]
fn block_waits_a_bounded_time_then_refuses() {
    let (rt, release) = stalled_runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
        cfg.queue = 2;
        cfg.batch_max = 1;
        cfg.on_full = OnFull::Block {
            max_wait: Duration::from_millis(50),
        };
        let path = cfg.jsonl_path.clone();
        let audit = start(cfg, None);
        assert!(!audit.is_fail_closed());
        audit.submit(rec(0)).unwrap();
        // The writer takes it and stalls on the occupied blocking pool.
        until(|| audit.metrics().queue_depth() == 0).await;
        audit.submit(rec(1)).unwrap();
        audit.submit(rec(2)).unwrap();
        assert!(!audit.has_capacity());
        assert_eq!(audit.submit_wait(rec(3)).await, Err(AuditFull::Full));
        assert!(matches!(audit.reserve_wait().await, Err(AuditFull::Full)));
        assert_eq!(audit.metrics().full(), 2);
        // The disk comes back: a blocked submit now gets in.
        release.send(()).unwrap();
        audit.submit_wait(rec(4)).await.unwrap();
        audit.shutdown().await;
        let ids = ids_in(&path);
        assert_eq!(ids, [0, 1, 2, 4].map(|i| rec(i).id).to_vec());
    });
}

#[test]
fn fail_closed_refuses_at_once_and_a_reserved_slot_always_sends() {
    let (rt, release) = stalled_runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
        cfg.queue = 2;
        cfg.batch_max = 1;
        cfg.on_full = OnFull::FailClosed;
        let path = cfg.jsonl_path.clone();
        let audit = start(cfg, None);
        assert!(audit.is_fail_closed());
        audit.submit(rec(0)).unwrap();
        until(|| audit.metrics().queue_depth() == 0).await;
        // Reserve before "forwarding"; the reservation holds its room.
        let slot = audit.reserve().unwrap();
        audit.submit(rec(1)).unwrap();
        assert!(!audit.has_capacity());
        assert_eq!(audit.submit(rec(2)), Err(AuditFull::Full));
        assert_eq!(audit.submit_wait(rec(3)).await, Err(AuditFull::Full));
        assert!(matches!(audit.reserve(), Err(AuditFull::Full)));
        assert_eq!(audit.metrics().full(), 3);
        let api = AuditFull::Full.to_api_error();
        assert_eq!(
            (api.status_code(), api.code.as_ref()),
            (503, "audit_unavailable")
        );
        slot.send(rec(5));
        release.send(()).unwrap();
        audit.shutdown().await;
        assert!(matches!(audit.reserve(), Err(AuditFull::Closed)));
        let ids = ids_in(&path);
        assert_eq!(ids, [0, 1, 5].map(|i| rec(i).id).to_vec());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_reserved_before_shutdown_is_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(dir.path(), vec![SinkKind::Jsonl]);
    let path = cfg.jsonl_path.clone();
    let audit = start(cfg, None);
    let slot = audit.reserve().unwrap();
    let closer = {
        let audit = audit.clone();
        tokio::spawn(async move { audit.shutdown().await })
    };
    // Shutdown waits for the in-flight request's record.
    until(|| !audit.has_capacity()).await;
    assert_eq!(audit.submit(rec(99)), Err(AuditFull::Closed));
    assert!(!closer.is_finished());
    slot.send(rec(1));
    closer.await.unwrap();
    assert_eq!(ids_in(&path), vec![rec(1).id]);
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = || AuditMetrics::unregistered().unwrap();
    let mut cfg = settings(dir.path(), vec![SinkKind::Store]);
    assert!(AuditPipeline::start(cfg.clone(), None, m()).is_err());
    cfg.sinks = vec![SinkKind::Stdout];
    cfg.queue = 0;
    assert!(AuditPipeline::start(cfg.clone(), None, m()).is_err());
    cfg.queue = 1;
    cfg.batch_max = 0;
    assert!(AuditPipeline::start(cfg.clone(), None, m()).is_err());
    // A JSONL path that is a directory is reported at start.
    cfg.batch_max = 1;
    cfg.sinks = vec![SinkKind::Jsonl];
    cfg.jsonl_path = dir.path().to_path_buf();
    let err = AuditPipeline::start(cfg, None, m()).unwrap_err();
    assert!(err.to_string().contains("cannot open audit file"), "{err}");
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let cfg = AuditSettings {
        sinks: vec![SinkKind::Stdout],
        ..AuditSettings::default()
    };
    assert!(AuditPipeline::start(cfg, None, AuditMetrics::unregistered().unwrap()).is_err());
}

#[test]
fn metrics_register_once() {
    let registry = prometheus::Registry::new();
    let m = AuditMetrics::register(&registry).unwrap();
    assert!(AuditMetrics::register(&registry).is_err());
    m.queue_depth();
    let names: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert!(
        names.contains(&"portcullis_audit_queue_depth".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_records_answer_a_built_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let audit = start(
        settings(dir.path(), vec![SinkKind::Store]),
        Some(store.clone()),
    );
    let now = 1_700_000_100_000;
    for i in 0..30 {
        let mut r = rec(i);
        r.verdict = if i % 3 == 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
        if i % 5 == 0 {
            r.tenant = "other".into();
        }
        audit.submit(r).unwrap();
    }
    audit.shutdown().await;
    let params = [("verdict", "deny"), ("limit", "3"), ("since", "1h")];
    let q = portcullis_audit::build_query(params, Some("acme"), now).unwrap();
    let page = store.query_audit(&q).await.unwrap();
    // deny: i in {0,3,...,27} = 10; minus the "other" tenant's {0,15} = 8.
    assert_eq!(page.total, 8);
    assert_eq!(page.records.len(), 3);
    assert_eq!(page.records[0]["id"], rec(27).id);
    assert_eq!(page.records[0]["verdict"], "deny");
    assert_eq!(page.records[0]["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_is_null_in_the_store_and_the_jsonl_file() {
    use portcullis_llm::Usage;
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let cfg = settings(dir.path(), vec![SinkKind::Store, SinkKind::Jsonl]);
    let path = cfg.jsonl_path.clone();
    let (audit, task) = AuditPipeline::start(
        cfg,
        Some(store.clone()),
        AuditMetrics::unregistered().unwrap(),
    )
    .unwrap();
    let mut missing = rec(1);
    missing.usage = Some(Usage::missing(true).into());
    let mut reported = rec(2);
    reported.usage = Some(Usage::provider(11, 5, 4, 0).into());
    audit.submit_wait(missing).await.unwrap();
    audit.submit_wait(reported).await.unwrap();
    audit.shutdown().await;
    task.await.unwrap();

    let nulls = serde_json::json!({"input_tokens": null, "output_tokens": null,
        "cached_input_tokens": null, "reasoning_tokens": null, "total_tokens": null,
        "source": "missing"});
    let counted = serde_json::json!({"input_tokens": 11, "output_tokens": 5,
        "cached_input_tokens": 4, "reasoning_tokens": 0, "total_tokens": 16,
        "source": "provider"});
    let page = store.query_audit(&AuditQuery::default()).await.unwrap();
    let by_id = |id: &str| {
        page.records
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["usage"].clone())
    };
    assert_eq!(by_id("rec-00000001"), Some(nulls.clone()));
    assert_eq!(by_id("rec-00000002"), Some(counted.clone()));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["usage"], nulls);
    assert_eq!(lines[1]["usage"], counted);
}
