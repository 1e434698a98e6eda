//! CONNECT: decide before answering (authenticate, port, policy, resolve, SSRF
//! check, TCP connect), then 200 and splice with half-close.

use crate::body::{empty, ProxyBody};
use crate::conn::ConnCtx;
use crate::dial::{check_literal, dial};
use crate::forward::{port_not_allowed, target_error, Tunnel};
use crate::pipeline::{RequestFacts, RequestKind};
use crate::record::Pending;
use crate::server::Shared;
use crate::target::{parse_authority, Target};
use futures_util::future::BoxFuture;
use http::header::PROXY_AUTHORIZATION;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use portcullis_core::ApiError;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

/// Handles one CONNECT request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut pending = Pending::from_request(RequestKind::Connect, &req, ctx.client_addr);
    let target = match connect_target(&req) {
        Ok(t) => t,
        Err(e) => return shared.refuse(pending, e),
    };
    pending.set_target(&target);

    let principal = match shared
        .pipeline
        .authenticator
        .authenticate(req.headers().get(PROXY_AUTHORIZATION), ctx.client_addr)
    {
        Ok(p) => p,
        Err(e) => return shared.refuse(pending, e),
    };
    pending.set_principal(&principal);
    let subagent = match req.headers().get(crate::headers::SUBAGENT_HEADER) {
        None => None,
        Some(v) => match shared.pipeline.authenticator.subagent(&principal, v) {
            Ok(s) => Some(s),
            Err(e) => return shared.refuse(pending, e),
        },
    };
    pending.set_subagent(subagent.clone());

    if !shared.cfg.allowed_ports.contains(&target.port) {
        return shared.refuse(pending, port_not_allowed(target.port));
    }
    if let Err(e) = check_literal(&target, &shared.guard) {
        return shared.refuse(pending, e.to_api_error());
    }

    let host = target.host_str();
    let authz = shared.pipeline.authorizer.authorize(&RequestFacts {
        kind: RequestKind::Connect,
        principal: &principal,
        subagent: subagent.as_deref(),
        method: &Method::CONNECT,
        scheme: "https",
        host: &host,
        port: target.port,
        path: "",
        query: None,
        headers: req.headers(),
        client_addr: ctx.client_addr,
        llm: None,
        body: None,
        usage: shared.usage(&principal),
        credential: None,
    });
    let decision = Arc::new(authz.decision);
    pending.set_decision(decision.clone());
    if !decision.allowed {
        return shared.refuse(pending, shared.pipeline.authorizer.blocked(&decision));
    }
    if let Err(e) = shared.pipeline.recorder.admit().await {
        return shared.refuse(pending, e);
    }

    let upstream = match dial(&target, &shared.guard, shared.cfg.connect_timeout).await {
        Ok((s, _)) => s,
        Err(e) => {
            if let Some(kind) = e.metric_kind() {
                shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&[kind])
                    .inc();
            }
            return shared.refuse(pending, e.to_api_error());
        }
    };
    pending.set_ttfb();

    // A host some credential is bound to is intercepted too (a key cannot be added to an
    // opaque tunnel); passthrough still wins.
    let intercepted = shared.intercept.as_ref().is_some_and(|i| {
        i.rules.should_intercept(&host)
            || !i.rules.passthrough.matches(&host)
                && shared
                    .pipeline
                    .credentials
                    .as_ref()
                    .is_some_and(|c| c.intercepts(&host))
    });
    let tunnel = Tunnel {
        target,
        scheme: "https",
        principal,
        subagent,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(tunnel_task(
        shared.clone(),
        ctx,
        pending,
        on_upgrade,
        upstream,
        tunnel,
        intercepted,
    ));
    Response::new(empty())
}

/// The tunnel after the 200: intercepted or spliced. A plain function returning a boxed
/// future: the requests of an intercepted tunnel are served by the same code as the listener's,
/// so the future types would otherwise be recursive.
fn tunnel_task(
    shared: Arc<Shared>,
    ctx: &ConnCtx,
    pending: Pending,
    on_upgrade: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    tunnel: Tunnel,
    intercepted: bool,
) -> BoxFuture<'static, ()> {
    let permit = ctx.permit.clone();
    let client_addr = ctx.client_addr;
    let shutdown = ctx.shutdown.clone();
    Box::pin(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(client) if intercepted => {
                crate::intercept::run(
                    shared.clone(),
                    client_addr,
                    pending.into_tunnel(),
                    TokioIo::new(client),
                    upstream,
                    tunnel,
                    shutdown,
                )
                .await
            }
            Ok(client) => {
                splice(
                    &shared,
                    pending.into_tunnel(),
                    TokioIo::new(client),
                    upstream,
                    Vec::new(),
                )
                .await
            }
            Err(e) => {
                debug!(error = %e, "CONNECT upgrade failed");
                pending.finish(&shared, 200, Some("client_aborted".to_owned()), 0, 0, false);
            }
        }
    })
}

/// Splices the client and the upstream until both directions end. `first` are
/// bytes already read from the client (while sniffing), sent upstream first.
pub(crate) async fn splice(
    shared: &Shared,
    pending: Pending,
    client: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
    first: Vec<u8>,
) {
    let gauge = shared.metrics.tunnels_active.with_label_values(&["false"]);
    gauge.inc();
    if !first.is_empty() {
        if let Err(e) = upstream.write_all(&first).await {
            gauge.dec();
            debug!(error = %e, "tunnel upstream closed before the first bytes");
            pending.finish(shared, 200, Some("tunnel_io_error".to_owned()), 0, 0, false);
            return;
        }
    }
    // Count on the client side as bytes move: copy_bidirectional reports no
    // totals when it fails, and a reset at the end of a tunnel is common.
    let mut client = Counted::new(client);
    // copy_bidirectional propagates EOF as a write shutdown (half-close) and keeps
    // the other direction running until it ends too.
    let r = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    gauge.dec();
    let (up, down) = (client.read + first.len() as u64, client.written);
    let error = match r {
        Ok(_) => None,
        Err(e) => {
            debug!(error = %e, "tunnel ended with error");
            Some("tunnel_io_error".to_owned())
        }
    };
    let m = &shared.metrics.tunnel_bytes;
    m.with_label_values(&["upstream"]).inc_by(up);
    m.with_label_values(&["downstream"]).inc_by(down);
    let completed = error.is_none();
    debug!(
        duration_ms = pending.started().elapsed().as_millis() as u64,
        bytes_up = up,
        bytes_down = down,
        "tunnel closed"
    );
    pending.finish(shared, 200, error, up, down, completed);
}

pin_project! {
    /// IO that counts bytes read from and written to it.
    pub(crate) struct Counted<T> {
        #[pin]
        io: T,
        pub(crate) read: u64,
        pub(crate) written: u64,
    }
}

impl<T> Counted<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            read: 0,
            written: 0,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        *this.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            *this.written += n as u64;
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

fn connect_target<B>(req: &Request<B>) -> Result<Target, ApiError> {
    let uri = req.uri();
    if uri.scheme().is_some()
        || uri
            .path_and_query()
            .is_some_and(|p| !p.as_str().is_empty() && p.as_str() != "/")
    {
        return Err(ApiError::bad_request(
            "bad_target",
            "CONNECT target must be host:port",
        ));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| ApiError::bad_request("bad_target", "CONNECT target must be host:port"))?;
    parse_authority(auth.as_str()).map_err(target_error)
}
