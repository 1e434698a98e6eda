//! The record's JSON shape is exactly DESIGN §5's (plus `credential` and `policy_revision`),
//! and never leaks
//! a query string.

use portcullis_audit::{AuditRecord, RequestKind};
use portcullis_core::Verdict;
use portcullis_llm::{Usage, UsageSource};
use serde_json::Value;
use std::collections::BTreeSet;

use portcullis_audit::RECORD_FIELDS as DESIGN_FIELDS;

fn full_record() -> AuditRecord {
    let mut r = AuditRecord::new(
        "01JDZ0000000000000000000AA",
        1_700_000_000_123,
        "acme",
        "agent-1",
        RequestKind::Http,
        Verdict::WouldDeny,
    );
    r.subagent = Some("researcher".into());
    r.method = Some("POST".into());
    r.scheme = Some("https".into());
    r.host = Some("api.openai.com".into());
    r.port = Some(443);
    r.path = Some("/v1/chat/completions?api_key=sk-SECRET#frag".into());
    r.provider = Some("openai".into());
    r.api = Some("chat.completions".into());
    r.model = Some("gpt-4o".into());
    r.stream = Some(true);
    r.policy = Some("models".into());
    r.reasons = vec!["model not allowed".into()];
    r.would_deny = vec!["models".into()];
    r.decision_id = Some("dec-1".into());
    r.policy_revision = Some("rev-42".into());
    r.status = Some(200);
    r.latency_ms = 1234;
    r.policy_us = Some(87);
    r.upstream_ttfb_ms = Some(300);
    r.bytes_in = 512;
    r.bytes_out = 4096;
    r.usage = Some(Usage::provider(100, 20, 30, 5));
    r.tls_intercepted = true;
    r.client_addr = Some("127.0.0.1:50000".into());
    r.credential = Some("openai-prod".into());
    r.cost_usd = Some(portcullis_core::Usd::from_micros(1_250));
    r
}

#[test]
fn has_exactly_the_design_fields() {
    let expected: BTreeSet<&str> = DESIGN_FIELDS.iter().copied().collect();
    assert_eq!(expected.len(), 35);
    for rec in [
        full_record(),
        AuditRecord::new("x", 0, "t", "a", RequestKind::Tunnel, Verdict::Allow),
    ] {
        let v: Value = serde_json::from_str(&rec.to_json()).unwrap();
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, expected);
    }
    let v: Value = serde_json::from_str(&full_record().to_json()).unwrap();
    assert_eq!(v["policy_revision"], "rev-42");
    let usage: BTreeSet<&str> = v["usage"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = [
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "total_tokens",
        "source",
    ]
    .into_iter()
    .collect();
    assert_eq!(usage, want);
}

#[test]
fn values_are_serialised_as_documented() {
    let v: Value = serde_json::from_str(&full_record().to_json()).unwrap();
    assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["kind"], "http");
    assert_eq!(v["verdict"], "would_deny");
    assert_eq!(v["would_deny"], serde_json::json!(["models"]));
    assert_eq!(v["port"], 443);
    assert_eq!(v["usage"]["input_tokens"], 100);
    assert_eq!(v["usage"]["total_tokens"], 120);
    assert_eq!(v["usage"]["source"], "provider");
    // The query string (and fragment) is cut: it may hold an API key.
    assert_eq!(v["path"], "/v1/chat/completions");
    assert!(!full_record().to_json().contains("SECRET"));

    let bare: Value = serde_json::from_str(
        &AuditRecord::new("x", 0, "t", "a", RequestKind::Token, Verdict::Deny).to_json(),
    )
    .unwrap();
    assert_eq!(bare["usage"], Value::Null);
    assert_eq!(bare["status"], Value::Null);
    assert_eq!(bare["reasons"], serde_json::json!([]));
    assert_eq!(bare["ts"], "1970-01-01T00:00:00.000Z");
}

#[test]
fn missing_usage_has_null_counts_not_zeros() {
    for truncated in [true, false] {
        let u = Usage::missing(truncated);
        assert_eq!(u.source, UsageSource::Missing);
        assert_eq!(u.counts(), None);
    }
    let mut rec = full_record();
    rec.usage = Some(Usage::missing(false));
    let v: Value = serde_json::from_str(&rec.to_json()).unwrap();
    // Same keys as reported usage; every count null.
    assert_eq!(
        v["usage"],
        serde_json::json!({"input_tokens": null, "output_tokens": null,
            "cached_input_tokens": null, "reasoning_tokens": null, "total_tokens": null,
            "source": "missing"})
    );
    let back: AuditRecord = serde_json::from_str(&rec.to_json()).unwrap();
    assert_eq!(back.usage, rec.usage);
    // Reported zeros stay zeros: only unknown counts are null.
    let zero = Usage::provider(0, 0, 0, 0);
    let v = serde_json::to_value(zero).unwrap();
    assert_eq!(v["input_tokens"], 0);
    assert_eq!(v["total_tokens"], 0);
    assert_eq!(v["source"], "provider");
}

#[test]
fn round_trips_and_maps_to_a_row() {
    let rec = full_record();
    let back: AuditRecord = serde_json::from_str(&rec.to_json()).unwrap();
    let mut expected = rec.clone();
    expected.path = Some("/v1/chat/completions".into());
    assert_eq!(back, expected);

    let row = portcullis_store::AuditRow::from(rec.clone());
    assert_eq!(row.id, rec.id);
    assert_eq!(row.ts_ms, 1_700_000_000_123);
    assert_eq!(row.tenant, "acme");
    assert_eq!(row.agent_id, "agent-1");
    assert_eq!(row.subagent.as_deref(), Some("researcher"));
    assert_eq!(row.verdict, "would_deny");
    assert_eq!(row.policy.as_deref(), Some("models"));
    assert_eq!(row.provider.as_deref(), Some("openai"));
    assert_eq!(row.model.as_deref(), Some("gpt-4o"));
    assert_eq!(row.kind, "http");
    assert_eq!(row.status, Some(200));
    assert_eq!(row.record_json, rec.to_json());
}

#[test]
fn bad_timestamps_are_refused_on_read() {
    let mut v: Value = serde_json::from_str(&full_record().to_json()).unwrap();
    v["ts"] = Value::from("yesterday");
    assert!(serde_json::from_value::<AuditRecord>(v).is_err());
}
