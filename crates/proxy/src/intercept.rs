//! TLS interception of CONNECT tunnels: sniff the first bytes the client sends,
//! terminate TLS with a leaf minted for the CONNECT host (or read plaintext HTTP),
//! and run every inner request through the same pipeline as absolute-form
//! requests. Anything else is spliced to the already-dialed upstream.

use crate::body::ProxyBody;
use crate::forward::{process, Tunnel};
use crate::record::Pending;
use crate::server::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_tls::rustls::ClientConfig;
use portcullis_tls::{sniff, InterceptRules, LeafCache, Sniff, MAX_SNIFF_BYTES};
use std::collections::HashSet;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Most hosts remembered for "client rejected our certificate" warnings.
const MAX_WARNED_HOSTS: usize = 1024;

/// Interception settings and state shared by every tunnel.
pub struct Intercept {
    /// Minted leaf configurations per host.
    pub cache: Arc<LeafCache>,
    /// Which tunnels are intercepted.
    pub rules: InterceptRules,
    /// Client configuration for upstream `https` (roots + `tls.upstream_ca`).
    pub upstream_tls: Arc<ClientConfig>,
    warned: Mutex<HashSet<String>>,
}

impl Intercept {
    /// Interception with `cache`, `rules` and the upstream client configuration.
    pub fn new(
        cache: Arc<LeafCache>,
        rules: InterceptRules,
        upstream_tls: Arc<ClientConfig>,
    ) -> Self {
        Self {
            cache,
            rules,
            upstream_tls,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Whether this is the first handshake failure seen for `host` (warn once per host).
    fn first_failure(&self, host: &str) -> bool {
        let Ok(mut w) = self.warned.lock() else {
            return false;
        };
        if w.contains(host) {
            return false;
        }
        if w.len() >= MAX_WARNED_HOSTS {
            w.clear();
        }
        w.insert(host.to_owned())
    }
}

/// Runs an intercepted tunnel after the 200: sniff, then TLS-terminate and serve,
/// serve plaintext HTTP, or splice what is neither.
pub(crate) async fn run(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    pending: Pending,
    client: TokioIo<hyper::upgrade::Upgraded>,
    upstream: TcpStream,
    tunnel: Tunnel,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(icpt) = shared.intercept.as_ref() else {
        crate::connect::splice(&shared, pending, client, upstream, Vec::new()).await;
        return;
    };
    let mut client = client;
    let mut first = Vec::with_capacity(1024);
    let verdict = tokio::time::timeout(
        shared.cfg.header_read_timeout,
        read_sniff(&mut client, &mut first),
    )
    .await;
    let kind = match verdict {
        Ok(Ok(_)) if first.is_empty() => {
            // Closed by the client before sending anything.
            pending.finish(&shared, 200, None, 0, 0, true);
            return;
        }
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel closed before its first bytes");
            pending.finish(&shared, 200, Some("client_aborted".to_owned()), 0, 0, false);
            return;
        }
        // Undecided in time. Splicing now would let a client bypass interception by
        // waiting (or by dribbling a ClientHello): fail closed.
        Err(_) => Sniff::NeedMore,
    };
    let host = tunnel.target.host_str();
    match kind {
        Sniff::TlsClientHello { sni, .. } => {
            if let Some(sni) = sni.filter(|s| !same_host(s, &host)) {
                debug!(connect = %host, sni = %sni, "SNI differs from the CONNECT host; closing");
                shared
                    .metrics
                    .refused
                    .with_label_values(&["sni_mismatch"])
                    .inc();
                pending.finish(&shared, 403, Some("sni_mismatch".to_owned()), 0, 0, false);
                return;
            }
            // The dialed connection proved the destination reachable; inner requests
            // go through the pooled client.
            drop(upstream);
            let config = match icpt.cache.server_config(&host).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(host = %host, error = %e, "could not mint a certificate");
                    pending.finish(
                        &shared,
                        200,
                        Some("cert_mint_failed".to_owned()),
                        0,
                        0,
                        false,
                    );
                    return;
                }
            };
            let (io, counts) = Tally::new(Prefixed::new(first, client));
            let tls = match TlsAcceptor::from(config).accept(io).await {
                Ok(t) => t,
                Err(e) => {
                    shared
                        .metrics
                        .tls_handshake_failures
                        .with_label_values(&["client"])
                        .inc();
                    if icpt.first_failure(&host) {
                        warn!(host = %host, error = %e, "client rejected the gateway certificate (does it trust the gateway CA, or pin certificates? consider tls.passthrough)");
                    } else {
                        debug!(host = %host, error = %e, "client TLS handshake failed");
                    }
                    pending.finish(
                        &shared,
                        200,
                        Some("client_tls_handshake_failed".to_owned()),
                        0,
                        0,
                        false,
                    );
                    return;
                }
            };
            let mut pending = pending;
            pending.set_tls_intercepted();
            serve_inner(
                shared,
                client_addr,
                pending,
                tls,
                counts,
                Tunnel {
                    scheme: "https",
                    ..tunnel
                },
                shutdown,
            )
            .await;
        }
        Sniff::Http => {
            drop(upstream);
            let (io, counts) = Tally::new(Prefixed::new(first, client));
            serve_inner(
                shared,
                client_addr,
                pending,
                io,
                counts,
                Tunnel {
                    scheme: "http",
                    ..tunnel
                },
                shutdown,
            )
            .await;
        }
        // TLS records other than a ClientHello (an alert first, say) are not spliced
        // either: a TLS session to an intercepted host must go through the acceptor.
        Sniff::Other if !first.first().is_some_and(|b| (0x14..=0x17).contains(b)) => {
            crate::connect::splice(&shared, pending, client, upstream, first).await;
        }
        Sniff::Other | Sniff::NeedMore => {
            debug!(host = %host, bytes = first.len(), "intercepted tunnel undecided; closing");
            shared
                .metrics
                .refused
                .with_label_values(&["tunnel_undecided"])
                .inc();
            pending.finish(
                &shared,
                200,
                Some("tunnel_undecided".to_owned()),
                0,
                0,
                false,
            );
        }
    }
}

