//! Portcullis admin listener: `/healthz`, `/readyz` and `/metrics`.
//!
//! Operators (and Kubernetes probes, and Prometheus) talk to this port; agents
//! never can: the proxy's SSRF guard refuses the gateway's own listeners.
#![warn(missing_docs)]

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_core::{ApiError, ErrorSource};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
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
}

/// State of the admin listener.
pub struct Admin {
    registry: Registry,
    checks: Vec<Arc<dyn ReadyCheck>>,
    draining: watch::Receiver<bool>,
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
        })
    }

    fn route(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match (get, req.uri().path()) {
            (true, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (true, "/readyz") => self.readyz(),
            (true, "/metrics") => self.metrics(),
            (false, "/healthz" | "/readyz" | "/metrics") => error(ApiError::new(
                405,
                "method_not_allowed",
                "use GET",
                ErrorSource::Client,
            )),
            _ => error(ApiError::new(
                404,
                "not_found",
                "no such endpoint",
                ErrorSource::Client,
            )),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        let draining = *self.draining.borrow();
        let mut ready = !draining;
        let mut components = serde_json::Map::new();
        for c in &self.checks {
            let (ok, detail) = c.check();
            ready &= ok;
            components.insert(c.name().to_owned(), json!({"ready": ok, "detail": detail}));
        }
        let body = json!({
            "status": if ready { "ready" } else if draining { "draining" } else { "not_ready" },
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

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(e: ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.to_json(None))
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
                let r = admin.route(&req);
                async move { Ok::<_, Infallible>(r) }
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
