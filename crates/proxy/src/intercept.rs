//! TLS interception of CONNECT tunnels: sniff the first bytes the client sends,
//! terminate TLS with a leaf minted for the CONNECT host (or read plaintext HTTP),
//! and run every inner request through the same pipeline as absolute-form
//! requests. Anything else is spliced to the already-dialed upstream.

use crate::body::ProxyBody;
use crate::conn::{drive, Activity, ActivityIo, Ended};
use crate::forward::Tunnel;
use crate::record::Pending;
use crate::server::{exchange, max_head, Exchange, Shared};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_ca::LeafCache;
use portcullis_tls::rustls::ClientConfig;
use portcullis_tls::HostMatcher;
use portcullis_tls::{sniff, InterceptRules, Sniff, MAX_SNIFF_BYTES};
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
    /// Hosts whose intercepted tunnels may carry a protocol that is neither TLS nor HTTP, spliced
    /// to the origin (`tls.splice_unknown`; empty by default: such tunnels are closed).
    pub splice_unknown: HostMatcher,
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
            splice_unknown: HostMatcher::default(),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Lets the intercepted tunnels of `hosts` splice protocols that are neither TLS nor HTTP.
    pub fn with_splice_unknown(mut self, hosts: HostMatcher) -> Self {
        self.splice_unknown = hosts;
        self
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
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
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
                h2,
            )
            .await;
        }
        other => match route(&other, &first, icpt.splice_unknown.matches(&host)) {
            Route::Http => {
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
                    false,
                )
                .await;
            }
            Route::Splice => {
                crate::connect::splice(&shared, pending, client, upstream, first).await;
            }
            Route::Close(code) => {
                debug!(host = %host, bytes = first.len(), code, "intercepted tunnel: not TLS, not HTTP; closing");
                shared.metrics.refused.with_label_values(&[code]).inc();
                pending.finish(
                    &shared,
                    200,
                    Some(code.to_owned()),
                    first.len() as u64,
                    0,
                    false,
                );
            }
        },
    }
}

/// What an intercepted tunnel whose first bytes are not a TLS ClientHello becomes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Served by the HTTP/1 parser (which serves or refuses it): nothing is spliced past policy.
    Http,
    /// Spliced to the origin: only for hosts in `tls.splice_unknown`.
    Splice,
    /// Closed, with this error code in the tunnel's record.
    Close(&'static str),
}

/// Decides the fate of a tunnel from what the sniffer said of its `first` bytes. Anything that
/// could be HTTP goes to the real HTTP parser; TLS records other than a ClientHello are never
/// spliced (a TLS session to an intercepted host must go through the acceptor); the rest is
/// closed, unless the host is opted into splicing unknown protocols.
fn route(sniffed: &Sniff, first: &[u8], splice_unknown: bool) -> Route {
    let tls_record = first.first().is_some_and(|b| (0x14..=0x17).contains(b));
    match sniffed {
        Sniff::Http => Route::Http,
        Sniff::NeedMore if splice_unknown && !tls_record => Route::Splice,
        // Nothing decidable within `header_read_timeout`, or the client half-closed before:
        // waiting cannot bypass interception.
        Sniff::NeedMore | Sniff::TlsClientHello { .. } => Route::Close("tunnel_undecided"),
        Sniff::Other if tls_record => Route::Close("tunnel_protocol_refused"),
        Sniff::Other if splice_unknown => Route::Splice,
        Sniff::Other if could_be_http(first) => Route::Http,
        Sniff::Other => Route::Close("tunnel_protocol_refused"),
    }
}

