//! The pooled upstream HTTP client. Connections are keyed by scheme/host/port
//! (hyper-util's pool) and dialed through the SSRF guard.

use crate::body::ProxyBody;
use crate::dial::{dial, DialError};
use crate::ssrf::Guard;
use crate::target::parse_host_port;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Dials upstream connections for the pool through the guard.
#[derive(Clone)]
pub struct GuardedConnector {
    guard: Arc<Guard>,
    connect_timeout: Duration,
}

impl GuardedConnector {
    /// A connector enforcing `guard`.
    pub fn new(guard: Arc<Guard>, connect_timeout: Duration) -> Self {
        Self {
            guard,
            connect_timeout,
        }
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
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
            let target = parse_host_port(auth, Some(80))
                .map_err(|_| DialError::NoAddress(auth.to_owned()))?;
            let (stream, _) = dial(&target, &this.guard, this.connect_timeout).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The upstream client type.
pub type UpstreamClient = Client<GuardedConnector, ProxyBody>;

/// Builds the pooled client.
pub fn client(
    guard: Arc<Guard>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle_per_host)
        .set_host(false)
        .build(GuardedConnector::new(guard, connect_timeout))
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
