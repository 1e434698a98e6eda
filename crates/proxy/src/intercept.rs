//! TLS interception of CONNECT tunnels: sniff the first bytes the client sends,
//! terminate TLS with a leaf minted for the CONNECT host (or read plaintext HTTP),
//! and serve every inner request like an absolute-form one (the same admission sequence,
//! with the tunnel's agent and destination). Nothing is spliced past policy unless the host
//! is opted into splicing unknown protocols.

use crate::admission::Tunnel;
use crate::body::ProxyBody;
use crate::conn::max_head;
use crate::conn::{drive, Activity, ActivityIo, Ended};
use crate::exchange::{Exchange, Outcome};
use crate::io::{totals, Counts, MultiplexDetect, Prefixed, Tally};
use crate::refusal::Refusal;
use crate::state::{Intercept, Shared};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_tls::{sniff, Sniff, MAX_SNIFF_BYTES};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

type Client = TokioIo<Upgraded>;

/// Runs an intercepted tunnel after the 200: sniff, then TLS-terminate and serve, serve
/// plaintext HTTP, splice (opted-in hosts only), or close.
pub(crate) async fn run(
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    ex: Exchange,
    mut client: Client,
    upstream: TcpStream,
    tunnel: Tunnel,
    shutdown: watch::Receiver<bool>,
) {
    let Some(icpt) = shared.intercept.as_ref() else {
        crate::splice::splice(&shared, ex, client, upstream, Vec::new()).await;
        return;
    };
    let mut first = Vec::with_capacity(1024);
    let sniffed = tokio::time::timeout(
        shared.cfg.header_read_timeout,
        read_sniff(&mut client, &mut first),
    )
    .await;
    let sniffed = match sniffed {
        Ok(Ok(_)) if first.is_empty() => {
            // Closed by the client before sending anything.
            return ex.finish(Outcome {
                status: 200,
                ..Outcome::default()
            });
        }
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel closed before its first bytes");
            return ex.finish(Outcome {
                status: 200,
                error: Some("client_aborted"),
                ..Outcome::default()
            });
        }
        // Undecided in time. Splicing now would let a client bypass interception by
        // waiting (or by dribbling a ClientHello): fail closed.
        Err(_) => Sniff::NeedMore,
    };
    let inner = Inner {
        shared: shared.clone(),
        client_addr,
        tunnel,
        shutdown,
    };
    let host = inner.tunnel.target.host_str();
    if let Sniff::TlsClientHello { sni, .. } = &sniffed {
        if let Some(sni) = sni.as_ref().filter(|s| !same_host(s, &host)) {
            debug!(connect = %host, sni = %sni, "SNI differs from the CONNECT host; closing");
            return ex.close_refused(&Refusal::SniMismatch);
        }
        drop(upstream);
        return inner.terminate(icpt, ex, client, first).await;
    }
    match route(&sniffed, &first, icpt.splice_unknown.matches(&host)) {
        Route::Http => {
            // The dialed connection proved the destination reachable; inner requests go
            // through the pooled client.
            drop(upstream);
            let (io, counts) = Tally::new(Prefixed::new(first, client));
            inner.serve(ex, io, counts, "http", false).await;
        }
        Route::Splice => crate::splice::splice(&shared, ex, client, upstream, first).await,
        Route::Close { undecided } => {
            debug!(host = %host, bytes = first.len(), undecided, "intercepted tunnel: not TLS, not HTTP; closing");
            ex.close_refused(&Refusal::TunnelProtocol { undecided });
        }
    }
}

/// An intercepted tunnel whose inner connection is being served.
struct Inner {
    shared: Arc<Shared>,
    client_addr: SocketAddr,
    tunnel: Tunnel,
    shutdown: watch::Receiver<bool>,
}

impl Inner {
    /// Terminates the client's TLS with a leaf for the CONNECT host, then serves it.
    async fn terminate(self, icpt: &Intercept, mut ex: Exchange, client: Client, first: Vec<u8>) {
        let host = self.tunnel.target.host_str();
        let config = match icpt.leaves.server_config(&host).await {
            Ok(c) => c,
            Err(e) => {
                warn!(host = %host, error = %e, "could not mint a certificate");
                return ex.finish(Outcome {
                    status: 200,
                    error: Some("cert_mint_failed"),
                    ..Outcome::default()
                });
            }
        };
        let (io, counts) = Tally::new(Prefixed::new(first, client));
        let tls = match TlsAcceptor::from(config).accept(io).await {
            Ok(t) => t,
            Err(e) => {
                self.shared
                    .metrics
                    .tls_handshake_failures
                    .with_label_values(&["client"])
                    .inc();
                if icpt.first_failure(&host) {
                    warn!(host = %host, error = %e, "client rejected the gateway certificate (does it trust the gateway CA, or pin certificates? consider tls.passthrough)");
                } else {
                    debug!(host = %host, error = %e, "client TLS handshake failed");
                }
                return ex.finish(Outcome {
                    status: 200,
                    error: Some("client_tls_handshake_failed"),
                    ..Outcome::default()
                });
            }
        };
        ex.set_tls_intercepted();
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve(ex, tls, counts, "https", h2).await;
    }

