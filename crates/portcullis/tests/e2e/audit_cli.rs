//! `portcullis audit query` and `audit tail` against a temporary SQLite store, filled
//! beforehand through portcullis-store like the gateway's audit writer would.

use portcullis_audit::{AuditRecord, RequestKind};
use portcullis_core::Verdict;
use portcullis_store::Store;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

const MIN: i64 = 60_000;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}/p.db", dir.display())
}

fn insert(dir: &Path, records: Vec<AuditRecord>) {
    let url = db_url(dir);
    rt().block_on(async move {
        let store = Store::connect(&url).await.unwrap();
        let rows: Vec<_> = records
            .into_iter()
            .map(portcullis_store::AuditRow::from)
            .collect();
        store.insert_audit_batch(&rows).await.unwrap();
        store.close().await;
    });
}

/// A temp dir with `portcullis.toml` pointing at `p.db`, holding acme's a1..a4 (newest
/// a4; a0 is 30 h old) and globex's b1.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"{}\"\n", db_url(dir.path())),
    )
    .unwrap();
    let now = now_ms();
    let rec = |id: &str, ago: i64, tenant: &str, agent: &str, v: Verdict| {
        AuditRecord::new(id, now - ago, tenant, agent, RequestKind::Http, v)
    };
    let mut a3 = rec("a3", 3 * MIN, "acme", "crawler", Verdict::Deny);
    a3.policy = Some("egress".into());
    a3.provider = Some("openai".into());
    a3.model = Some("gpt-4o".into());
    let mut a2 = rec("a2", 4 * MIN, "acme", "bot", Verdict::Allow);
    a2.method = Some("GET".into());
    a2.host = Some("example.com".into());
    a2.path = Some("/x".into());
    a2.status = Some(200);
    insert(
        dir.path(),
        vec![
            rec("a0", 30 * 60 * MIN, "acme", "bot", Verdict::Allow),
            rec("a1", 5 * MIN, "acme", "bot", Verdict::Deny),
            a2,
            a3,
            rec("a4", 2 * MIN, "acme", "bot", Verdict::Allow),
            rec("b1", MIN, "globex", "bot", Verdict::Allow),
        ],
    );
    (dir, config)
}

fn portcullis(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG")
        .output()
        .expect("run portcullis")
}

fn query_json(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["audit", "query", "--format", "json"];
    all.extend_from_slice(args);
    let out = portcullis(config, &all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(v: &Value) -> Vec<&str> {
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

#[test]
fn query_json_filters_pages_and_scopes_tenants() {
    let (_dir, config) = setup();
    let v = query_json(&config, &[]);
    assert_eq!(ids(&v), ["b1", "a4", "a3", "a2", "a1"]);
    assert_eq!(
        (v["total"].as_u64(), v["limit"].as_u64()),
        (Some(5), Some(50))
    );
    assert_eq!(v["offset"], 0);

    let v = query_json(&config, &["--tenant", "acme"]);
    assert_eq!(ids(&v), ["a4", "a3", "a2", "a1"]);
    assert_eq!(v["decisions"][1]["policy"], "egress");
    let v = query_json(&config, &["--tenant", "acme", "--since", "2d"]);
    assert_eq!(ids(&v), ["a4", "a3", "a2", "a1", "a0"]);
    let v = query_json(&config, &["--tenant", "acme", "--verdict", "deny"]);
    assert_eq!(ids(&v), ["a3", "a1"]);
    let v = query_json(
        &config,
        &[
            "--agent-id",
            "crawler",
            "--model",
            "gpt-4o",
            "--provider",
            "openai",
        ],
    );
    assert_eq!(ids(&v), ["a3"]);
    let v = query_json(
        &config,
        &["--tenant", "acme", "--limit", "2", "--offset", "1"],
    );
    assert_eq!(ids(&v), ["a3", "a2"]);
    assert_eq!(
        (v["total"].as_u64(), v["offset"].as_u64()),
        (Some(4), Some(1))
    );
    let v = query_json(&config, &["--tenant", "nobody"]);
    assert!(ids(&v).is_empty());
    assert_eq!(v["total"], 0);
}

#[test]
fn query_refuses_bad_filters() {
    let (_dir, config) = setup();
    for (args, needle) in [
        (&["--limit", "0"][..], "--limit"),
        (&["--limit", "201"][..], "--limit"),
        (&["--offset", "-1"][..], "--offset"),
        (&["--limit", "-5"][..], "--limit"),
        (&["--limit", "abc"][..], "--limit"),
        (&["--since", "1h", "--until", "2h"][..], "--until"),
        (&["--since", "yesterday"][..], "--since"),
        (&["--verdict", "maybe"][..], "--verdict"),
    ] {
        let mut all = vec!["audit", "query"];
        all.extend_from_slice(args);
        let out = portcullis(&config, &all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = portcullis(&config, &["audit", "query", "--format", "xml"]);
    assert!(!out.status.success());
}

#[test]
fn query_table_lists_records() {
    let (_dir, config) = setup();
    let out = portcullis(&config, &["audit", "query", "--tenant", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{text}");
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[1].ends_with(" a4") && lines[4].ends_with(" a1"),
        "{text}"
    );
    assert!(
        lines[2].contains("openai gpt-4o") && lines[2].contains("egress"),
        "{text}"
    );
    assert!(
        lines[3].contains("GET example.com/x") && lines[3].contains(" 200 "),
        "{text}"
    );
    assert_eq!(lines[5], "(1-4 of 4)");
}

#[test]
fn tail_prints_recent_then_follows_new_records() {
    let (dir, config) = setup();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "audit", "tail", "--json", "--tenant", "acme", "-n", "2", "--config",
        ])
        .arg(&config)
        .env_remove("PORTCULLIS_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_id = || -> String {
        let line = lines.next().expect("a line").expect("readable");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["tenant"], "acme", "{line}");
        v["id"].as_str().unwrap().to_owned()
    };
    // Oldest first: the last two of acme's records (ids sort like time).
    assert_eq!(next_id(), "a3");
    assert_eq!(next_id(), "a4");
    let now = now_ms();
    insert(
        dir.path(),
        vec![
            AuditRecord::new(
                "b9",
                now,
                "globex",
                "bot",
                RequestKind::Http,
                Verdict::Allow,
            ),
            AuditRecord::new("a8", now, "acme", "bot", RequestKind::Http, Verdict::Deny),
            AuditRecord::new("a9", now, "acme", "bot", RequestKind::Http, Verdict::Allow),
        ],
    );
    assert_eq!(next_id(), "a8");
    assert_eq!(next_id(), "a9");
    child.kill().unwrap();
    child.wait().unwrap();
}
