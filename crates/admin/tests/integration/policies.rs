//! The policy part of the operator API end to end: a real admin listener on 127.0.0.1:0
//! over an in-memory store and the example policy set, driven with raw HTTP/1.1.

use crate::support::{raw, request, Resp};
use portcullis_admin::{serve, Admin, ControlPlane, PolicyApi};
use portcullis_core::{Agent, AgentStatus, PolicyMode, RiskLevel, SystemClock, Verdict};
use portcullis_identity::Registry;
use portcullis_llm::{Classifier, RequestHead};
use portcullis_policy::{
    build_input, example_sources, Binding, EngineConfig, ExchangeFacts, PolicyEngine, RequestKind,
    UsageFacts,
};
use portcullis_store::{Role, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Harness {
    addr: SocketAddr,
    engine: Arc<PolicyEngine>,
    registry: Arc<Registry>,
    /// Admin of the platform tenant `default`.
    platform: String,
    admin_a: String,
    viewer_a: String,
    admin_b: String,
    _shutdown: watch::Sender<bool>,
}

fn agent(id: &str, tenant: &str, scopes: &[&str], risk: RiskLevel) -> Agent {
    let mut a = Agent::new(id, tenant, 1);
    a.allowed_scopes = scopes.iter().map(|s| s.to_string()).collect();
    a.risk_level = risk;
    a.groups = vec!["llm".into()];
    a
}

async fn start_with(policy: Option<EngineConfig>) -> Harness {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    for a in [
        agent("bot", "acme", &["openai:*:*", "stripe:*:*"], RiskLevel::Low),
        agent("risky", "acme", &["openai:*:*"], RiskLevel::High),
        agent("globex_bot", "globex", &["openai:*:*"], RiskLevel::Low),
    ] {
        store.create_agent(&a).await.unwrap();
    }
    let mut suspended = agent("sleepy", "acme", &["openai:*:*"], RiskLevel::Low);
    suspended.status = AgentStatus::Suspended;
    store.create_agent(&suspended).await.unwrap();

    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(store.clone(), registry.clone(), Arc::new(SystemClock));
    cp.reload_registry().await.unwrap();
    let (tx, rx) = watch::channel(false);
    let engine = Arc::new(
        PolicyEngine::with_sources(
            policy.clone().unwrap_or_default(),
            Arc::new(SystemClock),
            example_sources(),
        )
        .unwrap(),
    );
    let admin = Admin::with_policy(
        prometheus::Registry::new(),
        Vec::new(),
        rx.clone(),
        cp,
        policy.map(|_| PolicyApi::new(engine.clone())),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, admin, rx));
    let key = |tenant: &'static str, role: Role| {
        let store = store.clone();
        async move { store.create_api_key(tenant, role, "k", 1).await.unwrap().1 }
    };
    Harness {
        addr,
        engine,
        registry,
        platform: key("default", Role::Admin).await,
        admin_a: key("acme", Role::Admin).await,
        viewer_a: key("acme", Role::Viewer).await,
        admin_b: key("globex", Role::Admin).await,
        _shutdown: tx,
    }
}

async fn start() -> Harness {
    start_with(Some(EngineConfig::default())).await
}

impl Harness {
    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Resp {
        raw(self.addr, &request(method, path, key, body)).await
    }

    async fn simulate(&self, key: &str, body: Value) -> Resp {
        self.call(
            "POST",
            "/v1/policies/simulate",
            Some(key),
            Some(&body.to_string()),
        )
        .await
    }

    async fn validate(&self, key: &str, body: Value) -> Resp {
        self.call(
            "POST",
            "/v1/policies/validate",
            Some(key),
            Some(&body.to_string()),
        )
        .await
    }

    async fn set_mode(&self, key: &str, policy: &str, body: &str) -> Resp {
        self.call(
            "PUT",
            &format!("/v1/policies/{policy}/mode"),
            Some(key),
            Some(body),
        )
        .await
    }