    /// Serves the inner HTTP/1.1 or h2 connection (`h2` from ALPN; h2 with prior knowledge
    /// is detected from its preface), under the same header-read and idle timeouts and framing
    /// checks as the proxy listener; records the tunnel when it ends.
    async fn serve<I>(mut self, ex: Exchange, io: I, counts: Counts, scheme: &'static str, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let gauge = shared.metrics.tunnels_active.with_label_values(&["true"]);
        gauge.inc();
        let cfg = &shared.cfg;
        let activity = Arc::new(Activity::new(max_head(cfg), cfg.max_headers * 2));
        if h2 {
            activity.set_multiplexed();
        }
        let io = MultiplexDetect::new(ActivityIo::new(io, activity.clone()), activity.clone());
        self.tunnel.scheme = scheme;
        let svc = inner_service(
            shared.clone(),
            activity.clone(),
            self.client_addr,
            self.tunnel,
        );
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
            &mut self.shutdown,
        )
        .await;
        gauge.dec();
        let error = ended_error(&shared, ended);
        let (up, down) = totals(&counts);
        let m = &shared.metrics.tunnel_bytes;
        m.with_label_values(&["upstream"]).inc_by(up);
        m.with_label_values(&["downstream"]).inc_by(down);
        ex.finish(Outcome {
            status: 200,
            error,
            bytes_in: up,
            bytes_out: down,
            usage: None,
        });
    }
}

/// The service answering an intercepted tunnel's requests: each one is an exchange of its own,
/// admitted with the tunnel's agent and destination.
fn inner_service(
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    client_addr: SocketAddr,
    tunnel: Tunnel,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone {
    let tunnel = Arc::new(tunnel);
    service_fn(move |req: Request<Incoming>| {
        let (shared, activity, tunnel) = (shared.clone(), activity.clone(), tunnel.clone());
        async move {
            let route = |req| crate::forward::inner(&shared, client_addr, &tunnel, req);
            Ok(crate::dispatch::request(
                &shared,
                &activity,
                client_addr,
                Some(&tunnel.principal),
                req,
                route,
            )
            .await)
        }
    })
}

/// The tunnel record's error for an inner connection that ended as `ended`.
fn ended_error(
    shared: &Shared,
    ended: Ended<Box<dyn std::error::Error + Send + Sync>>,
) -> Option<&'static str> {
    match ended {
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
    }
}

/// What an intercepted tunnel whose first bytes are not a TLS ClientHello becomes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Served by the HTTP/1 parser (which serves or refuses it): nothing is spliced past policy.
    Http,
    /// Spliced to the origin: only for hosts in `tls.splice_unknown`.
    Splice,
    /// Closed: nothing decidable arrived in time (`undecided`), or a protocol refused.
    Close {
        /// Nothing decidable arrived within `header_read_timeout`.
        undecided: bool,
    },
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
        Sniff::NeedMore | Sniff::TlsClientHello { .. } => Route::Close { undecided: true },
        Sniff::Other if tls_record => Route::Close { undecided: false },
        Sniff::Other if splice_unknown => Route::Splice,
        Sniff::Other if could_be_http(first) => Route::Http,
        Sniff::Other => Route::Close { undecided: false },
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

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
            (b"\x00\x01", Sniff::Other, false, Close { undecided: false }),
            (
                b"\x15\x03\x03",
                Sniff::Other,
                false,
                Close { undecided: false },
            ),
            (
                b"\x15\x03\x03",
                Sniff::Other,
                true,
                Close { undecided: false },
            ),
            (
                b"\x16\x03",
                Sniff::NeedMore,
                false,
                Close { undecided: true },
            ),
            (
                b"\x16\x03",
                Sniff::NeedMore,
                true,
                Close { undecided: true },
            ),
            (b"", Sniff::NeedMore, false, Close { undecided: true }),
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
