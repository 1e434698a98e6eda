//! The audit trail end to end: every request that got an answer has exactly one
//! record, with the right verdict, policy, reason and status, in the JSONL file and
//! the store, and SIGTERM drains the queue before exit.

use crate::common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const POLICY: &str = r#"package portcullis.policy.audit_test

import rego.v1

allow if input.request.host == "127.0.0.1"

allow if input.kind == "token"

deny contains "path /echo/deny is off limits" if input.request.path == "/echo/deny"
"#;

#[test]
fn every_answered_request_has_one_record_and_shutdown_drains() {
    let origin = Origin::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[origin.port(), dead_port]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n".to_owned(),
        files: vec![("policies/audit.rego".to_owned(), POLICY.as_bytes().to_vec())],
    });
    let secret = gw.demo_secret();
    let authed = format!("http://demo:{secret}@{}", gw.proxy);
    let anon = format!("http://{}", gw.proxy);
    let code = |proxy: &str, url: &str| {
        let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, url]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut expected: Vec<(&str, &str, &str)> = Vec::new(); // (path, verdict, status)
    for _ in 0..20 {
        assert_eq!(code(&authed, &origin.url("/echo/ok")), "200");
        expected.push(("/echo/ok", "allow", "200"));
    }
    for _ in 0..5 {
        assert_eq!(code(&authed, &origin.url("/echo/deny")), "403");
        expected.push(("/echo/deny", "deny", "403"));
    }
    for _ in 0..3 {
        assert_eq!(code(&anon, &origin.url("/echo/ok")), "407");
        expected.push(("/echo/ok", "error", "407"));
    }
    let dead = format!("http://127.0.0.1:{dead_port}/echo/down");
    assert_eq!(code(&authed, &dead), "502");
    expected.push(("/echo/down", "allow", "502"));

    // Token requests are audited too (kind = token), never with the secret.
    let token_url = format!("http://{}/oauth/token", gw.proxy);
    let tok = |user: &str| {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-u",
            user,
            "-d",
            "grant_type=client_credentials",
            &token_url,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(tok(&format!("demo:{secret}")), "200");
    expected.push(("/oauth/token", "allow", "200"));
    assert_eq!(tok("demo:not-the-secret"), "401");
    expected.push(("/oauth/token", "error", "401"));

    // SIGTERM right away: the queue must be drained before the process exits.
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(30)).success());

    let text = std::fs::read_to_string(gw.dir().join("data/audit.jsonl")).expect("audit.jsonl");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per answered request"
    );

    let mut want: HashMap<(String, String, String), usize> = HashMap::new();
    for (p, v, s) in &expected {
        *want
            .entry((p.to_string(), v.to_string(), s.to_string()))
            .or_default() += 1;
    }
    let mut got: HashMap<(String, String, String), usize> = HashMap::new();
    for r in &records {
        let obj = r.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = portcullis_audit::RECORD_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields, "exactly the DESIGN §5 fields");
        let key = (
            r["path"].as_str().unwrap_or_default().to_owned(),
            r["verdict"].as_str().unwrap_or_default().to_owned(),
            r["status"].to_string(),
        );
        *got.entry(key).or_default() += 1;
        match r["verdict"].as_str() {
            Some("deny") => {
                assert_eq!(r["policy"], "audit_test", "{r}");
                assert_eq!(r["reasons"][0], "path /echo/deny is off limits", "{r}");
                assert_eq!(r["agent_id"], "demo", "{r}");
            }
            _ if r["kind"] == "token" => {
                assert_eq!(
                    r["agent_id"],
                    if r["status"] == 200 { "demo" } else { "" },
                    "{r}"
                );
            }
            Some("allow") if r["status"] == 200 => {
                assert_eq!(r["policy"], "audit_test", "{r}");
                assert_eq!(r["error"], Value::Null, "{r}");
                assert!(r["bytes_out"].as_u64().unwrap_or(0) > 0, "{r}");
            }
            Some("allow") => assert_eq!(r["error"], "upstream_unreachable", "{r}"),
            Some("error") => {
                assert_eq!(r["error"], "proxy_auth_required", "{r}");
                assert_eq!(r["agent_id"], "", "{r}");
            }
            other => panic!("unexpected verdict {other:?}: {r}"),
        }
        // Secrets never appear in a record.
        assert!(!r.to_string().contains(&secret), "secret leaked: {r}");
    }
    assert_eq!(got, want);
    // Ids are unique.
    let mut ids: Vec<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), records.len());
}

const SHADOW: &str = r#"package portcullis.policy.shadow_guard

import rego.v1

deny contains "shadow says no" if input.request.path == "/echo/shadowed"
"#;

#[test]
fn shadow_denial_is_recorded_as_would_deny_and_forwarded() {
    let origin = Origin::start();
    let mut gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[origin.port()]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n\
               [[policy.bindings]]\npolicy = \"shadow_guard\"\nmode = \"shadow\"\n"
            .to_owned(),
        files: vec![
            ("policies/audit.rego".to_owned(), POLICY.as_bytes().to_vec()),
            (
                "policies/shadow.rego".to_owned(),
                SHADOW.as_bytes().to_vec(),
            ),
        ],
    });
    let proxy = format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy);
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        &origin.url("/echo/shadowed"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    assert_eq!(origin.requests(), 1, "a shadow denial never blocks");
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(gw.dir().join("data/audit.jsonl")).expect("audit.jsonl");
    let r: Value = serde_json::from_str(text.lines().next().expect("one record")).expect("json");
    assert_eq!(r["verdict"], "would_deny", "{r}");
    assert_eq!(r["would_deny"], serde_json::json!(["shadow_guard"]), "{r}");
    assert_eq!(r["reasons"], serde_json::json!(["shadow says no"]), "{r}");
    assert_eq!(r["status"], 200, "{r}");
}

#[test]
fn sigterm_under_concurrent_load_loses_no_record() {
    let origin = Origin::start();
    let mut gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[origin.port()]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n".to_owned(),
        files: vec![("policies/audit.rego".to_owned(), POLICY.as_bytes().to_vec())],
    });
    let proxy = format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (proxy, url, answered) = (proxy.clone(), origin.url("/echo/ok"), answered.clone());
            std::thread::spawn(move || {
                // Bounded: at most 80 requests per worker; stops at the first refusal.
                for _ in 0..80 {
                    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, &url]);
                    if String::from_utf8_lossy(&out.stdout).trim() != "200" {
                        break;
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Let some traffic through, then stop the gateway while requests are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 60
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.sigterm();
    for w in workers {
        let _ = w.join();
    }
    assert!(gw.wait_exit(Duration::from_secs(60)).success());
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered >= 60, "only {answered} answered before SIGTERM");
    let text = std::fs::read_to_string(gw.dir().join("data/audit.jsonl")).expect("audit.jsonl");
    let ok_records = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["status"] == 200 && r["error"].is_null())
        .count();
    // Every response a client got is on record (the origin saw exactly those requests).
    assert_eq!(
        ok_records, answered,
        "answered {answered}, recorded {ok_records}"
    );
    assert_eq!(origin.requests(), answered);
}
