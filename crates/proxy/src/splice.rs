//! A spliced tunnel: bytes copied both ways with half-close, recorded when it closes.

use crate::exchange::{Exchange, Outcome};
use crate::io::{totals, Tally};
use crate::state::Shared;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

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
    let (mut client, counts) = Tally::new(client);
    // copy_bidirectional propagates EOF as a write shutdown (half-close) and keeps
    // the other direction running until it ends too.
    let r = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    gauge.dec();
    let (read, down) = totals(&counts);
    let up = read + first.len() as u64;
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
