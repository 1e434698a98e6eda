//! The proxy listener: accept loop, connection limit, per-connection serving,
//! request routing and graceful shutdown.

use crate::body::{full, Metered, ProxyBody};
use crate::conn::{drive, Activity, ActivityIo, ConnCtx, Ended, InFlight};
use crate::framing::FramingFlaw;
use crate::metrics::ProxyMetrics;
use crate::pipeline::{LocalRequest, Pipeline, MAX_LOCAL_BODY};
use crate::record::Pending;
use crate::respond::{error_response, rate_limited_response};
use crate::ssrf::Guard;
use crate::upstream::{self, UpstreamClient};
use crate::{connect, forward};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_config::ProxyConfig;
use portcullis_core::{ApiError, Status};
use portcullis_limits::{Refusal, UsageSnapshot};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

/// Everything requests share.
pub struct Shared {
    /// `[proxy]` settings.
    pub cfg: ProxyConfig,
    /// SSRF guard.
    pub guard: Arc<Guard>,
    /// Pooled upstream client.
    pub client: UpstreamClient,
    /// Phase implementations.
    pub pipeline: Pipeline,
    /// Metrics.
    pub metrics: ProxyMetrics,
    /// TLS interception of CONNECT tunnels; `None`: every tunnel is spliced.
    pub intercept: Option<crate::intercept::Intercept>,
}

impl Shared {
    /// Builds the shared state without TLS interception. `own_listeners` are
    /// refused as destinations.
    pub fn new(
        cfg: ProxyConfig,
        own_listeners: Vec<SocketAddr>,
        pipeline: Pipeline,
        metrics: ProxyMetrics,
    ) -> Arc<Self> {
        Self::with_intercept(cfg, own_listeners, pipeline, metrics, None)
    }

    /// Builds the shared state; with `intercept`, CONNECT tunnels to the hosts its
    /// rules select are intercepted and the upstream client speaks `https`.
    pub fn with_intercept(
        cfg: ProxyConfig,
        own_listeners: Vec<SocketAddr>,
        pipeline: Pipeline,
        metrics: ProxyMetrics,
        intercept: Option<crate::intercept::Intercept>,
    ) -> Arc<Self> {
        let guard = Arc::new(Guard::new(cfg.allow_private.clone(), own_listeners));
        let client = upstream::client(
            guard.clone(),
            cfg.connect_timeout,
            cfg.upstream_idle_timeout,
            cfg.upstream_pool_max_idle,
            intercept.as_ref().map(|i| i.upstream_tls.clone()),
        );
        Arc::new(Self {
            cfg,
            guard,
            client,
            pipeline,
            metrics,
            intercept,
        })
    }

    /// Answers `err` and records the refusal.
    pub(crate) fn refuse(&self, pending: Pending, err: ApiError) -> Response<ProxyBody> {
        self.refuse_with(pending, err, None)
    }

    /// Answers `err` (with a provider error envelope for recognised LLM APIs, so SDK
    /// exceptions show our reason) and records the refusal.
    pub(crate) fn refuse_with(
        &self,
        pending: Pending,
        err: ApiError,
        envelope: Option<portcullis_core::ErrorEnvelope>,
    ) -> Response<ProxyBody> {
        self.metrics.refused.with_label_values(&[&err.code]).inc();
        let resp = error_response(&err, envelope);
        pending.finish_now(self, err.status_code(), Some(err.code.into_owned()));
        resp
    }

    /// The agent's usage counters for the policy input (zero without limits).
    pub(crate) fn usage(&self, principal: &portcullis_core::Principal) -> UsageSnapshot {
        self.pipeline
            .limits
            .as_ref()
            .map(|l| l.usage(principal))
            .unwrap_or_default()
    }

    /// Answers 429 for a request a rate limit or token budget refused, counts it and
    /// records it (verdict `rate_limited`).
    pub(crate) fn rate_limited(
        &self,
        mut pending: Pending,
        agent: &str,
        refusal: &Refusal,
        envelope: Option<portcullis_core::ErrorEnvelope>,
    ) -> Response<ProxyBody> {
        self.metrics
            .rate_limited
            .with_label_values(&[agent, refusal.limit.as_str()])
            .inc();
        self.metrics
            .refused
            .with_label_values(&["rate_limited"])
            .inc();
        pending.set_rate_limited(refusal.detail());
        pending.finish_now(self, 429, Some("rate_limited".to_owned()));
        rate_limited_response(refusal, envelope)
    }

