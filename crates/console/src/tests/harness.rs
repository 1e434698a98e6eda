//! A console over a fresh in-memory store, two tenants, keys of each role, records.

use crate::{Console, ConsoleSettings, Overview};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use portcullis_admin::{Admin, ControlPlane, PolicyApi};
use portcullis_core::{Agent, AuditRecord, Clock, ManualClock, RequestKind, Usage, Verdict};
use portcullis_identity::Registry;
use portcullis_policy::{EngineConfig, PolicyEngine, SourceFile};
use portcullis_store::testing::TestDatabase;
use portcullis_store::{AuditRow, Role, Store};
use std::net::SocketAddr;
use std::sync::Arc;

/// Start of the test clock: 2026-01-01T00:00:00Z.
pub(crate) const T0: u64 = 1_767_225_600;

const GUARD: &str = r#"package portcullis.policy.guard

import rego.v1

allow if input.request.host == "api.example"

deny contains "path /admin is off limits" if startswith(input.request.path, "/admin")
"#;

/// The store backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Db {
    /// A private in-memory SQLite database.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `PORTCULLIS_TEST_POSTGRES_URL` (the
    /// test fails without it), dropped with the harness.
    Postgres,
}

pub(crate) struct H {
    pub(crate) admin: Arc<Admin>,
    pub(crate) console: Arc<Console>,
    pub(crate) store: Store,
    pub(crate) clock: Arc<ManualClock>,
    /// Keys: default-tenant admin and viewer, acme admin.
    pub(crate) admin_key: String,
    pub(crate) viewer_key: String,
    pub(crate) acme_key: String,
    /// The PostgreSQL test database, dropped after everything above.
    _db: Option<TestDatabase>,
}

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub(crate) fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

pub(crate) fn record(
    id: &str,
    tenant: &str,
    agent: &str,
    verdict: Verdict,
    ts_ms: i64,
) -> AuditRecord {
    let mut r = AuditRecord::new(id, ts_ms, tenant, agent, RequestKind::Http, verdict);
    r.method = Some("POST".into());
    r.scheme = Some("https".into());
    r.host = Some("api.example".into());
    r.port = Some(443);
    r.path = Some("/v1/chat/completions".into());
    r.provider = Some("openai".into());
    r.model = Some("gpt-4o".into());
    r.status = Some(if verdict == Verdict::Deny { 403 } else { 200 });
    r.usage = Some(Usage::provider(10, 5, 0, 0));
    r.latency_ms = 12;
    r
}

impl H {
    pub(crate) async fn new(db: Db) -> Self {
        Self::with_settings(db, ConsoleSettings::default()).await
    }

    pub(crate) async fn with_settings(db: Db, settings: ConsoleSettings) -> Self {
        let (store, db) = match db {
            Db::Sqlite => (
                Store::connect("sqlite::memory:").await.expect("store"),
                None,
            ),
            Db::Postgres => {
                let pg = TestDatabase::create().await;
                let store = Store::connect(pg.url()).await.expect("store");
                (store, Some(pg))
            }
        };
        let clock = Arc::new(ManualClock::at(T0));
        for (id, tenant) in [("bot", "default"), ("helper", "default"), ("rival", "acme")] {
            store
                .create_agent(&Agent::new(id, tenant, T0))
                .await
                .expect("agent");
        }
        let (_, admin_key) = store
            .create_api_key("default", Role::Admin, "ops", T0)
            .await
            .expect("key");
        let (_, viewer_key) = store
            .create_api_key("default", Role::Viewer, "read", T0)
            .await
            .expect("key");
        let (_, acme_key) = store
            .create_api_key("acme", Role::Admin, "acme", T0)
            .await
            .expect("key");
        let registry = Arc::new(Registry::new());
        let cp = ControlPlane::new(store.clone(), registry, clock.clone() as Arc<dyn Clock>);
        cp.reload_registry().await.expect("registry");
        let engine = PolicyEngine::with_sources(
            EngineConfig::default(),
            clock.clone() as Arc<dyn Clock>,
            vec![SourceFile::new("guard.rego", GUARD)],
        )
        .expect("engine");
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let admin = Admin::with_policy(
            prometheus::Registry::new(),
            Vec::new(),
            rx,
            cp,
            Some(PolicyApi::new(Arc::new(engine))),
        );
        let console = Console::new(settings, Overview::default());
        Self {
            admin,
            console,
            store,
            clock,
            admin_key,
            viewer_key,
            acme_key,
            _db: db,
        }
    }

    pub(crate) async fn insert(&self, records: Vec<AuditRecord>) {
        let rows: Vec<AuditRow> = records.into_iter().map(AuditRow::from).collect();
        self.store.insert_audit_batch(&rows).await.expect("insert");
    }

    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.unix_secs()).unwrap_or(0) * 1000
    }

    /// Sends a request built by `build` from `peer`.
    pub(crate) async fn send_from(&self, req: Request<Full<Bytes>>, peer: SocketAddr) -> Resp {
        let r: Response<Full<Bytes>> = self.console.handle(&self.admin, req, peer).await;
        let (parts, body) = r.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let mut b = Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "admin.test");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.send_from(b.body(Full::new(Bytes::new())).expect("request"), local())
            .await
    }

    /// A same-origin form POST (`fields` form-encoded).
    pub(crate) async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
    ) -> Resp {
        self.post_with(
            path,
            cookie,
            fields,
            &[
                ("origin", "http://admin.test"),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await
    }

    pub(crate) async fn post_with(
        &self,
        path: &str,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut b = Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "admin.test")
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.send_from(
            b.body(Full::new(Bytes::from(body))).expect("request"),
            local(),
        )
        .await
    }

    /// Signs in with `key`; returns the `Cookie` header value and the CSRF token.
    pub(crate) async fn sign_in(&self, key: &str) -> (String, String) {
        let r = self.post("/ui/login", None, &[("key", key)]).await;
        assert_eq!(r.status, 303, "sign-in: {}", r.body);
        let set = r.header("set-cookie");
        let cookie = set.split(';').next().unwrap_or("").to_owned();
        assert!(cookie.starts_with("portcullis_session="), "{set}");
        let page = self.get("/ui/agents", Some(&cookie)).await;
        assert_eq!(page.status, 200);
        (cookie, csrf_in(&page.body))
    }
}

/// The CSRF token in a page's forms.
pub(crate) fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    html.find(marker)
        .map(|i| &html[i + marker.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_owned()
}
