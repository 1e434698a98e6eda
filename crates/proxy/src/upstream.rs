//! The pooled upstream HTTP client. Connections are keyed by scheme/host/port
//! (hyper-util's pool) and dialed through the SSRF guard; `https` URIs get TLS
//! verified against the configured roots, SNI per target (none for IP literals).

use crate::body::ProxyBody;
use crate::dial::{dial, DialError};
use crate::ssrf::Guard;
use crate::target::parse_host_port;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Dials upstream connections for the pool through the guard.
#[derive(Clone)]
pub struct GuardedConnector {
    guard: Arc<Guard>,
    connect_timeout: Duration,
    tls: Option<TlsConnector>,
}

impl GuardedConnector {
    /// A connector enforcing `guard`, plain HTTP only.
    pub fn new(guard: Arc<Guard>, connect_timeout: Duration) -> Self {
        Self {
            guard,
            connect_timeout,
            tls: None,
        }
    }

    /// Also connects `https` URIs with `tls` (its ALPN decides the protocol offer).
    pub fn with_tls(mut self, tls: Arc<portcullis_tls::rustls::ClientConfig>) -> Self {
        self.tls = Some(TlsConnector::from(tls));
        self
    }
}

/// An upstream connection: plain TCP or TLS over TCP.
pub enum UpstreamStream {
    /// `http`.
    Plain(TcpStream),
    /// `https`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(s) => s.connected(),
            UpstreamStream::Tls(s) => {
                let (tcp, conn) = s.get_ref();
                let c = tcp.connected();
                if conn.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let auth = uri
                .authority()
                .map(|a| a.as_str())
                .ok_or_else(|| DialError::NoAddress(uri.to_string()))?;
            let https = uri.scheme_str() == Some("https");
            let target = parse_host_port(auth, Some(if https { 443 } else { 80 }))
                .map_err(|_| DialError::NoAddress(auth.to_owned()))?;
            let deadline = tokio::time::Instant::now() + this.connect_timeout;
            let (stream, _) = dial(&target, &this.guard, this.connect_timeout).await?;
            if !https {
                return Ok(TokioIo::new(UpstreamStream::Plain(stream)));
            }
            let tls_error = |reason: String| DialError::Tls {
                target: target.to_string(),
                reason,
            };
            let connector = this
                .tls
                .as_ref()
                .ok_or_else(|| tls_error("upstream TLS is not configured".to_owned()))?;
            let name = portcullis_tls::upstream_server_name(&target.host_str())
                .map_err(|e| tls_error(e.to_string()))?;
            match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
                Err(_) => Err(DialError::Timeout(target.to_string())),
                Ok(Err(e)) => Err(DialError::tls_handshake(&target, &e)),
                Ok(Ok(s)) => Ok(TokioIo::new(UpstreamStream::Tls(Box::new(s)))),
            }
        })
    }
}

/// The upstream client type.
pub type UpstreamClient = Client<GuardedConnector, ProxyBody>;

/// Builds the pooled client; with `tls`, `https` URIs are supported too.
pub fn client(
    guard: Arc<Guard>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
    tls: Option<Arc<portcullis_tls::rustls::ClientConfig>>,
) -> UpstreamClient {
    let mut connector = GuardedConnector::new(guard, connect_timeout);
    if let Some(tls) = tls {
        connector = connector.with_tls(tls);
    }
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle_per_host)
        .set_host(false)
        .build(connector)
}

/// Finds our dial error inside a client error, if the failure was at connect time.
pub fn find_dial_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a DialError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(d) = e.downcast_ref::<DialError>() {
            return Some(d);
        }
        cur = e.source();
    }
    None
}
