//! After a CONNECT's 200: the tunnel is intercepted (`intercept.rs`) or spliced here, bytes
//! copied both ways with half-close, and recorded when it closes.

use crate::admission::Tunnel;
use crate::conn::ConnCtx;
use crate::exchange::{Exchange, Outcome};
use crate::io::Counted;
use crate::state::Shared;
use futures_util::future::BoxFuture;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

/// The tunnel after the 200: intercepted or spliced. A plain function returning a boxed
/// future: the requests of an intercepted tunnel are served by the same code as the listener's,
/// so the future types would otherwise be recursive.
pub(crate) fn after_connect(
    shared: Arc<Shared>,
    ctx: &ConnCtx,
    ex: Exchange,
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
                let client = TokioIo::new(client);
                crate::intercept::run(shared, client_addr, ex, client, upstream, tunnel, shutdown)
                    .await
            }
            Ok(client) => splice(&shared, ex, TokioIo::new(client), upstream, Vec::new()).await,
            Err(e) => {
                debug!(error = %e, "CONNECT upgrade failed");
                ex.finish(Outcome {
                    status: 200,
                    error: Some("client_aborted"),
                    ..Outcome::default()
                });
            }
        }
    })
}

/// Splices the client and the upstream until both directions end. `first` are
/// bytes already read from the client (while sniffing), sent upstream first.
pub(crate) async fn splice(
    shared: &Shared,
    ex: Exchange,
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
            ex.finish(Outcome {
                status: 200,
                error: Some("tunnel_io_error"),
                ..Outcome::default()
            });
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
            Some("tunnel_io_error")
        }
    };
    let m = &shared.metrics.tunnel_bytes;
    m.with_label_values(&["upstream"]).inc_by(up);
    m.with_label_values(&["downstream"]).inc_by(down);
    debug!(
        duration_ms = ex.started().elapsed().as_millis() as u64,
        bytes_up = up,
        bytes_down = down,
        "tunnel closed"
    );
    ex.finish(Outcome {
        status: 200,
        error,
        bytes_in: up,
        bytes_out: down,
        usage: None,
    });
}
