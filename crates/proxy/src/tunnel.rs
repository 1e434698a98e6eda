//! After a CONNECT's 200: the tunnel is intercepted (`intercept.rs`) or spliced
//! (`splice.rs`).

use crate::admission::Tunnel;
use crate::conn::ConnCtx;
use crate::exchange::{Exchange, Outcome};
use crate::state::Shared;
use futures_util::future::BoxFuture;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
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
            Ok(client) => {
                crate::splice::splice(&shared, ex, TokioIo::new(client), upstream, Vec::new()).await
            }
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
