//! Several gateways ("replicas": a control plane, an engine and an admin listener each) on
//! one store: what one changes, the others enforce; `/readyz` tells a store outage.

use portcullis_admin::{
    serve, Admin, ControlPlane, PolicyApi, PolicyModeSync, ReadyCheck, StoreReady,
};
use portcullis_core::{AgentStatus, PolicyMode, SystemClock};
use portcullis_identity::Registry;
use portcullis_policy::{example_sources, EngineConfig, PolicyEngine};
use portcullis_store::testing::{server_address, with_address, Relay, TestDatabase};
use portcullis_store::{Role, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Replica {
    addr: SocketAddr,
    engine: Arc<PolicyEngine>,
    registry: Arc<Registry>,
    store: Store,
    _shutdown: watch::Sender<bool>,
}

impl Replica {
    /// A gateway's control plane on `url`: registry loaded, watcher and policy-mode sync
    /// running, admin listener with the store readiness check.
    async fn start(url: &str) -> Replica {
        let store = Store::connect(url).await.unwrap();
        let registry = Arc::new(Registry::new());
        let cp = ControlPlane::new(store.clone(), registry.clone(), Arc::new(SystemClock));
        let engine = Arc::new(
            PolicyEngine::with_sources(
                EngineConfig::default(),
                Arc::new(SystemClock),
                example_sources(),
            )
            .unwrap(),
        );
        let modes = PolicyModeSync::new(engine.clone());
        cp.add_reload_hook(modes.clone());
        cp.reload_registry().await.unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn({
            let (cp, rx) = (cp.clone(), rx.clone());
            async move { cp.watch(rx).await }
        });
        tokio::spawn({
            let rx = rx.clone();
            async move { modes.follow_engine(rx).await }
        });
        let checks: Vec<Arc<dyn ReadyCheck>> = vec![Arc::new(StoreReady::new(cp.clone(), None))];
        let admin = Admin::with_policy(
            prometheus::Registry::new(),
            checks,
            rx.clone(),
            cp,
            Some(PolicyApi::new(engine.clone())),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, admin, rx));
        Replica {
            addr,
            engine,
            registry,
            store,
            _shutdown: tx,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut r = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
        if let Some(k) = key {
            r.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        let b = body.unwrap_or("");
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(r.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
            .await
            .expect("response in time")
            .ok();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn mode_of(&self, policy: &str) -> Option<PolicyMode> {
        self.engine
            .list_policies()
            .into_iter()
            .find(|p| p.name == policy)
            .and_then(|p| p.mode_override)
    }
}

/// Polls `cond` until it holds (bounded; nothing asserts how fast).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// A policy mode and an agent suspension set through replica A are enforced by replica B,
/// and a replica started afterwards (a restart) loads the mode from the store.
async fn changes_reach_every_replica_and_survive_a_restart(url: &str) {
    let a = Replica::start(url).await;
    let b = Replica::start(url).await;
    let platform = a
        .store
        .create_api_key("default", Role::Admin, "ops", 1)
        .await
        .unwrap()
        .1;
    let mut bot = portcullis_core::Agent::new("bot", "default", 1);
    bot.allowed_scopes = vec!["openai:*:*".into()];
    a.store.create_agent(&bot).await.unwrap();
    eventually("b loads the new agent", || {
        b.registry.snapshot().get("bot").is_some()
    })
    .await;

    assert_eq!(b.mode_of("model_allowlist"), None);
    let (status, v) = a
        .call(
            "PUT",
            "/v1/policies/model_allowlist/mode",
            Some(&platform),
            Some(r#"{"mode":"shadow"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["mode_override"], "shadow");
    assert_eq!(a.mode_of("model_allowlist"), Some(PolicyMode::Shadow));
    eventually("b enforces the mode set through a", || {
        b.mode_of("model_allowlist") == Some(PolicyMode::Shadow)
    })
    .await;

    let (status, v) = b
        .call("POST", "/v1/agents/bot/suspend", Some(&platform), None)
        .await;
    assert_eq!(status, 200, "{v}");
    eventually("a sees the suspension made through b", || {
        a.registry
            .snapshot()
            .get("bot")
            .is_some_and(|e| e.agent.status == AgentStatus::Suspended)
    })
    .await;

    // A restart: a new replica on the same store starts with the stored mode.
    let c = Replica::start(url).await;
    assert_eq!(c.mode_of("model_allowlist"), Some(PolicyMode::Shadow));
    // Dropping the override through c reaches a and b.
    let (status, _) = c
        .call(
            "PUT",
            "/v1/policies/model_allowlist/mode",
            Some(&platform),
            Some(r#"{"mode":null}"#),
        )
        .await;
    assert_eq!(status, 200);
    eventually("the override is gone everywhere", || {
        a.mode_of("model_allowlist").is_none() && b.mode_of("model_allowlist").is_none()
    })
    .await;
    assert_eq!(c.store.policy_modes().await.unwrap().len(), 0);
    // An unknown policy is refused without touching the store.
    let rev = c.store.revision().await.unwrap();
    let (status, _) = c
        .call(
            "PUT",
            "/v1/policies/no_such_policy/mode",
            Some(&platform),
            Some(r#"{"mode":"shadow"}"#),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(c.store.revision().await.unwrap(), rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_changes_reach_every_replica_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    changes_reach_every_replica_and_survive_a_restart(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_every_replica_and_survive_a_restart() {
    let db = TestDatabase::create().await;
    changes_reach_every_replica_and_survive_a_restart(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_degraded_while_postgres_is_away_and_the_registry_keeps_serving() {
    let db = TestDatabase::create().await;
    let relay = Relay::start(server_address(db.url())).unwrap();
    let url = with_address(db.url(), relay.addr());
    let r = Replica::start(&url).await;
    r.store
        .create_agent(&portcullis_core::Agent::new("bot", "t", 1))
        .await
        .unwrap();
    eventually("the agent is loaded", || {
        r.registry.snapshot().get("bot").is_some()
    })
    .await;
    // The change feed connects on its own task: ready once it listens.
    let mut ready = None;
    for _ in 0..500 {
        let (status, v) = r.call("GET", "/readyz", None, None).await;
        if v["status"] == "ready" {
            ready = Some((status, v));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = ready.unwrap_or_else(|| panic!("never ready"));
    assert_eq!((status, v["status"].as_str()), (200, Some("ready")), "{v}");
    let detail = &v["components"]["store"]["detail"];
    assert_eq!(detail["state"], "ok");
    assert_eq!(detail["change_feed"], "listening");
    let shown = detail["backend"].as_str().unwrap_or_default().to_owned();
    assert!(shown.starts_with("postgres://"), "{shown}");
    let password = db
        .url()
        .split('@')
        .next()
        .and_then(|u| u.rsplit(':').next())
        .unwrap_or("");
    assert!(!password.is_empty() && !shown.contains(password), "{shown}");

    relay.cut();
    let mut last = Value::Null;
    for _ in 0..600 {
        let (status, v) = r.call("GET", "/readyz", None, None).await;
        assert_eq!(
            status, 200,
            "still ready: the data plane decides on the last state"
        );
        if v["status"] == "degraded" && v["components"]["store"]["detail"]["state"] == "unreachable"
        {
            last = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["components"]["store"]["degraded"], true, "{last}");
    assert!(
        last["components"]["store"]["detail"]["error"].is_string(),
        "{last}"
    );
    assert!(
        r.registry.snapshot().get("bot").is_some(),
        "the last state still serves"
    );

    relay.restore().unwrap();
    let mut back = false;
    for _ in 0..600 {
        let (_, v) = r.call("GET", "/readyz", None, None).await;
        if v["status"] == "ready" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "readyz is ready again once the store answers");
}
