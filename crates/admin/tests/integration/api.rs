//! The operator API end to end: a real admin listener on 127.0.0.1:0 over an in-memory
//! store, driven with raw HTTP/1.1 so malformed and oversized requests can be sent too.

use crate::support::{raw, request, Resp};
use portcullis_admin::{serve, Admin, ControlPlane};
use portcullis_core::{AgentMode, AgentStatus, RiskLevel, SystemClock};
use portcullis_identity::{hash_secret, Registry};
use portcullis_store::{Role, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Harness {
    addr: SocketAddr,
    store: Store,
    registry: Arc<Registry>,
    admin_a: String,
    viewer_a: String,
    admin_b: String,
    _shutdown: watch::Sender<bool>,
}

async fn start_with(store: Store) -> Harness {
    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(store.clone(), registry.clone(), Arc::new(SystemClock));
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
        store,
        registry,
        admin_a,
        viewer_a,
        admin_b,
        _shutdown: tx,
    }
}

async fn start() -> Harness {
    start_with(Store::connect("sqlite::memory:").await.unwrap()).await
}

impl Harness {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<&str>) -> Resp {
        raw(self.addr, &request(method, path, Some(key), body)).await
    }

    async fn create(&self, key: &str, body: Value) -> Resp {
        self.call("POST", "/v1/agents", key, Some(&body.to_string()))
            .await
    }
}