/// Reads until the sniffer decides. [`Sniff::NeedMore`] when it could not (end of
/// stream or [`MAX_SNIFF_BYTES`] first); an empty `buf` then means the client
/// closed without sending anything.
async fn read_sniff<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Sniff> {
    let mut chunk = [0u8; 2048];
    loop {
        let room = MAX_SNIFF_BYTES.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(Sniff::NeedMore);
        }
        let n = r.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(Sniff::NeedMore);
        }
        buf.extend_from_slice(&chunk[..n]);
        match sniff(buf) {
            Sniff::NeedMore => continue,
            s => return Ok(s),
        }
    }
}

fn same_host(sni: &str, host: &str) -> bool {
    let h = host.trim_end_matches('.');
    sni.trim_end_matches('.').eq_ignore_ascii_case(h)
}

/// Serves the inner HTTP/1.1 or h2 connection of an intercepted tunnel.
async fn serve_inner<I>(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    pending: Pending,
    io: I,
    counts: Arc<(AtomicU64, AtomicU64)>,
    tunnel: Tunnel,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gauge = shared.metrics.tunnels_active.with_label_values(&["true"]);
    gauge.inc();
    let tunnel = Arc::new(tunnel);
    let svc = {
        let shared = shared.clone();
        let tunnel = tunnel.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let tunnel = tunnel.clone();
            async move {
                Ok::<Response<ProxyBody>, Infallible>(
                    process(&shared, client_addr, req, Some(&tunnel)).await,
                )
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(shared.cfg.idle_timeout)
        .max_buf_size((shared.cfg.max_header_bytes * 2).max(8192));
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // Idle tunnels (no byte either way for `idle_timeout`) are shut down gracefully:
    // requests still in flight finish, then the connection closes.
    let idle = shared.cfg.idle_timeout;
    let total = || counts.0.load(Ordering::Relaxed) + counts.1.load(Ordering::Relaxed);
    let mut seen = total();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let r = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            // Gateway shutdown: finish in-flight requests, then close.
            _ = shutdown.changed(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep(idle), if !draining => {
                let now = total();
                if now == seen {
                    debug!("intercepted tunnel idle; closing");
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                seen = now;
            }
        }
    };
    gauge.dec();
    if let Err(e) = &r {
        debug!(error = %e, "intercepted tunnel ended with error");
    }
    let (up, down) = (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
    );
    let m = &shared.metrics.tunnel_bytes;
    m.with_label_values(&["upstream"]).inc_by(up);
    m.with_label_values(&["downstream"]).inc_by(down);
    pending.finish(&shared, 200, None, up, down, true);
}

/// IO counting bytes read from and written to it into shared counters, so the
/// counts survive the IO being moved into a connection.
pub(crate) struct Tally<T> {
    inner: T,
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl<T> Tally<T> {
    fn new(inner: T) -> (Self, Arc<(AtomicU64, AtomicU64)>) {
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        (
            Self {
                inner,
                counts: counts.clone(),
            },
            counts,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tally<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counts.0.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tally<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.counts.1.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// IO that yields `prefix` (bytes already read while sniffing) before the rest.
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn prefixed_replays_the_sniffed_bytes_then_the_rest() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello".to_vec(), b);
        let mut out = Vec::new();
        p.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn sniffing_reads_until_it_can_decide() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            a.write_all(b"GE").await.unwrap();
            a.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            a
        });
        let mut buf = Vec::new();
        let s = read_sniff(&mut b, &mut buf).await.unwrap();
        assert_eq!(s, Sniff::Http);
        assert!(buf.starts_with(b"GE"));
        drop(writer.await.unwrap());

        // End of stream before a decision: undecided (the tunnel is closed).
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let mut buf = Vec::new();
        assert_eq!(read_sniff(&mut b, &mut buf).await.unwrap(), Sniff::NeedMore);
        assert!(buf.is_empty());
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0x16, 0x03]).await.unwrap();
        drop(a);
        let mut buf = Vec::new();
        assert_eq!(read_sniff(&mut b, &mut buf).await.unwrap(), Sniff::NeedMore);
        assert_eq!(buf, [0x16, 0x03]);

        // Binary garbage: Other at once.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0u8, 1, 2, 3]).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_sniff(&mut b, &mut buf).await.unwrap(), Sniff::Other);
        assert_eq!(buf, [0, 1, 2, 3]);
    }

    #[test]
    fn sni_comparison_ignores_case_and_trailing_dot() {
        assert!(same_host("api.example.com", "API.example.com."));
        assert!(!same_host("api.example.com", "example.com"));
    }
}