/// Whether `first` could start an HTTP/1 request: optional empty lines, then a token byte (the
/// first byte of a method). The parser decides the rest.
fn could_be_http(first: &[u8]) -> bool {
    first
        .iter()
        .find(|b| **b != b'\r' && **b != b'\n')
        .is_none_or(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
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

/// Serves the inner HTTP/1.1 or h2 (`h2`, from ALPN; h2 with prior knowledge is detected by
/// hyper) connection of an intercepted tunnel, under the same header-read and idle timeouts
/// and framing checks as the proxy listener.
#[allow(clippy::too_many_arguments)]
async fn serve_inner<I>(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    pending: Pending,
    io: I,
    counts: Arc<(AtomicU64, AtomicU64)>,
    tunnel: Tunnel,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gauge = shared.metrics.tunnels_active.with_label_values(&["true"]);
    gauge.inc();
    let cfg = &shared.cfg;
    let activity = Arc::new(Activity::new(max_head(cfg), cfg.max_headers * 2));
    if h2 {
        activity.set_multiplexed();
    }
    let io = MultiplexDetect::new(ActivityIo::new(io, activity.clone()), activity.clone());
    let ex = Arc::new(Exchange {
        client_addr,
        activity: activity.clone(),
        tunnel: Some(Arc::new(tunnel)),
    });
    let svc = {
        let shared = shared.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let ex = ex.clone();
            async move { Ok::<Response<ProxyBody>, Infallible>(exchange(shared, None, &ex, req).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Our own watchdog (`drive`) times heads from their first byte, and idleness.
        .header_read_timeout(None)
        .max_buf_size(max_head(cfg))
        .max_headers(cfg.max_headers * 2);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let ended = drive(
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        cfg.header_read_timeout,
        cfg.idle_timeout,
        &mut shutdown,
    )
    .await;
    gauge.dec();
    let error = match ended {
        Ended::Closed(Ok(())) => None,
        Ended::Closed(Err(e)) => {
            debug!(error = %e, "intercepted tunnel ended with error");
            inner_error_code(e.as_ref())
        }
        Ended::HeaderTimeout => {
            debug!("intercepted tunnel: request head not received in time; closing");
            shared
                .metrics
                .connections_rejected
                .with_label_values(&["header_timeout"])
                .inc();
            Some("header_timeout")
        }
        Ended::Idle => {
            debug!("intercepted tunnel idle; closing");
            None
        }
    };
    let (up, down) = (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
    );
    let m = &shared.metrics.tunnel_bytes;
    m.with_label_values(&["upstream"]).inc_by(up);
    m.with_label_values(&["downstream"]).inc_by(down);
    pending.finish(
        &shared,
        200,
        error.map(str::to_owned),
        up,
        down,
        error.is_none(),
    );
}

/// The tunnel record's error for an inner connection that ended with `e`: a request hyper's
/// parser refused (answered 400/431 by hyper) is `malformed_request`; IO errors are the
/// client going away, which is how tunnels end.
fn inner_error_code(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_too_large() {
                return Some("malformed_request");
            }
            if h.is_timeout() {
                return Some("header_timeout");
            }
        }
        cur = err.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// Marks the connection's [`Activity`] multiplexed when the client opens with the h2
    /// preface (h2 with prior knowledge inside a plaintext tunnel), before hyper reads it.
    struct MultiplexDetect<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
        checked: bool,
    }
}

impl<T> MultiplexDetect<T> {
    fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            checked: false,
        }
    }
}

impl<T: AsyncRead> AsyncRead for MultiplexDetect<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if !*this.checked && buf.filled().len() > before {
            *this.checked = true;
            if buf.filled()[before..].starts_with(b"PRI * HTTP/2.0") {
                this.activity.set_multiplexed();
            }
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for MultiplexDetect<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
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
    fn tunnels_that_are_not_tls_go_to_the_parser_or_close() {
        use Route::*;
        let cases: [(&[u8], Sniff, bool, Route); 14] = [
            (b"GET / HTTP/1.1\r\n", Sniff::Http, false, Http),
            (b"\r\nGET / HTTP/1.1\r\n", Sniff::Other, false, Http),
            (b"GET\t/ HTTP/1.1\r\n", Sniff::Other, false, Http),
            (b"GET  / HTTP/1.1\r\n", Sniff::Other, false, Http),
            (b"GET /\r\n", Sniff::Other, false, Http),
            (b"SSH-2.0-x\r\n", Sniff::Other, false, Http),
            (
                b"\x00\x01",
                Sniff::Other,
                false,
                Close("tunnel_protocol_refused"),
            ),
            (
                b"\x15\x03\x03",
                Sniff::Other,
                false,
                Close("tunnel_protocol_refused"),
            ),
            (
                b"\x15\x03\x03",
                Sniff::Other,
                true,
                Close("tunnel_protocol_refused"),
            ),
            (
                b"\x16\x03",
                Sniff::NeedMore,
                false,
                Close("tunnel_undecided"),
            ),
            (
                b"\x16\x03",
                Sniff::NeedMore,
                true,
                Close("tunnel_undecided"),
            ),
            (b"", Sniff::NeedMore, false, Close("tunnel_undecided")),
            (b"\x00\x01", Sniff::Other, true, Splice),
            (b"GE", Sniff::NeedMore, true, Splice),
        ];
        for (first, sniffed, splice, want) in cases {
            assert_eq!(route(&sniffed, first, splice), want, "{first:?} {splice}");
        }
    }

    #[test]
    fn sni_comparison_ignores_case_and_trailing_dot() {
        assert!(same_host("api.example.com", "API.example.com."));
        assert!(!same_host("api.example.com", "example.com"));
    }
}
