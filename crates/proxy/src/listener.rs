//! The proxy listener: accept loop, connection limit, per-connection serving under the
//! header-read and idle timeouts, request routing and graceful shutdown.

use crate::body::ProxyBody;
use crate::conn::{drive, max_head, Activity, ActivityIo, ConnCtx, Ended};
use crate::refusal::Refusal;
use crate::respond::refusal_response;
use crate::state::Shared;
use crate::{connect, dispatch, forward, local};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

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

/// Answers a connection over `max_connections` with 503 and closes it. No request is read, so
/// there is no exchange to record; the rejection is counted.
async fn reject_overloaded(mut stream: TcpStream) {
    let bytes = crate::respond::to_wire(refusal_response(&Refusal::Overloaded, None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&bytes).await?;
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

/// Routes one request of a listener connection: CONNECT, absolute-form, or addressed to the
/// gateway itself.
async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let client_addr = ctx.client_addr;
    let route = |req: Request<Incoming>| async {
        if req.method() == Method::CONNECT {
            connect::handle(&shared, &ctx, req).await
        } else if req.uri().scheme().is_some() {
            forward::absolute(&shared, client_addr, req).await
        } else {
            local::handle(&shared, client_addr, req).await
        }
    };
    Ok(dispatch::request(&shared, &ctx.activity, client_addr, None, req, route).await)
}