fn field_names(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_v1_call_needs_a_valid_operator_key() {
    let h = start().await;
    let wrong = "pck_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let requests = [
        request("GET", "/v1/agents", None, None),
        request("GET", "/v1/agents", Some(wrong), None),
        request("GET", "/v1/agents", Some(""), None),
        request("POST", "/v1/agents", None, Some(r#"{"id":"sneaky"}"#)),
        request("GET", "/v1/nowhere", None, None),
        format!(
            "GET /v1/agents HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n",
            h.admin_a
        )
        .into_bytes(),
        // The key itself with a different scheme-less form.
        format!(
            "GET /v1/agents HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
            h.admin_a
        )
        .into_bytes(),
    ];
    for r in &requests {
        let resp = raw(h.addr, r).await;
        assert_eq!(resp.status, 401, "{}", String::from_utf8_lossy(r));
        let v = resp.json();
        assert_eq!(v["code"], "unauthorized");
        assert!(v["detail"].is_string());
    }
    assert!(h.registry.get("sneaky").is_none());
    assert!(h.store.get_agent("sneaky").await.unwrap().is_none());
    let ok = h.call("GET", "/v1/agents", &h.admin_a, None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json(), json!({"agents": []}));
    assert_eq!(ok.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test]
async fn a_revoked_operator_key_stops_working_promptly() {
    let h = start().await;
    let (rec, key) = h
        .store
        .create_api_key("acme", Role::Admin, "temp", 1)
        .await
        .unwrap();
    assert_eq!(h.call("GET", "/v1/agents", &key, None).await.status, 200);
    h.store
        .revoke_api_key(Some("acme"), &rec.id, 2)
        .await
        .unwrap();
    // Bounded wait: the lookup cache lives under a second (real time: it reads the system
    // clock, and the store behind it does real I/O).
    let mut status = 0;
    for _ in 0..60 {
        status = h.call("GET", "/v1/agents", &key, None).await.status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_viewer_reads_but_never_writes() {
    let h = start().await;
    assert_eq!(
        h.create(&h.admin_a, json!({"id": "worker"})).await.status,
        201
    );
    let list = h.call("GET", "/v1/agents", &h.viewer_a, None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["agents"][0]["id"], "worker");
    assert_eq!(
        h.call("GET", "/v1/agents/worker", &h.viewer_a, None)
            .await
            .status,
        200
    );
    let writes = [
        ("POST", "/v1/agents", Some(r#"{"id":"viewer_made"}"#)),
        (
            "PUT",
            "/v1/agents/worker/config",
            Some(r#"{"mode":"shadow"}"#),
        ),
        ("POST", "/v1/agents/worker/suspend", None),
        ("POST", "/v1/agents/worker/revoke", None),
        ("POST", "/v1/agents/worker/rotate", None),
    ];
    for (m, p, b) in writes {
        let r = h.call(m, p, &h.viewer_a, b).await;
        assert_eq!(r.status, 403, "{m} {p}");
        assert_eq!(r.json()["code"], "forbidden");
    }
    let a = h.registry.get("worker").unwrap();
    assert_eq!(a.status, AgentStatus::Active);
    assert_eq!(a.mode, AgentMode::Active);
    assert_eq!(a.generation, 1);
    assert!(h.store.get_agent("viewer_made").await.unwrap().is_none());
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let h = start().await;
    let created = h
        .create(
            &h.admin_b,
            json!({"id": "globex_bot", "attributes": {"owner": "globex-finance-team"},
                   "allowed_scopes": ["ledger:write"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["agent"]["tenant"], "globex");
    let attempts = [
        ("GET", "/v1/agents/globex_bot", None),
        (
            "PUT",
            "/v1/agents/globex_bot/config",
            Some(r#"{"mode":"shadow"}"#),
        ),
        (
            "PUT",
            "/v1/agents/globex_bot/config",
            Some(r#"{"mode":"nonsense"}"#),
        ),
        ("PUT", "/v1/agents/globex_bot/config", Some("{}")),
        ("POST", "/v1/agents/globex_bot/suspend", None),
        ("POST", "/v1/agents/globex_bot/activate", None),
        ("POST", "/v1/agents/globex_bot/rotate", None),
        ("POST", "/v1/agents/globex_bot/revoke", None),
    ];
    let unknown = h
        .call("GET", "/v1/agents/no_such_bot", &h.admin_a, None)
        .await;
    assert_eq!(unknown.status, 404);
    for (m, p, b) in attempts {
        let r = h.call(m, p, &h.admin_a, b).await;
        assert_eq!(r.status, 404, "{m} {p} {b:?}: {}", r.body);
        assert_eq!(r.json(), unknown.json(), "same body as an unknown agent");
        for secret in ["globex-finance-team", "ledger", "globex\""] {
            assert!(!r.body.contains(secret), "{m} {p} leaked {secret}");
        }
    }
    let list = h.call("GET", "/v1/agents", &h.admin_a, None).await;
    assert_eq!(list.json(), json!({"agents": []}));
    let a = h.registry.get("globex_bot").unwrap();
    assert_eq!(a.status, AgentStatus::Active);
    assert_eq!(a.mode, AgentMode::Active);
    assert_eq!(a.generation, 1);
    // The owner still sees it.
    let own = h.call("GET", "/v1/agents", &h.admin_b, None).await.json();
    assert_eq!(
        own["agents"][0]["attributes"]["owner"],
        "globex-finance-team"
    );
}

#[tokio::test]
async fn create_shows_the_secret_once_and_registers_immediately() {
    let h = start().await;
    let r = h
        .create(
            &h.admin_a,
            json!({"id": "billing_bot", "groups": ["finance"],
                   "allowed_scopes": ["stripe:customer:read"], "mode": "shadow",
                   "risk_level": "HIGH", "token_ttl": 900,
                   "attributes": {"team": "payments"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    let agent = &v["agent"];
    assert_eq!(agent["id"], "billing_bot");
    assert_eq!(agent["tenant"], "acme");
    assert_eq!(agent["groups"], json!(["finance"]));
    assert_eq!(agent["allowed_scopes"], json!(["stripe:customer:read"]));
    assert_eq!(agent["mode"], "shadow");
    assert_eq!(agent["risk_level"], "HIGH");
    assert_eq!(agent["token_ttl"], 900);
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["generation"], 1);
    assert_eq!(agent["attributes"]["team"], "payments");
    assert!(agent.get("secret_sha256").is_none());

    // The registry has it, with the secret's hash, before any watcher could run.
    let reg = h.registry.get("billing_bot").expect("registered at once");
    assert_eq!(
        reg.secret_sha256.as_deref(),
        Some(hash_secret(&secret).as_str())
    );
    assert_eq!(reg.risk_level, RiskLevel::High);
    assert_eq!(reg.mode, AgentMode::Shadow);

    for path in ["/v1/agents/billing_bot", "/v1/agents"] {
        let g = h.call("GET", path, &h.admin_a, None).await;
        assert_eq!(g.status, 200);
        assert!(!g.body.contains(&secret), "{path} shows the secret");
        assert!(!g.body.contains("secret_sha256"), "{path}");
        assert!(!g.body.contains(&hash_secret(&secret)), "{path}");
    }

    let dup = h.create(&h.admin_a, json!({"id": "billing_bot"})).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["code"], "conflict");
    assert!(!dup.body.contains("secret"));
    // Ids are global: another tenant cannot take it either (and learns nothing more).
    let dup_b = h.create(&h.admin_b, json!({"id": "billing_bot"})).await;
    assert_eq!(dup_b.status, 409);
    assert!(!dup_b.body.contains("payments"));
    assert_eq!(
        h.registry
            .get("billing_bot")
            .unwrap()
            .secret_sha256
            .as_deref(),
        Some(hash_secret(&secret).as_str()),
        "a refused duplicate leaves the original untouched"
    );
}

#[tokio::test]
async fn create_validation_names_the_fields() {
    let h = start().await;
    let cases = [
        (json!({"id": "Bad-Id"}), "id"),
        (json!({"id": "x"}), "id"),
        (json!({}), "id"),
        (json!({"id": 7}), "id"),
        (
            json!({"id": "ok_bot", "allowed_scopes": ["a::b"]}),
            "allowed_scopes[0]",
        ),
        (
            json!({"id": "ok_bot", "scopes": ["good:one", "bad scope"]}),
            "scopes[1]",
        ),
        (json!({"id": "ok_bot", "groups": ["Finance"]}), "groups[0]"),
        (json!({"id": "ok_bot", "token_ttl": 5}), "token_ttl"),
        (json!({"id": "ok_bot", "mode": "loud"}), "mode"),
        (
            json!({"id": "ok_bot", "risk_level": "EXTREME"}),
            "risk_level",
        ),
        (json!({"id": "ok_bot", "attributes": [1, 2]}), "attributes"),
        (json!({"id": "ok_bot", "tenant": "globex"}), "tenant"),
        (
            json!({"id": "ok_bot", "secret_sha256": "00"}),
            "secret_sha256",
        ),
        (json!({"id": "ok_bot", "generation": 9}), "generation"),
    ];
    for (body, field) in cases {
        let r = h.create(&h.admin_a, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["code"], "validation_error");
        assert!(
            field_names(&v).iter().any(|f| f == field),
            "{body}: expected field {field}, got {v}"
        );
        assert!(v["detail"].as_str().unwrap().contains(field), "{v}");
    }
    // Several problems at once are all reported.
    let r = h
        .create(&h.admin_a, json!({"id": "A", "token_ttl": 0, "mode": 3}))
        .await;
    let fields = field_names(&r.json());
    for f in ["id", "token_ttl", "mode"] {
        assert!(fields.iter().any(|x| x == f), "{fields:?}");
    }
    assert!(h.store.list_agents(None).await.unwrap().is_empty());
    assert!(h.registry.is_empty());
}

#[tokio::test]
async fn config_updates_apply_and_validate() {
    let h = start().await;
    h.create(&h.admin_a, json!({"id": "worker"})).await;
    let empty = h
        .call("PUT", "/v1/agents/worker/config", &h.admin_a, Some("{}"))
        .await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()["detail"], "No fields to update");
    let nulls = h
        .call(
            "PUT",
            "/v1/agents/worker/config",
            &h.admin_a,
            Some(r#"{"mode":null}"#),
        )
        .await;
    assert_eq!(nulls.status, 400);

    for (body, field) in [
        (r#"{"mode":"bogus"}"#, "mode"),
        (r#"{"token_ttl":999999999}"#, "token_ttl"),
        (r#"{"scopes":["ok","a::b"]}"#, "scopes[1]"),
        (r#"{"groups":"ops"}"#, "groups"),
        (r#"{"enabled":"yes"}"#, "enabled"),
        (r#"{"colour":"red"}"#, "colour"),
    ] {
        let r = h
            .call("PUT", "/v1/agents/worker/config", &h.admin_a, Some(body))
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(field_names(&r.json()).iter().any(|f| f == field), "{body}");
    }
    assert_eq!(h.registry.get("worker").unwrap().token_ttl_secs, 600);

    let r = h
        .call(
            "PUT",
            "/v1/agents/worker/config",
            &h.admin_a,
            Some(r#"{"scopes":["github:repo:read"],"risk_level":"critical","token_ttl":"10m","groups":["ops"]}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["allowed_scopes"], json!(["github:repo:read"]));
    assert_eq!(v["risk_level"], "CRITICAL");
    assert_eq!(v["token_ttl"], 600);
    assert!(v.get("secret_sha256").is_none());
    let a = h.registry.get("worker").unwrap();
    assert_eq!(a.allowed_scopes, ["github:repo:read"]);
    assert_eq!(a.risk_level, RiskLevel::Critical);
    assert_eq!(a.groups, ["ops"]);

    let off = h
        .call(
            "PUT",
            "/v1/agents/worker/config",
            &h.admin_a,
            Some(r#"{"enabled":false}"#),
        )
        .await;
    assert_eq!(off.status, 200);
    assert_eq!(off.json()["enabled"], false);
    assert_eq!(h.registry.get("worker").unwrap().mode, AgentMode::Disabled);
    h.call(
        "PUT",
        "/v1/agents/worker/config",
        &h.admin_a,
        Some(r#"{"enabled":true}"#),
    )
    .await;
    assert_eq!(h.registry.get("worker").unwrap().mode, AgentMode::Active);
    h.call(
        "PUT",
        "/v1/agents/worker/config",
        &h.admin_a,
        Some(r#"{"mode":"shadow"}"#),
    )
    .await;
    assert_eq!(h.registry.get("worker").unwrap().mode, AgentMode::Shadow);

    let missing = h
        .call(
            "PUT",
            "/v1/agents/ghost/config",
            &h.admin_a,
            Some(r#"{"mode":"shadow"}"#),
        )
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn rotation_issues_a_new_secret_and_generation() {
    let h = start().await;
    let first = h.create(&h.admin_a, json!({"id": "rotor"})).await.json();
    let s1 = first["secret"].as_str().unwrap().to_owned();
    let r = h
        .call("POST", "/v1/agents/rotor/rotate", &h.admin_a, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let s2 = v["secret"].as_str().unwrap().to_owned();
    assert_ne!(s1, s2);
    assert_eq!(v["agent"]["generation"], 2);
    let a = h.registry.get("rotor").unwrap();
    assert_eq!(a.generation, 2);
    assert_eq!(a.secret_sha256.as_deref(), Some(hash_secret(&s2).as_str()));
    let again = h
        .call("POST", "/v1/agents/rotor/rotate", &h.admin_a, Some(""))
        .await
        .json();
    assert_eq!(again["agent"]["generation"], 3);
    assert_eq!(h.registry.get("rotor").unwrap().generation, 3);
    let g = h.call("GET", "/v1/agents/rotor", &h.admin_a, None).await;
    assert!(!g.body.contains(again["secret"].as_str().unwrap()));
}

#[tokio::test]
async fn lifecycle_applies_to_the_registry_at_once() {
    let h = start().await;
    h.create(&h.admin_a, json!({"id": "life"})).await;
    let post = |action: &'static str| {
        let h = &h;
        async move {
            h.call(
                "POST",
                &format!("/v1/agents/life/{action}"),
                &h.admin_a,
                None,
            )
            .await
        }
    };
    let r = post("suspend").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "suspended");
    assert_eq!(
        h.registry.get("life").unwrap().status,
        AgentStatus::Suspended
    );
    assert_eq!(post("suspend").await.status, 200, "idempotent");
    let r = post("activate").await;
    assert_eq!(r.json()["status"], "active");
    assert_eq!(h.registry.get("life").unwrap().status, AgentStatus::Active);
    let r = post("revoke").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(h.registry.get("life").unwrap().status, AgentStatus::Revoked);
    for action in ["activate", "suspend", "rotate"] {
        let r = post(action).await;
        assert_eq!(r.status, 409, "{action}");
        assert_eq!(r.json()["code"], "agent_revoked");
        assert!(!r.body.contains("\"secret\""));
    }
    assert_eq!(
        post("revoke").await.status,
        200,
        "revoking twice is harmless"
    );
    let a = h.registry.get("life").unwrap();
    assert_eq!(a.status, AgentStatus::Revoked);
    assert_eq!(a.generation, 1);
    assert_eq!(
        h.store.get_agent("life").await.unwrap().unwrap().status,
        AgentStatus::Revoked
    );
}

#[tokio::test]
async fn subagents_are_listed_under_their_parent() {
    let h = start().await;
    h.create(&h.admin_a, json!({"id": "parent_bot"})).await;
    h.store
        .register_subagent("parent_bot", "helper", 5)
        .await
        .unwrap();
    let v = h.call("GET", "/v1/agents", &h.admin_a, None).await.json();
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["id"], "parent_bot");
    assert_eq!(agents[0]["parent"], Value::Null);
    assert_eq!(agents[1]["id"], "helper");
    assert_eq!(agents[1]["parent"], "parent_bot");
    assert_eq!(agents[1]["source"], "subagent");
    let b = h.call("GET", "/v1/agents", &h.admin_b, None).await.json();
    assert_eq!(b, json!({"agents": []}));
}

#[tokio::test]
async fn malformed_oversized_unknown_and_wrong_method() {
    let h = start().await;
    h.create(&h.admin_a, json!({"id": "worker"})).await;
    for body in ["{", "", "not json", "\u{0}", r#"{"id": "a"} trailing"#] {
        let r = h.call("POST", "/v1/agents", &h.admin_a, Some(body)).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert!(r.json()["code"].is_string());
        let r = h
            .call("PUT", "/v1/agents/worker/config", &h.admin_a, Some(body))
            .await;
        assert_eq!(r.status, 400, "{body:?}");
    }
    for body in ["[]", "\"id\"", "42", "null"] {
        let r = h.call("POST", "/v1/agents", &h.admin_a, Some(body)).await;
        assert_eq!(r.status, 400, "{body:?}");
    }

    // Declared too large: refused before reading.
    let big = format!(
        r#"{{"id":"big_bot","attributes":{{"x":"{}"}}}}"#,
        "a".repeat(70_000)
    );
    let r = h.call("POST", "/v1/agents", &h.admin_a, Some(&big)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "payload_too_large");
    // Chunked, so only counting the bytes can catch it.
    let mut chunked = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        h.admin_a
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("1000\r\n{}\r\n", "b".repeat(4096)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = raw(h.addr, &chunked).await;
    assert_eq!(r.status, 413);
    assert!(h.registry.get("big_bot").is_none());

    for path in [
        "/v1/nope",
        "/v1/agents/worker/delete",
        "/v1/agents/worker/config/extra",
        "/v1/agents/",
        "/v1",
        "/v1/agents//rotate",
        "/nope",
        "/v1/agents/%2e%2e",
    ] {
        let r = h.call("GET", path, &h.admin_a, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["code"].is_string());
    }
    for (m, p, allow) in [
        ("DELETE", "/v1/agents/worker", "GET"),
        ("POST", "/v1/agents/worker", "GET"),
        ("GET", "/v1/agents/worker/config", "PUT"),
        ("GET", "/v1/agents/worker/rotate", "POST"),
        ("PATCH", "/v1/agents", "GET, POST"),
        ("PUT", "/v1/agents/worker/suspend", "POST"),
    ] {
        let r = h.call(m, p, &h.admin_a, Some("{}")).await;
        assert_eq!(r.status, 405, "{m} {p}");
        assert_eq!(r.json()["code"], "method_not_allowed");
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{m} {p}");
    }
    // The probes still answer without a key.
    let hz = raw(h.addr, &request("GET", "/healthz", None, None)).await;
    assert_eq!(hz.status, 200);
    assert_eq!(hz.json()["status"], "ok");
}

#[tokio::test]
async fn without_a_control_plane_v1_is_not_found() {
    let (_tx, rx) = watch::channel(false);
    let admin = Admin::new(prometheus::Registry::new(), Vec::new(), rx.clone());
    assert!(admin.control_plane().is_none());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, admin, rx));
    let r = raw(addr, &request("GET", "/v1/agents", Some("pck_x"), None)).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        raw(addr, &request("GET", "/readyz", None, None))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_watcher_picks_up_writes_from_another_store_handle() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let gateway_store = Store::connect(&url).await.unwrap();
    let cli_store = Store::connect(&url).await.unwrap();
    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(gateway_store, registry.clone(), Arc::new(SystemClock));
    assert_eq!(cp.reload_registry().await.unwrap(), 0);
    let (tx, rx) = watch::channel(false);
    let watcher = {
        let cp = cp.clone();
        tokio::spawn(async move { cp.watch(rx).await })
    };

    let mut agent = portcullis_core::Agent::new("cli_bot", "acme", 10);
    agent.secret_sha256 = Some(hash_secret("s3cret"));
    cli_store.create_agent(&agent).await.unwrap();
    // Bounded polls of the real 1 s watch interval: paused time would race the store's real
    // I/O (its pool's own timers would jump ahead while a query runs on its thread).
    let mut seen = false;
    for _ in 0..100 {
        if registry.get("cli_bot").is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "watcher did not load the CLI's agent");

    agent.status = AgentStatus::Suspended;
    cli_store.update_agent(&agent, 11).await.unwrap();
    let mut suspended = false;
    for _ in 0..100 {
        if registry.get("cli_bot").map(|a| a.status) == Some(AgentStatus::Suspended) {
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(suspended, "watcher did not apply the suspension");

    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn concurrent_rotations_each_get_their_own_generation() {
    let h = Arc::new(start().await);
    h.create(&h.admin_a, json!({"id": "busy"})).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.call("POST", "/v1/agents/busy/rotate", &h.admin_a, None)
                .await
                .json()["agent"]["generation"]
                .as_u64()
                .unwrap()
        }));
    }
    let mut gens = Vec::new();
    for t in tasks {
        gens.push(t.await.unwrap());
    }
    gens.sort_unstable();
    assert_eq!(gens, [2, 3, 4, 5, 6]);
    assert_eq!(h.registry.get("busy").unwrap().generation, 6);
}

#[tokio::test]
async fn odd_paths_and_methods_always_get_a_json_answer() {
    let h = start().await;
    h.create(&h.admin_a, json!({"id": "worker"})).await;
    let long = format!("/v1/agents/{}", "a".repeat(4000));
    let paths = [
        "/v1/agents",
        "/v1/agents/worker",
        "/v1/agents/worker/config",
        "/v1/agents/worker/rotate",
        "/v1/agents/WORKER",
        "/v1/agents/worker%00",
        "/v1/agents/../agents",
        "/v1/agents/worker?x=1",
        "/v1//agents",
        "/v1/agents/w",
        long.as_str(),
    ];
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"] {
        for p in paths {
            let r = h.call(m, p, &h.viewer_a, Some("{}")).await;
            assert!(
                [200, 400, 403, 404, 405].contains(&r.status),
                "{m} {p}: {}",
                r.status
            );
            let v = r.json();
            if r.status != 200 {
                assert!(v["code"].is_string() && v["detail"].is_string(), "{m} {p}");
            }
        }
    }
    // The viewer changed nothing.
    let a = h.registry.get("worker").unwrap();
    assert_eq!((a.status, a.generation), (AgentStatus::Active, 1));
}