    /// The data plane's path for a registered agent, step by step as the proxy takes it:
    /// classify the head, inspect the buffered JSON body, build the input with the one
    /// builder, `PolicyEngine::decide`.
    fn decide_http(
        &self,
        agent: &str,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> portcullis_core::Decision {
        let entry = self.registry.snapshot().get(agent).cloned().unwrap();
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let classifier = Classifier::new(&[]).unwrap();
        let content_type = h.get("content-type").and_then(|v| v.to_str().ok());
        let head = RequestHead {
            method,
            host,
            port: 443,
            path,
            content_type,
        };
        let mut llm = classifier.classify_head(&head);
        let mut json = None;
        if let Some(c) = llm.as_mut() {
            if classifier.wants_body(&head) {
                c.inspect_body(content_type, body, 1024 * 1024);
                if c.body_inspected {
                    json = serde_json::from_slice::<Value>(body).ok();
                }
            }
        }
        let input = build_input(&ExchangeFacts {
            kind: RequestKind::Http,
            principal: entry.principal(),
            subagent: None,
            method,
            scheme: "https",
            host,
            port: 443,
            path,
            query: None,
            headers: &h,
            llm: llm.as_ref(),
            body: json.as_ref(),
            usage: UsageFacts::default(),
            credential: None,
            mcp: None,
        });
        self.engine.decide(&input).decision
    }

    fn decide_chat(&self, agent: &str) -> portcullis_core::Decision {
        self.decide_http(
            agent,
            "POST",
            "api.openai.com",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            br#"{"model": "gpt-3.5-turbo", "messages": []}"#,
        )
    }
}

fn chat(agent: &str, model: &str) -> Value {
    json!({
        "agent": agent,
        "request": {"kind": "http", "method": "POST", "host": "api.openai.com", "port": 443,
                    "path": "/v1/chat/completions",
                    "headers": {"content-type": "application/json",
                                "authorization": "Bearer sk-live-SECRET-1",
                                "x-api-key": "SECRET-2", "cookie": "session=SECRET-3",
                                "openai-organization": "org-visible"},
                    "body": {"model": model, "messages": []}}
    })
}

fn stripe_charge(agent: &str) -> Value {
    json!({
        "agent": agent,
        "request": {"method": "POST", "host": "api.stripe.com", "path": "/v1/charges"}
    })
}

fn trace_of<'a>(v: &'a Value, policy: &str) -> &'a Value {
    v["trace"]
        .as_array()
        .and_then(|t| t.iter().find(|p| p["policy"] == policy))
        .unwrap_or_else(|| panic!("{policy} not in trace: {v}"))
}

