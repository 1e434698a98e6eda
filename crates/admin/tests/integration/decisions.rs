//! `GET /v1/decisions` and `/v1/decisions/{id}` end to end: a real admin listener on
//! 127.0.0.1:0 over an in-memory store holding audit records of two tenants.

use crate::support::{raw, request, Resp};
use portcullis_admin::{serve, Admin, ControlPlane};
use portcullis_audit::{AuditRecord, RequestKind};
use portcullis_core::{SystemClock, Verdict};
use portcullis_identity::Registry;
use portcullis_store::{Role, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Harness {
    addr: SocketAddr,
    admin_a: String,
    viewer_a: String,
    admin_b: String,
    store: Store,
    _shutdown: watch::Sender<bool>,
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// acme: 5 records of the last hour (ids a1..a5, newest a5), one 30 h old (a0);
/// globex: 2 recent records (b1, b2).
async fn seed(store: &Store) {
    let now = now_ms();
    let mut rows = Vec::new();
    let rec = |id: &str, ago: i64, tenant: &str, agent: &str, verdict: Verdict| {
        AuditRecord::new(id, now - ago, tenant, agent, RequestKind::Http, verdict)
    };
    let mut r = rec("a0", 30 * HOUR, "acme", "bot", Verdict::Allow);
    r.model = Some("gpt-4o".into());
    rows.push(r);
    for (i, (agent, verdict)) in [
        ("bot", Verdict::Allow),
        ("bot", Verdict::Deny),
        ("crawler", Verdict::Allow),
        ("bot", Verdict::RateLimited),
        ("crawler", Verdict::Deny),
    ]
    .into_iter()
    .enumerate()
    {
        let n = i64::try_from(i).unwrap() + 1;
        let mut r = rec(&format!("a{n}"), (10 - n) * MIN, "acme", agent, verdict);
        if verdict == Verdict::Deny {
            r.policy = Some("egress".into());
        }
        if agent == "crawler" {
            r.subagent = Some("worker".into());
            r.provider = Some("openai".into());
            r.model = Some("gpt-4o".into());
        }
        rows.push(r);
    }
    rows.push(rec("b1", 5 * MIN, "globex", "bot", Verdict::Allow));
    rows.push(rec("b2", 2 * MIN, "globex", "bot", Verdict::Deny));
    let rows: Vec<_> = rows
        .into_iter()
        .map(portcullis_store::AuditRow::from)
        .collect();
    assert_eq!(store.insert_audit_batch(&rows).await.unwrap(), 8);
}

async fn start() -> Harness {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    seed(&store).await;
    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(store.clone(), registry, Arc::new(SystemClock));
    cp.reload_registry().await.unwrap();
    let (tx, rx) = watch::channel(false);
    let admin = Admin::with_control_plane(prometheus::Registry::new(), Vec::new(), rx.clone(), cp);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, admin, rx));
    let (_, admin_a) = store
        .create_api_key("acme", Role::Admin, "ops", 1)
        .await
        .unwrap();
    let (_, viewer_a) = store
        .create_api_key("acme", Role::Viewer, "dash", 1)
        .await
        .unwrap();
    let (_, admin_b) = store
        .create_api_key("globex", Role::Admin, "ops", 1)
        .await
        .unwrap();
    Harness {
        addr,
        admin_a,
        viewer_a,
        admin_b,
        store,
        _shutdown: tx,
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, key: Option<&str>) -> Resp {
    raw(addr, &request(method, path, key, None)).await
}

fn ids(v: &Value) -> Vec<String> {
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_own_tenant_newest_first_within_24h() {
    let h = start().await;
    let r = send(h.addr, "GET", "/v1/decisions", Some(&h.admin_a)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(ids(&v), ["a5", "a4", "a3", "a2", "a1"]);
    assert_eq!(v["total"], 5);
    assert_eq!(v["limit"], 50);
    assert_eq!(v["offset"], 0);
    // Records are answered as stored: every field, the tenant's own.
    let first = &v["decisions"][0];
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["verdict"], "deny");
    assert_eq!(first["subagent"], "worker");
    assert!(first.get("usage").is_some() && first.get("ts").is_some());

    // The 30 h old record only with an explicit since.
    let v = send(h.addr, "GET", "/v1/decisions?since=2d", Some(&h.admin_a))
        .await
        .json();
    assert_eq!(ids(&v), ["a5", "a4", "a3", "a2", "a1", "a0"]);
    assert_eq!(v["total"], 6);
}

#[tokio::test]
async fn filters_combine() {
    let h = start().await;
    let cases: &[(&str, &[&str])] = &[
        ("agent_id=bot", &["a4", "a2", "a1"]),
        ("agent_id=crawler&verdict=deny", &["a5"]),
        ("verdict=rate_limited", &["a4"]),
        ("policy=egress", &["a5", "a2"]),
        ("subagent=worker", &["a5", "a3"]),
        ("provider=openai", &["a5", "a3"]),
        ("model=gpt-4o&since=48h", &["a5", "a3", "a0"]),
        ("model=gpt-4o&since=48h&until=24h", &["a0"]),
        ("agent_id=nobody", &[]),
        ("verdict=allow&agent_id=bot", &["a1"]),
    ];
    for (q, want) in cases {
        let r = send(
            h.addr,
            "GET",
            &format!("/v1/decisions?{q}"),
            Some(&h.admin_a),
        )
        .await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let v = r.json();
        assert_eq!(ids(&v), *want, "{q}");
        assert_eq!(v["total"], want.len(), "{q}");
    }
    // RFC 3339 bounds, with an encoded and an unencoded `+` offset.
    let since = time_rfc3339(now_ms() - 7 * MIN - 30_000);
    for enc in [since.replace('+', "%2B"), since.clone()] {
        let v = send(
            h.addr,
            "GET",
            &format!("/v1/decisions?since={enc}"),
            Some(&h.admin_a),
        )
        .await
        .json();
        assert_eq!(ids(&v), ["a5", "a4", "a3"], "{enc}");
    }
}

/// Unix ms to RFC 3339 with a +00:00 offset (days-from-civil, no extra dependency).
fn time_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn pages_with_total() {
    let h = start().await;
    let v = send(h.addr, "GET", "/v1/decisions?limit=2", Some(&h.admin_a))
        .await
        .json();
    assert_eq!(ids(&v), ["a5", "a4"]);
    assert_eq!(
        (v["total"].as_u64(), v["limit"].as_u64()),
        (Some(5), Some(2))
    );
    let v = send(
        h.addr,
        "GET",
        "/v1/decisions?offset=2&limit=2",
        Some(&h.admin_a),
    )
    .await
    .json();
    assert_eq!(ids(&v), ["a3", "a2"]);
    assert_eq!(v["offset"], 2);
    let v = send(
        h.addr,
        "GET",
        "/v1/decisions?offset=4&limit=200",
        Some(&h.admin_a),
    )
    .await
    .json();
    assert_eq!(ids(&v), ["a1"]);
    let v = send(h.addr, "GET", "/v1/decisions?offset=99", Some(&h.admin_a))
        .await
        .json();
    assert!(ids(&v).is_empty());
    assert_eq!(v["total"], 5);
}

#[tokio::test]
async fn bad_parameters_are_422() {
    let h = start().await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=1h&until=2h", "until"),
        ("verdict=maybe", "verdict"),
        ("tenant=globex", "tenant"),
        ("agent=bot", "agent"),
        ("limit=5&limit=6", "limit"),
        ("model=%zz", "model"),
    ];
    for (q, field) in cases {
        let r = send(
            h.addr,
            "GET",
            &format!("/v1/decisions?{q}"),
            Some(&h.admin_a),
        )
        .await;
        assert_eq!(r.status, 422, "{q}: {}", r.body);
        let v = r.json();
        assert_eq!(v["code"], "validation_error", "{q}");
        assert_eq!(v["errors"][0]["field"], field, "{q}");
        assert!(v["detail"].is_string(), "{q}");
    }
}

#[tokio::test]
async fn tenants_are_isolated() {
    let h = start().await;
    let v = send(h.addr, "GET", "/v1/decisions?since=7d", Some(&h.admin_b))
        .await
        .json();
    assert_eq!(ids(&v), ["b2", "b1"]);
    assert_eq!(v["total"], 2);
    let v = send(
        h.addr,
        "GET",
        "/v1/decisions?since=7d&limit=200",
        Some(&h.admin_a),
    )
    .await
    .json();
    assert!(ids(&v).iter().all(|id| id.starts_with('a')), "{v}");

    let r = send(h.addr, "GET", "/v1/decisions/a3", Some(&h.admin_a)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = r.json();
    assert_eq!(rec["id"], "a3");
    assert_eq!(rec["agent_id"], "crawler");
    assert_eq!(rec["tenant"], "acme");
    // Another tenant's record looks exactly like an unknown one.
    let other = send(h.addr, "GET", "/v1/decisions/b1", Some(&h.admin_a)).await;
    let unknown = send(h.addr, "GET", "/v1/decisions/zz", Some(&h.admin_a)).await;
    assert_eq!((other.status, unknown.status), (404, 404));
    assert_eq!(other.body, unknown.body);
    assert_eq!(other.json()["code"], "not_found");
    assert_eq!(
        send(h.addr, "GET", "/v1/decisions/b1", Some(&h.admin_b))
            .await
            .status,
        200
    );
    // The 30 h old record is still reachable by id (no time window there).
    assert_eq!(
        send(h.addr, "GET", "/v1/decisions/a0", Some(&h.admin_a))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn auth_roles_and_methods() {
    let h = start().await;
    let r = send(h.addr, "GET", "/v1/decisions", Some(&h.viewer_a)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["total"], 5);
    assert_eq!(
        send(h.addr, "GET", "/v1/decisions/a1", Some(&h.viewer_a))
            .await
            .status,
        200
    );
    for path in ["/v1/decisions", "/v1/decisions/a1"] {
        assert_eq!(send(h.addr, "GET", path, None).await.status, 401, "{path}");
        assert_eq!(
            send(h.addr, "GET", path, Some("pk_wrong")).await.status,
            401,
            "{path}"
        );
        assert_eq!(
            send(h.addr, "DELETE", path, Some(&h.admin_a)).await.status,
            405,
            "{path}"
        );
    }
    assert_eq!(
        send(h.addr, "GET", "/v1/decisions/a1/x", Some(&h.admin_a))
            .await
            .status,
        404
    );
}

/// Records refused before any agent was known (stored with an empty tenant) belong to the
/// gateway's operators: the platform tenant (`default`) lists and reads them beside its own,
/// filters apply to them, and no other tenant ever sees them.
#[tokio::test]
async fn unattributed_refusals_are_visible_to_the_platform_tenant_only() {
    let h = start().await;
    let now = now_ms();
    let mut rows = Vec::new();
    for (id, ago, tenant, agent, verdict, status) in [
        ("u1", 3 * MIN, "", "", Verdict::Error, 407),
        ("u2", MIN, "", "", Verdict::Error, 429),
        ("d1", 2 * MIN, "default", "demo", Verdict::Allow, 200),
    ] {
        let mut r = AuditRecord::new(id, now - ago, tenant, agent, RequestKind::Http, verdict);
        r.status = Some(status);
        rows.push(r.into());
    }
    h.store.insert_audit_batch(&rows).await.unwrap();
    let (_, platform_admin) = h
        .store
        .create_api_key("default", Role::Admin, "ops", 1)
        .await
        .unwrap();
    let (_, platform_viewer) = h
        .store
        .create_api_key("default", Role::Viewer, "dash", 1)
        .await
        .unwrap();

    for key in [&platform_admin, &platform_viewer] {
        let v = send(h.addr, "GET", "/v1/decisions", Some(key)).await.json();
        assert_eq!(ids(&v), ["u2", "d1", "u1"], "{v}");
        assert_eq!(v["total"], 3);
        let v = send(h.addr, "GET", "/v1/decisions?verdict=error", Some(key))
            .await
            .json();
        assert_eq!(ids(&v), ["u2", "u1"], "{v}");
        let v = send(h.addr, "GET", "/v1/decisions?agent_id=demo", Some(key))
            .await
            .json();
        assert_eq!(ids(&v), ["d1"], "{v}");
        let r = send(h.addr, "GET", "/v1/decisions/u1", Some(key)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["status"], 407);
        assert_eq!(r.json()["tenant"], "");
        // Other tenants' records stay theirs.
        let r = send(h.addr, "GET", "/v1/decisions/a1", Some(key)).await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
    for key in [&h.admin_a, &h.viewer_a, &h.admin_b] {
        let v = send(h.addr, "GET", "/v1/decisions?since=2d", Some(key))
            .await
            .json();
        assert!(
            ids(&v).iter().all(|id| !id.starts_with('u') && id != "d1"),
            "{v}"
        );
        for id in ["u1", "u2", "d1"] {
            let r = send(h.addr, "GET", &format!("/v1/decisions/{id}"), Some(key)).await;
            assert_eq!(r.status, 404, "{id}: {}", r.body);
        }
    }
}
