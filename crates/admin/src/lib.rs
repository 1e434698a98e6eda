//! Portcullis admin listener: `/healthz`, `/readyz`, `/metrics` and the operator API
//! under `/v1`.
//!
//! Operators (and Kubernetes probes, and Prometheus) talk to this port; agents
//! never can: the proxy's SSRF guard refuses the gateway's own listeners.
//!
//! The operator API needs a [`ControlPlane`] (store + agent registry + clock), given with
//! [`Admin::with_control_plane`]; an [`Admin::new`] server answers `/v1/*` with 404.
//! Every `/v1/*` call carries `Authorization: Bearer <operator api key>` (401 otherwise);
//! a `viewer` key may only `GET` (403); an operator sees only its tenant's agents
//! (another tenant's agent is 404, like an unknown one).
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/v1/agents` | `{"agents": [agent, ...]}` (sub-agents included, with `parent`) |
//! | POST | `/v1/agents` | 201 `{"agent": agent, "secret": "..."}`; 409 duplicate, 422 invalid |
//! | GET | `/v1/agents/{id}` | agent; 404 unknown |
//! | PUT | `/v1/agents/{id}/config` | agent; 400 `No fields to update`, 422 invalid |
//! | POST | `/v1/agents/{id}/rotate` | `{"agent": agent, "secret": "..."}`, generation + 1 |
//! | POST | `/v1/agents/{id}/suspend` | agent (status `suspended`) |
//! | POST | `/v1/agents/{id}/activate` | agent (status `active`); 409 when revoked |
//! | POST | `/v1/agents/{id}/revoke` | agent (status `revoked`, permanent) |
//! | GET | `/v1/decisions` | `?agent_id,subagent,verdict,policy,provider,model,since,until,limit,offset` → `{"decisions": [record, ...], "total", "limit", "offset"}`, newest first, own tenant only; `since` defaults to 24 h ago; 422 bad/unknown parameter |
//! | GET | `/v1/decisions/{id}` | the audit record; 404 unknown or another tenant's |
//!
//! | GET | `/v1/policies` | `{"version","default","on_block","reload": {ok, at, version, policies, errors}, "policies": [{name, file, mode, mode_override, bindings, cacheable, non_deterministic}]}` |
//! | POST | `/v1/policies/validate` | `{"source", "name"?}` → `{"valid", "errors": [{file, row, col, message, stage}]}`, as a reload with the file added (or replacing `name`) would report them |
//! | POST | `/v1/policies/simulate` | request description (body included) + agent → `{decision, on_block, trace, input, version, agent, authenticates, forwarded: false, classification}`, decided on the facts the data plane would derive; 404 unknown or other tenant's agent |
//! | PUT | `/v1/policies/{name}/mode` | `{"mode": "active\|shadow\|disabled"\|null}` → the policy; 404 unknown, 422 bad mode; platform-tenant admins only; kept in the store (every replica, every restart: [`PolicyModeSync`]) |
//!
//! Validate and simulate change nothing, so viewers may call them. The policy routes
//! need a [`PolicyApi`] ([`Admin::with_policy`]); without one they answer 404
//! `policy_disabled`. See [`PolicyApi`] for tenant rules and the simulate body format.
//!
//! Errors are `{"detail","code"}` (422 adds `errors: [{field, reason}]`). Bodies over
//! 64 KiB are 413, malformed JSON 400, a wrong method on a known path 405.
//!
//! The operations behind these routes are public in [`ops`] (each checks the operator's
//! role and tenant itself); the operator console (`portcullis-console`) renders the same
//! calls as pages. Given a [`Ui`] ([`Admin::set_ui`]), the listener hands it every `/ui`
//! request and redirects `/` to `/ui/`.
//!
//! Wiring in the binary:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_admin::{serve, Admin, ControlPlane, PolicyApi};
//! use std::sync::Arc;
//! let store = portcullis_store::Store::connect("sqlite://data/portcullis.db").await?;
//! let registry = Arc::new(portcullis_identity::Registry::new());
//! let cp = ControlPlane::new(store, registry.clone(), Arc::new(portcullis_core::SystemClock));
//! let agents = cp.reload_registry().await?; // banner: agents=N
//! let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
//! tokio::spawn({
//!     let cp = cp.clone();
//!     let rx = shutdown_rx.clone();
//!     async move { cp.watch(rx).await } // CLI writes reach the registry within ~1 s
//! });
//! let engine = Arc::new(portcullis_policy::PolicyEngine::with_sources(
//!     portcullis_policy::EngineConfig::default(),
//!     Arc::new(portcullis_core::SystemClock),
//!     portcullis_policy::example_sources(),
//! )?);
//! let admin = Admin::with_policy(
//!     prometheus::Registry::new(),
//!     Vec::new(),
//!     shutdown_rx.clone(),
//!     cp,
//!     // .platform_tenant("ops"): who may set modes; .request_reader(..): the gateway's
//!     // classifier and proxy.max_inspect_body, so simulations see what the data plane sees
//!     Some(PolicyApi::new(engine)),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! tokio::spawn(serve(listener, admin, shutdown_rx));
//! # let _ = (agents, shutdown_tx);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod agents;
mod api;
mod body;
mod control;
mod credentials;
mod decisions;
mod insights;
mod operator;
pub mod ops;
mod policies;
mod policy_modes;
mod respond;
mod routes;
mod sim_request;
mod ui;

pub use body::MAX_BODY_BYTES;
pub use control::{
    ControlPlane, CredentialsApi, ReloadHook, StoreReady, SAFETY_POLL_INTERVAL, WATCH_INTERVAL,
};
pub use credentials::{unusable_agents, UnusableAgents};
pub use operator::{Operator, DEFAULT_PLATFORM_TENANT, KEY_CACHE_TTL};
pub use policies::{PolicyApi, MAX_CONCURRENT_EVALS};
pub use policy_modes::PolicyModeSync;
pub use sim_request::{
    McpReader, McpServerLookup, RequestReader, SimRequest, DEFAULT_MAX_INSPECT_BODY,
};
pub use ui::{Ui, UiFuture};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_core::{ApiError, ErrorSource, Status};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use respond::{error, json_response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// One readiness check: a name, whether it passes, and a JSON detail.
pub trait ReadyCheck: Send + Sync + 'static {
    /// Component name shown in `/readyz`.
    fn name(&self) -> &'static str;
    /// Current state: `(ready, detail)`.
    fn check(&self) -> (bool, Value);
    /// Ready but impaired (e.g. serving from the last state while a backend is away):
    /// `/readyz` stays 200 and says `"status": "degraded"`.
    fn degraded(&self) -> bool {
        false
    }
}

/// State of the admin listener.
pub struct Admin {
    registry: Registry,
    checks: Vec<Arc<dyn ReadyCheck>>,
    draining: watch::Receiver<bool>,
    control: Option<Arc<ControlPlane>>,
    policy: Option<PolicyApi>,
    ui: OnceLock<Arc<dyn Ui>>,
}

impl Admin {
    /// An admin server exposing `registry`, with readiness from `checks`.
    /// Readiness turns false once `draining` is true (shutdown in progress).
    pub fn new(
        registry: Registry,
        checks: Vec<Arc<dyn ReadyCheck>>,
        draining: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            checks,
            draining,
            control: None,
            policy: None,
            ui: OnceLock::new(),
        })
    }

    /// Like [`Admin::new`], and also serves the operator API under `/v1` on `control`.
    pub fn with_control_plane(
        registry: Registry,
        checks: Vec<Arc<dyn ReadyCheck>>,
        draining: watch::Receiver<bool>,
        control: Arc<ControlPlane>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            checks,
            draining,
            control: Some(control),
            policy: None,
            ui: OnceLock::new(),
        })
    }

    /// Like [`Admin::with_control_plane`], and also serves `/v1/policies...` on `policy`
    /// (with `None`, as with [`Admin::with_control_plane`], those paths answer 404
    /// `policy_disabled`).
    pub fn with_policy(
        registry: Registry,
        checks: Vec<Arc<dyn ReadyCheck>>,
        draining: watch::Receiver<bool>,
        control: Arc<ControlPlane>,
        policy: Option<PolicyApi>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            checks,
            draining,
            control: Some(control),
            policy,
            ui: OnceLock::new(),
        })
    }

    /// The policy API, when configured.
    pub fn policy(&self) -> Option<&PolicyApi> {
        self.policy.as_ref()
    }

    /// The operator API's control plane, when configured.
    pub fn control_plane(&self) -> Option<&Arc<ControlPlane>> {
        self.control.as_ref()
    }

    /// Serves `ui` (the operator console) under `/ui/`, with `/` redirecting there.
    /// Set once; later calls are ignored.
    pub fn set_ui(&self, ui: Arc<dyn Ui>) {
        let _ = self.ui.set(ui);
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if let Some(ui) = self.ui.get() {
            let path = req.uri().path();
            if path == "/" {
                return ui::redirect_to_ui();
            }
            if path == "/ui" || path.starts_with("/ui/") {
                return ui.handle(self, req, peer).await;
            }
        }
        if let Some(cp) = &self.control {
            let path = req.uri().path();
            if path == "/v1" || path.starts_with("/v1/") {
                return api::handle(cp, self.policy.as_ref(), req).await;
            }
        }
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match (get, req.uri().path()) {
            (true, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (true, "/readyz") => self.readyz(),
            (true, "/metrics") => self.metrics(),
            (false, "/healthz" | "/readyz" | "/metrics") => error(ApiError::new(
                Status::MethodNotAllowed,
                "method_not_allowed",
                "use GET",
                ErrorSource::Client,
            )),
            _ => error(ApiError::new(
                Status::NotFound,
                "not_found",
                "no such endpoint",
                ErrorSource::Client,
            )),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let draining = *self.draining.borrow();
        let mut ready = !draining;
        let mut degraded = false;
        let mut components = serde_json::Map::new();
        for c in &self.checks {
            let (ok, detail) = c.check();
            ready &= ok;
            let mut entry = json!({"ready": ok, "detail": detail});
            if c.degraded() {
                degraded = true;
                entry["degraded"] = json!(true);
            }
            components.insert(c.name().to_owned(), entry);
        }
        let status = match (ready, draining, degraded) {
            (true, _, true) => "degraded",
            (true, _, false) => "ready",
            (false, true, _) => "draining",
            (false, false, _) => "not_ready",
        };
        let body = json!({
            "status": status,
            "components": components,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let encoder = TextEncoder::new();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            warn!(error = %e, "metrics encoding failed");
            return error(ApiError::internal("metrics encoding failed"));
        }
        let mut r = Response::new(Full::new(Bytes::from(buf)));
        if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
            r.headers_mut().insert(CONTENT_TYPE, v);
        }
        r
    }
}

/// Registers `portcullis_build_info{version}` = 1.
pub fn register_build_info(registry: &Registry, version: &str) -> prometheus::Result<()> {
    let g = IntGaugeVec::new(
        Opts::new("portcullis_build_info", "Build information; always 1."),
        &["version"],
    )?;
    g.with_label_values(&[version]).set(1);
    registry.register(Box::new(g))
}

/// Serves the admin listener until its task is dropped or aborted. It keeps
/// answering after `shutdown` turns true so that, while the proxy drains,
/// `/readyz` reports `draining` (503) and `/metrics` stays scrapeable.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let mut draining = false;
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            r = shutdown.changed(), if !draining => {
                // Sender gone or shutdown begun: stop watching, keep serving.
                draining = true;
                if r.is_ok() {
                    debug!("admin listener serving through the drain");
                }
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.route(req, addr).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(client = %addr, error = %e, "admin connection error");
            }
        });
    }
}