    /// Answers a block with a provider-shaped stub (`on_block = "stub"`), 200 with
    /// `X-Portcullis-Blocked: true`, and records it as denied.
    pub(crate) fn stub(
        &self,
        pending: Pending,
        decision: &portcullis_core::Decision,
        stub: crate::pipeline::Stub,
    ) -> Response<ProxyBody> {
        let len = stub.body.len() as u64;
        let mut r = Response::new(full(stub.body));
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(stub.content_type),
        );
        h.insert(
            "x-portcullis-blocked",
            http::HeaderValue::from_static("true"),
        );
        if let Ok(v) = http::HeaderValue::from_str(&decision.decision_id) {
            h.insert(crate::respond::X_PORTCULLIS_DECISION_ID, v);
        }
        pending.finish(self, 200, Some("policy_denied".to_owned()), 0, len, true);
        r
    }
}

/// Serves the proxy listener until `shutdown` turns true, then drains
/// connections and tunnels for up to `shutdown_grace`. Returns once drained.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = shared.cfg.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared
                .metrics
                .connections_rejected
                .with_label_values(&["max_connections"])
                .inc();
            tokio::spawn(reject_overloaded(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ConnCtx {
            client_addr: addr,
            activity: Arc::new(Activity::new(
                max_head(&shared.cfg),
                shared.cfg.max_headers * 2,
            )),
            permit: Arc::new(permit),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(serve_connection(
            stream,
            ctx,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    let grace = shared.cfg.shutdown_grace;
    info!(
        grace_ms = grace.as_millis() as u64,
        "proxy draining connections"
    );
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(grace, permits.acquire_many(all)).await;
    match drained {
        Ok(_) => info!("proxy drained"),
        Err(_) => warn!(
            open = max - permits.available_permits(),
            "shutdown grace elapsed; closing remaining connections"
        ),
    }
}

async fn reject_overloaded(mut stream: TcpStream) {
    let body = ApiError::new(
        Status::ServiceUnavailable,
        "too_many_connections",
        "the gateway is at its connection limit; retry later",
        portcullis_core::ErrorSource::Internal,
    )
    .to_body(None);
    let head = format!(
        "HTTP/1.1 503 Too Many Connections\r\ncontent-type: application/json\r\nx-portcullis-error: too_many_connections\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    ctx: ConnCtx,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = shared.metrics.clone();
    metrics.connections_active.inc();
    let ctx = Arc::new(ctx);
    let io = TokioIo::new(ActivityIo::new(stream, ctx.activity.clone()));
    let svc = {
        let ctx = ctx.clone();
        let shared = shared.clone();
        service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    let cfg = &shared.cfg;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        // Our own watchdog (`drive`) times heads from their first byte, and idleness; hyper's
        // would also cut idle keep-alive connections after 30 s.
        .header_read_timeout(None)
        .max_buf_size(max_head(cfg))
        .max_headers(cfg.max_headers * 2);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let ended = drive(
        conn,
        |c| c.graceful_shutdown(),
        &ctx.activity,
        cfg.header_read_timeout,
        cfg.idle_timeout,
        &mut shutdown,
    )
    .await;
    match ended {
        Ended::Closed(Err(e)) => {
            debug!(client = %ctx.client_addr, error = %e, "connection ended with error")
        }
        Ended::HeaderTimeout => {
            debug!(client = %ctx.client_addr, "request head not received in time; closing");
            metrics
                .connections_rejected
                .with_label_values(&["header_timeout"])
                .inc();
        }
        Ended::Idle => debug!(client = %ctx.client_addr, "idle connection closed"),
        Ended::Closed(Ok(())) => {}
    }
    metrics.connections_active.dec();
}

/// hyper's head buffer: twice our limits, so heads slightly over them get our JSON 431.
pub(crate) fn max_head(cfg: &ProxyConfig) -> usize {
    (cfg.max_header_bytes * 2).max(8192)
}

/// What one HTTP/1 or h2 connection's requests share: its activity (timeouts, framing scan)
/// and, inside an intercepted tunnel, the tunnel.
pub(crate) struct Exchange {
    pub(crate) client_addr: SocketAddr,
    pub(crate) activity: Arc<Activity>,
    pub(crate) tunnel: Option<Arc<crate::forward::Tunnel>>,
}

/// Serves one request of a connection: refuses a head whose framing was ambiguous on the
/// wire, routes the rest, and keeps the request in flight until its response body ends.
pub(crate) async fn exchange(
    shared: Arc<Shared>,
    ctx: Option<Arc<ConnCtx>>,
    ex: &Exchange,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let in_flight = InFlight::start(ex.activity.clone());
    let is_connect = req.method() == Method::CONNECT;
    let upgrade_asked = is_connect || req.headers().contains_key(http::header::UPGRADE);
    let resp = if let Some(flaw) = ex.activity.take_framing_flaw(in_flight.number()) {
        let mut pending =
            Pending::from_request(crate::pipeline::RequestKind::Http, &req, ex.client_addr);
        if let Some(t) = &ex.tunnel {
            pending.set_tunnel(t);
        }
        let err = match flaw {
            FramingFlaw::ContentLengthWithTransferEncoding => ApiError::bad_request(
                "ambiguous_framing",
                "both Content-Length and Transfer-Encoding are present",
            ),
            FramingFlaw::DuplicateContentLength => {
                ApiError::bad_request("bad_content_length", "multiple Content-Length headers")
            }
        };
        // The framing of whatever follows cannot be trusted: answer and close.
        let mut r = shared.refuse(pending, err);
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        r
    } else {
        match (&ex.tunnel, &ctx) {
            (Some(t), _) => forward::process(&shared, ex.client_addr, req, Some(t)).await,
            (None, Some(ctx)) if is_connect => connect::handle(&shared, ctx, req).await,
            (None, Some(ctx)) if req.uri().scheme().is_some() => {
                forward::handle(&shared, ctx, req).await
            }
            (None, Some(ctx)) => local(&shared, ctx, req).await,
            (None, None) => forward::process(&shared, ex.client_addr, req, None).await,
        }
    };
    if upgrade_asked {
        let upgraded = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
            || (is_connect && ex.tunnel.is_none() && resp.status().is_success());
        ex.activity.upgrade_answered(upgraded);
    }
    // The request stays in flight until its response body is done.
    let (parts, body) = resp.into_parts();
    let body = Metered::new(body, Box::new(move |_, _| drop(in_flight))).boxed();
    Response::from_parts(parts, body)
}

async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let ex = Exchange {
        client_addr: ctx.client_addr,
        activity: ctx.activity.clone(),
        tunnel: None,
    };
    Ok(exchange(shared, Some(ctx), &ex, req).await)
}

/// Origin-form requests addressed to the gateway itself.
async fn local(shared: &Shared, ctx: &ConnCtx, req: Request<Incoming>) -> Response<ProxyBody> {
    let pending = Pending::from_request(crate::pipeline::RequestKind::Http, &req, ctx.client_addr);
    if let (&Method::GET | &Method::HEAD, "/healthz") = (req.method(), req.uri().path()) {
        return json(200, &[], &serde_json::json!({"status": "ok"}));
    }
    let Some(svc) = shared
        .pipeline
        .local
        .as_ref()
        .filter(|s| s.serves(req.method(), req.uri().path()))
    else {
        return shared.refuse(
            pending,
            ApiError::new(
                Status::NotFound,
                "not_found",
                "this is a proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
                portcullis_core::ErrorSource::Client,
            ),
        );
    };
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_LOCAL_BODY);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return shared.refuse(
                pending,
                ApiError::new(
                    Status::PayloadTooLarge,
                    "body_too_large",
                    format!("request body exceeds {MAX_LOCAL_BODY} bytes"),
                    portcullis_core::ErrorSource::Client,
                ),
            )
        }
    };
    let r = svc.handle(LocalRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        client_addr: ctx.client_addr,
    });
    json(r.status, &r.headers, &r.body)
}

fn json(
    status: u16,
    headers: &[(&'static str, String)],
    body: &serde_json::Value,
) -> Response<ProxyBody> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(full(bytes));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for (k, v) in headers {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    r
}