#[tokio::test]
async fn without_an_engine_policy_routes_are_disabled() {
    let h = start_with(None).await;
    for (m, p, b) in [
        ("GET", "/v1/policies", None),
        (
            "POST",
            "/v1/policies/validate",
            Some(r#"{"source":"package x"}"#),
        ),
        ("POST", "/v1/policies/simulate", Some("{}")),
        (
            "PUT",
            "/v1/policies/baseline/mode",
            Some(r#"{"mode":"shadow"}"#),
        ),
    ] {
        let r = h.call(m, p, Some(&h.platform), b).await;
        assert_eq!(r.status, 404, "{m} {p}");
        assert_eq!(r.json()["code"], "policy_disabled");
        let anon = h.call(m, p, None, b).await;
        assert_eq!(anon.status, 401, "credentials first: {m} {p}");
    }
    // The agents API is unaffected.
    assert_eq!(
        h.call("GET", "/v1/agents", Some(&h.admin_a), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn list_shows_the_example_policies_with_modes_and_reload_status() {
    let h = start().await;
    let r = h.call("GET", "/v1/policies", Some(&h.viewer_a), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    let names: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "baseline",
            "high_risk_llm",
            "mcp_tools",
            "model_allowlist",
            "stripe_readonly"
        ]
    );
    let p = |name: &str| {
        v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(p("baseline")["mode"], "active");
    assert_eq!(p("baseline")["file"], "baseline.rego");
    assert_eq!(p("high_risk_llm")["mode"], "shadow", "declared mode");
    assert_eq!(p("high_risk_llm")["mode_override"], Value::Null);
    assert_eq!(p("stripe_readonly")["bindings"], json!([]));
    assert_eq!(v["reload"]["ok"], true);
    assert_eq!(v["reload"]["policies"], 5);
    assert_eq!(v["reload"]["errors"], json!([]));
    assert_eq!(v["version"], h.engine.version());
    assert_eq!(v["default"], "deny");
    // Wrong method: 405 with Allow.
    let post = h
        .call("POST", "/v1/policies", Some(&h.admin_a), Some("{}"))
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET"));
}

#[tokio::test]
async fn bindings_of_other_tenants_are_not_listed() {
    let cfg = EngineConfig {
        bindings: vec![
            Binding {
                tenants: vec!["globex".into()],
                ..Binding::all("stripe_readonly", PolicyMode::Shadow)
            },
            Binding {
                agents: vec!["globex_bot".into(), "bot".into()],
                ..Binding::all("model_allowlist", PolicyMode::Active)
            },
            Binding {
                agents: vec!["globex_bot".into()],
                ..Binding::all("model_allowlist", PolicyMode::Shadow)
            },
        ],
        ..EngineConfig::default()
    };
    let h = start_with(Some(cfg)).await;
    let acme = h
        .call("GET", "/v1/policies", Some(&h.admin_a), None)
        .await
        .json();
    let body = acme.to_string();
    assert!(!body.contains("globex"), "another tenant leaked: {body}");
    let find = |v: &Value, name: &str| {
        v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["bindings"]
            .clone()
    };
    assert_eq!(find(&acme, "stripe_readonly"), json!([]));
    let mb = find(&acme, "model_allowlist");
    assert_eq!(mb.as_array().unwrap().len(), 1);
    assert_eq!(mb[0]["agents"], json!(["bot"]));
    // The platform tenant sees every binding.
    let all = h
        .call("GET", "/v1/policies", Some(&h.platform), None)
        .await
        .json();
    assert_eq!(
        find(&all, "stripe_readonly")[0]["tenants"],
        json!(["globex"])
    );
    assert_eq!(find(&all, "model_allowlist").as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn validate_reports_file_row_and_col() {
    let h = start().await;
    let ok = h
        .validate(
            &h.viewer_a,
            json!({"name": "extra.rego", "source": "package portcullis.policy.extra\nimport rego.v1\nallow if input.kind == \"token\"\n"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json(), json!({"valid": true, "errors": []}));

    let syntax = h
        .validate(
            &h.viewer_a,
            json!({"name": "broken.rego", "source": "package portcullis.policy.broken\nimport rego.v1\n\nallow if {\n  input.kind == \n}\n"}),
        )
        .await;
    assert_eq!(syntax.status, 200, "{}", syntax.body);
    let v = syntax.json();
    assert_eq!(v["valid"], false);
    assert_eq!(
        v["errors"],
        json!([{"file": "broken.rego", "row": 6, "col": 1, "stage": "parse",
                "message": "expecting expression"}]),
        "the expression is missing where the closing brace stands"
    );

    let send = h
        .validate(
            &h.admin_a,
            json!({"source": "package portcullis.policy.exfil\nimport rego.v1\n\nallow if {\n  r := http.send({\"method\": \"GET\", \"url\": \"http://x\"})\n  r.status_code == 200\n}\n"}),
        )
        .await;
    assert_eq!(send.status, 200, "{}", send.body);
    let v = send.json();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(e["file"], "policy.rego", "default name");
    assert_eq!(e["row"], 5, "{e}");
    assert_eq!(e["col"], 8, "column of http.send: {e}");
    assert!(e["message"].as_str().unwrap().contains("http.send"), "{e}");

    // A policy using the shipped catalog library validates against it.
    let with_lib = h
        .validate(
            &h.viewer_a,
            json!({"source": "package portcullis.policy.uses_lib\nimport rego.v1\nimport data.portcullis.lib.catalog\ndeny contains catalog.missing_scope_reason if not catalog.scope_held\n"}),
        )
        .await;
    assert_eq!(with_lib.json()["valid"], true, "{}", with_lib.body);

    // Validation changes nothing.
    assert_eq!(h.engine.list_policies().len(), 5);

    for (body, status, field) in [
        (json!({}), 422, "source"),
        (json!({"source": 5}), 422, "source"),
        (
            json!({"source": "package x", "name": "../../etc/passwd"}),
            422,
            "name",
        ),
        (json!({"source": "package x", "extra": true}), 422, "extra"),
    ] {
        let r = h.validate(&h.admin_a, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.json()["code"], "validation_error");
        assert_eq!(r.json()["errors"][0]["field"], field, "{body}");
    }
    let bad = h
        .call(
            "POST",
            "/v1/policies/validate",
            Some(&h.admin_a),
            Some("{\"source\": "),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "invalid_json");
}

#[tokio::test]
async fn simulate_allowed_and_denied_requests_with_trace() {
    let h = start().await;
    let allowed = h.simulate(&h.admin_a, chat("bot", "gpt-4o")).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let v = allowed.json();
    assert_eq!(v["decision"]["allowed"], true);
    assert_eq!(v["decision"]["verdict"], "allow");
    assert_eq!(v["decision"]["policy"], "baseline");
    assert_eq!(v["decision"]["reasons"], json!([]));
    assert_eq!(v["decision"]["cached"], false);
    assert_eq!(v["forwarded"], false);
    assert_eq!(v["authenticates"], true);
    assert_eq!(
        v["agent"],
        json!({"id": "bot", "tenant": "acme", "status": "active", "mode": "active"})
    );
    assert_eq!(v["trace"].as_array().unwrap().len(), 5);
    assert_eq!(trace_of(&v, "baseline")["allow"], true);
    assert_eq!(trace_of(&v, "baseline")["applicable"], true);
    assert_eq!(trace_of(&v, "model_allowlist")["deny"], json!([]));
    assert_eq!(v["input"]["agent"]["id"], "bot");
    assert_eq!(
        v["input"]["request"]["headers"]["openai-organization"],
        "org-visible"
    );
    assert!(v["input"]["now"].is_string(), "engine clock fills now");
    assert_eq!(v["version"], h.engine.version());
    for secret in ["SECRET-1", "SECRET-2", "SECRET-3", "sk-live"] {
        assert!(!allowed.body.contains(secret), "{secret} leaked");
    }

    let denied = h.simulate(&h.viewer_a, chat("bot", "gpt-3.5-turbo")).await;
    assert_eq!(denied.status, 200, "{}", denied.body);
    let v = denied.json();
    assert_eq!(v["decision"]["allowed"], false);
    assert_eq!(v["decision"]["verdict"], "deny");
    assert_eq!(v["decision"]["policy"], "model_allowlist");
    assert_eq!(v["decision"]["code"], "policy_denied");
    assert_eq!(
        v["decision"]["reasons"],
        json!(["model gpt-3.5-turbo is not on the openai allowlist"])
    );
    assert_eq!(
        trace_of(&v, "model_allowlist")["deny"],
        json!(["model gpt-3.5-turbo is not on the openai allowlist"])
    );
    assert_eq!(trace_of(&v, "baseline")["allow"], true);

    let stripe = h.simulate(&h.admin_a, stripe_charge("bot")).await.json();
    assert_eq!(stripe["decision"]["verdict"], "deny");
    assert_eq!(stripe["decision"]["policy"], "stripe_readonly");
    assert_eq!(
        stripe["decision"]["reasons"],
        json!(["stripe is read-only: POST /v1/charges is not allowed"])
    );
    assert_eq!(stripe["input"]["request"]["scheme"], "https");
    assert_eq!(stripe["input"]["request"]["port"], 443);

    // A declared shadow policy reports would_deny without blocking.
    let mut risky = chat("risky", "gpt-4o");
    risky["request"]["body"]["stream"] = json!(true);
    let v = h.simulate(&h.admin_a, risky).await.json();
    assert_eq!(v["decision"]["verdict"], "would_deny", "{v}");
    assert_eq!(v["decision"]["allowed"], true);
    assert_eq!(v["decision"]["would_deny"], json!(["high_risk_llm"]));
    assert_eq!(trace_of(&v, "high_risk_llm")["mode"], "shadow");

    // A suspended agent is simulated but flagged: the proxy refuses it before policy.
    let v = h
        .simulate(&h.admin_a, chat("sleepy", "gpt-4o"))
        .await
        .json();
    assert_eq!(v["authenticates"], false);
    assert_eq!(v["agent"]["status"], "suspended");

    // Simulation is not counted as a data-plane decision.
    assert_eq!(h.engine.stats().decisions, 0);
}

#[tokio::test]
async fn simulate_token_requests_and_raw_input_documents() {
    let h = start().await;
    let tok = h
        .simulate(
            &h.admin_a,
            json!({"agent": "bot", "token": {"scopes": ["openai:chat:create"]}}),
        )
        .await;
    assert_eq!(tok.status, 200, "{}", tok.body);
    let v = tok.json();
    assert_eq!(v["input"]["kind"], "token");
    assert_eq!(v["input"]["token"]["scopes"], json!(["openai:chat:create"]));
    assert_eq!(v["decision"]["verdict"], "allow");

    // A token that lacks the scope the request needs is refused by the catalog.
    let mut narrow = stripe_charge("bot");
    narrow["request"]["method"] = json!("GET");
    narrow["request"]["path"] = json!("/v1/customers");
    narrow["token"] = json!({"scopes": ["openai:chat:create"]});
    let v = h.simulate(&h.admin_a, narrow).await.json();
    assert_eq!(v["decision"]["verdict"], "deny", "{v}");
    assert_eq!(v["decision"]["policy"], "baseline");
    assert_eq!(
        v["decision"]["reasons"],
        json!(["missing scope stripe:customer:read for GET api.stripe.com/v1/customers"])
    );

    // Raw input: evaluated as given, but the identity is the registered agent's.
    let raw = h
        .simulate(
            &h.admin_a,
            json!({"agent": "bot", "input": {
                "kind": "http",
                "agent": {"id": "globex_bot", "tenant": "globex", "mode": "shadow"},
                "request": {"method": "POST", "scheme": "https", "host": "api.stripe.com", "port": 443,
                            "path": "/v1/charges",
                            "headers": {"authorization": "Bearer SECRET-RAW", "accept": "*/*"}}}}),
        )
        .await;
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert!(!raw.body.contains("SECRET-RAW"));
    let v = raw.json();
    assert_eq!(v["input"]["agent"]["id"], "bot");
    assert_eq!(v["input"]["agent"]["tenant"], "acme");
    assert_eq!(v["input"]["request"]["headers"], json!({"accept": "*/*"}));
    assert_eq!(
        v["decision"]["verdict"], "deny",
        "agent mode is the registry's"
    );
    assert_eq!(v["decision"]["policy"], "stripe_readonly");
}

#[tokio::test]
async fn simulate_only_runs_as_the_operators_own_agents() {
    let h = start().await;
    let unknown = h.simulate(&h.admin_a, chat("no_such_bot", "gpt-4o")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "not_found");
    for key in [&h.admin_a, &h.viewer_a] {
        let other = h.simulate(key, chat("globex_bot", "gpt-4o")).await;
        assert_eq!(other.status, 404, "{}", other.body);
        assert_eq!(
            other.json(),
            unknown.json(),
            "same answer as an unknown agent"
        );
    }
    let bad_id = h.simulate(&h.admin_a, chat("../Bot", "gpt-4o")).await;
    assert_eq!(bad_id.status, 404);
    // The owner may.
    let own = h.simulate(&h.admin_b, chat("globex_bot", "gpt-4o")).await;
    assert_eq!(own.status, 200, "{}", own.body);
    // So may not the platform tenant: agents are per tenant.
    assert_eq!(
        h.simulate(&h.platform, chat("globex_bot", "gpt-4o"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn simulate_rejects_malformed_and_invalid_bodies() {
    let h = start().await;
    for raw in ["{", "[1,2]", "\"x\"", ""] {
        let r = h
            .call("POST", "/v1/policies/simulate", Some(&h.admin_a), Some(raw))
            .await;
        assert_eq!(r.status, 400, "{raw:?}: {}", r.body);
        assert!(r.json()["code"].is_string());
    }
    for (body, field) in [
        (json!({"request": {"host": "api.openai.com"}}), "agent"),
        (json!({"agent": "bot"}), "request"),
        (
            json!({"agent": "bot", "request": {"host": "api.openai.com"}, "bogus": 1}),
            "bogus",
        ),
        (
            json!({"agent": "bot", "request": {"host": "api.openai.com", "port": 0}}),
            "request.port",
        ),
        (
            json!({"agent": "bot", "request": {"kind": "smtp", "host": "a.b"}}),
            "request.kind",
        ),
        (
            json!({"agent": "bot", "request": {"host": "a.b"}, "llm": {"provider": "openai"}}),
            "llm.api",
        ),
        (
            json!({"agent": "bot", "request": {"host": "a.b"}, "input": {}}),
            "request",
        ),
        (
            json!({"agent": "bot", "request": {"host": "a.b"}, "now": "tomorrow"}),
            "now",
        ),
        (json!({"agent": "bot", "input": {"kind": 3}}), "input.kind"),
    ] {
        let r = h.simulate(&h.admin_a, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["code"], "validation_error");
        assert!(
            v["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field} not reported for {body}: {v}"
        );
    }
    // Field validation does not depend on the agent, so a 422 reveals nothing about it.
    let r = h
        .simulate(
            &h.admin_a,
            json!({"agent": "globex_bot", "request": {"port": "x"}}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(!r.body.contains("globex\""));
}

#[tokio::test]
async fn mode_override_changes_the_next_decision() {
    let h = start().await;
    assert_eq!(h.decide_chat("bot").verdict, Verdict::Deny);
    let before = h.engine.version();

    let r = h
        .set_mode(&h.platform, "model_allowlist", r#"{"mode":"shadow"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["name"], "model_allowlist");
    assert_eq!(v["mode"], "shadow");
    assert_eq!(v["mode_override"], "shadow");
    assert!(v["version"].as_u64().unwrap() > before);

    // The simulator and the data plane both see it at once.
    let sim = h
        .simulate(&h.viewer_a, chat("bot", "gpt-3.5-turbo"))
        .await
        .json();
    assert_eq!(sim["decision"]["verdict"], "would_deny", "{sim}");
    assert_eq!(sim["decision"]["allowed"], true);
    assert_eq!(sim["decision"]["would_deny"], json!(["model_allowlist"]));
    assert_eq!(trace_of(&sim, "model_allowlist")["mode"], "shadow");
    let d = h.decide_chat("bot");
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert!(d.allowed);
    let listed = h
        .call("GET", "/v1/policies", Some(&h.viewer_a), None)
        .await
        .json();
    assert!(listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "model_allowlist" && p["mode_override"] == "shadow"));

    // Disabled: not evaluated at all.
    let r = h
        .set_mode(&h.platform, "model_allowlist", r#"{"mode":"DISABLED"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sim = h
        .simulate(&h.admin_a, chat("bot", "gpt-3.5-turbo"))
        .await
        .json();
    assert_eq!(sim["decision"]["verdict"], "allow");
    assert_eq!(trace_of(&sim, "model_allowlist")["applicable"], false);

    // null drops the override: the declared mode (active) is back.
    let r = h
        .set_mode(&h.platform, "model_allowlist", r#"{"mode":null}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mode_override"], Value::Null);
    assert_eq!(r.json()["mode"], "active");
    assert_eq!(h.decide_chat("bot").verdict, Verdict::Deny);

    // Promoting a declared shadow policy.
    let r = h
        .set_mode(&h.platform, "high_risk_llm", r#"{"mode":"active"}"#)
        .await;
    assert_eq!(r.status, 200);
    let mut risky = chat("risky", "gpt-4o");
    risky["request"]["body"]["stream"] = json!(true);
    let v = h.simulate(&h.admin_a, risky).await.json();
    assert_eq!(v["decision"]["verdict"], "deny");
    assert_eq!(v["decision"]["policy"], "high_risk_llm");
    assert_eq!(
        v["decision"]["reasons"],
        json!(["high-risk agent may not stream LLM responses"])
    );
}

#[tokio::test]
async fn mode_changes_are_for_platform_admins_and_validated() {
    let h = start().await;
    let version = h.engine.version();
    let viewer = h
        .set_mode(&h.viewer_a, "model_allowlist", r#"{"mode":"shadow"}"#)
        .await;
    assert_eq!(viewer.status, 403);
    assert_eq!(viewer.json()["code"], "forbidden");
    for key in [&h.admin_a, &h.admin_b] {
        let tenant_admin = h
            .set_mode(key, "model_allowlist", r#"{"mode":"disabled"}"#)
            .await;
        assert_eq!(tenant_admin.status, 403, "{}", tenant_admin.body);
        assert_eq!(tenant_admin.json()["code"], "forbidden");
    }
    let unknown = h
        .set_mode(&h.platform, "no_such_policy", r#"{"mode":"shadow"}"#)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "not_found");
    for bad in [
        r#"{"mode":"off"}"#,
        r#"{"mode":1}"#,
        r#"{}"#,
        r#"{"mode":"shadow","why":"x"}"#,
    ] {
        let r = h.set_mode(&h.platform, "model_allowlist", bad).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(r.json()["code"], "validation_error");
    }
    for bad in ["{\"mode\":", "[]", "shadow"] {
        let r = h.set_mode(&h.platform, "model_allowlist", bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let get = h
        .call(
            "GET",
            "/v1/policies/model_allowlist/mode",
            Some(&h.platform),
            None,
        )
        .await;
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow").as_deref(), Some("PUT"));
    let anon = h
        .call(
            "PUT",
            "/v1/policies/model_allowlist/mode",
            None,
            Some(r#"{"mode":"disabled"}"#),
        )
        .await;
    assert_eq!(anon.status, 401);
    // Nothing changed.
    assert_eq!(h.engine.version(), version);
    assert!(h
        .engine
        .list_policies()
        .iter()
        .all(|p| p.mode_override.is_none()));
    assert_eq!(h.decide_chat("bot").verdict, Verdict::Deny);
}

#[tokio::test]
async fn a_custom_platform_tenant_owns_mode_changes() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let registry = Arc::new(Registry::new());
    let cp = ControlPlane::new(store.clone(), registry, Arc::new(SystemClock));
    let engine = Arc::new(
        PolicyEngine::with_sources(
            EngineConfig::default(),
            Arc::new(SystemClock),
            example_sources(),
        )
        .unwrap(),
    );
    let (_tx, rx) = watch::channel(false);
    let admin = Admin::with_policy(
        prometheus::Registry::new(),
        Vec::new(),
        rx.clone(),
        cp,
        Some(PolicyApi::new(engine.clone()).platform_tenant("ops")),
    );
    assert!(admin.policy().is_some());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, admin, rx));
    let (_, default_admin) = store
        .create_api_key("default", Role::Admin, "k", 1)
        .await
        .unwrap();
    let (_, ops_admin) = store
        .create_api_key("ops", Role::Admin, "k", 1)
        .await
        .unwrap();
    let h = Harness {
        addr,
        engine: engine.clone(),
        registry: Arc::new(Registry::new()),
        platform: ops_admin.clone(),
        admin_a: default_admin.clone(),
        viewer_a: default_admin.clone(),
        admin_b: default_admin.clone(),
        _shutdown: _tx,
    };
    let body = r#"{"mode":"shadow"}"#;
    assert_eq!(
        h.set_mode(&default_admin, "baseline", body).await.status,
        403
    );
    assert_eq!(h.set_mode(&ops_admin, "baseline", body).await.status, 200);
    assert_eq!(
        engine.list_policies()[0].mode_override,
        Some(PolicyMode::Shadow)
    );
}

/// (verdict, policy, reasons) of a simulate answer and of a data-plane decision.
fn verdict_of(v: &Value) -> (Value, Value, Value) {
    (
        v["decision"]["verdict"].clone(),
        v["decision"]["policy"].clone(),
        v["decision"]["reasons"].clone(),
    )
}

fn verdict_of_decision(d: &portcullis_core::Decision) -> (Value, Value, Value) {
    (json!(d.verdict), json!(d.policy), json!(d.reasons))
}

#[tokio::test]
async fn simulate_decides_on_the_body_exactly_as_the_data_plane() {
    let h = start().await;
    let ct = [("content-type", "application/json")];
    for model in ["gpt-4-32k", "gpt-4o"] {
        let r = h.simulate(&h.admin_a, chat("bot", model)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let body = json!({"model": model, "messages": []}).to_string();
        let d = h.decide_http(
            "bot",
            "POST",
            "api.openai.com",
            "/v1/chat/completions",
            &ct,
            body.as_bytes(),
        );
        assert_eq!(verdict_of(&v), verdict_of_decision(&d), "{model}: {v}");
        assert_eq!(v["input"]["llm"]["model"], model);
        assert_eq!(v["input"]["request"]["body"]["model"], model);
        assert_eq!(v["classification"]["model"], model);
        assert_eq!(v["classification"]["body_inspected"], true);
    }
    let v = h
        .simulate(&h.admin_a, chat("bot", "gpt-4-32k"))
        .await
        .json();
    assert_eq!(
        verdict_of(&v),
        (
            json!("deny"),
            json!("model_allowlist"),
            json!(["model gpt-4-32k is not on the openai allowlist"])
        )
    );

    // The exact bytes: a duplicated model is ambiguous to the gateway, and to the simulator.
    let dup = r#"{"model":"gpt-4o","model":"gpt-4-32k","messages":[]}"#;
    let mut raw = chat("bot", "x");
    raw["request"]["body"] = Value::Null;
    raw["request"]["body_raw"] = json!(dup);
    let v = h.simulate(&h.admin_a, raw).await.json();
    let d = h.decide_http(
        "bot",
        "POST",
        "api.openai.com",
        "/v1/chat/completions",
        &ct,
        dup.as_bytes(),
    );
    assert_eq!(verdict_of(&v), verdict_of_decision(&d), "{v}");
    assert_eq!(
        v["decision"]["reasons"],
        json!(["openai requests must name a model"])
    );
    assert_eq!(v["classification"]["note"], "invalid_json");

    // A stated classification that contradicts the body is refused, naming the field.
    let mut stated = chat("bot", "gpt-4-32k");
    stated["llm"] = json!({"provider": "openai", "api": "chat.completions", "model": "gpt-4o"});
    let r = h.simulate(&h.admin_a, stated).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let v = r.json();
    assert_eq!(v["code"], "validation_error");
    assert_eq!(v["errors"][0]["field"], "llm.model", "{v}");
    assert!(
        v["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("model \"gpt-4-32k\""),
        "{v}"
    );
}

#[tokio::test]
async fn simulate_sees_method_overrides_as_the_data_plane() {
    let h = start().await;
    let post = h.simulate(&h.admin_a, stripe_charge("bot")).await.json();
    let mut override_forms = Vec::new();
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        let mut b = stripe_charge("bot");
        b["request"]["method"] = json!("GET");
        b["request"]["headers"] = json!({header: "post"});
        override_forms.push((b, Some(header)));
    }
    let mut q = stripe_charge("bot");
    q["request"]["method"] = json!("GET");
    q["request"]["query"] = json!("_method=POST");
    override_forms.push((q, None));
    for (body, header) in override_forms {
        let r = h.simulate(&h.admin_a, body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["input"]["request"]["method_override"], "POST", "{v}");
        assert_eq!(verdict_of(&v), verdict_of(&post), "{body}");
        if let Some(name) = header {
            let d = h.decide_http(
                "bot",
                "GET",
                "api.stripe.com",
                "/v1/charges",
                &[(name, "post")],
                b"",
            );
            assert_eq!(verdict_of(&v), verdict_of_decision(&d), "{name}");
        }
    }
    assert_eq!(
        post["decision"]["reasons"],
        json!(["stripe is read-only: POST /v1/charges is not allowed"])
    );
    // Without an override the GET is allowed, and the input has no method_override.
    let mut get = stripe_charge("bot");
    get["request"]["method"] = json!("GET");
    let v = h.simulate(&h.admin_a, get).await.json();
    assert_eq!(v["decision"]["verdict"], "allow", "{v}");
    assert!(v["input"]["request"].get("method_override").is_none());
}

#[tokio::test]
async fn validate_refuses_foreign_packages_and_unused_libraries() {
    let h = start().await;
    let typo = h
        .validate(
            &h.viewer_a,
            json!({"name": "guard.rego", "source": "# Guard.\npackage portcullis.policies.guard\nimport rego.v1\n\ndeny contains \"no\" if true\n"}),
        )
        .await;
    assert_eq!(typo.status, 200, "{}", typo.body);
    assert_eq!(
        typo.json(),
        json!({"valid": false, "errors": [{
            "file": "guard.rego", "row": 2, "col": 1, "stage": "validate",
            "message": "package portcullis.policies.guard would never be evaluated: a policy's package must be portcullis.policy.<name> (e.g. portcullis.policy.guard), and a library's must be imported by a policy (import data.portcullis.policies.guard)"}]})
    );
    let lib = h
        .validate(
            &h.viewer_a,
            json!({"name": "lib/extra.rego", "source": "package portcullis.lib.extra\nimport rego.v1\n\nx := 1\n"}),
        )
        .await
        .json();
    assert_eq!(lib["valid"], false, "{lib}");
    assert_eq!(lib["errors"][0]["file"], "lib/extra.rego");
    // The active catalog is imported by the baseline: editing it validates.
    let catalog = include_str!("../../../../config/policies/lib/catalog.rego");
    let ok = h
        .validate(
            &h.viewer_a,
            json!({"name": "lib/catalog.rego", "source": catalog}),
        )
        .await
        .json();
    assert_eq!(ok, json!({"valid": true, "errors": []}));
    assert_eq!(
        h.engine.list_policies().len(),
        5,
        "validation changes nothing"
    );
}
