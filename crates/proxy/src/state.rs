//! What every exchange of the data plane shares: settings, the SSRF guard, the pooled
//! upstream client, the phase implementations, metrics and TLS interception.

use crate::metrics::ProxyMetrics;
use crate::phases::Pipeline;
use crate::ssrf::Guard;
use crate::upstream::{self, UpstreamClient};
use futures_util::future::BoxFuture;
use portcullis_config::ProxyConfig;
use portcullis_tls::rustls::{ClientConfig, ServerConfig};
use portcullis_tls::{HostMatcher, InterceptRules};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Most hosts remembered for "client rejected our certificate" warnings.
const MAX_WARNED_HOSTS: usize = 1024;

/// Everything requests share.
pub struct Shared {
    /// `[proxy]` settings.
    pub cfg: ProxyConfig,
    /// SSRF guard.
    pub guard: Arc<Guard>,
    /// Pooled upstream client.
    pub client: UpstreamClient,
    /// Phase implementations.
    pub pipeline: Pipeline,
    /// Metrics.
    pub metrics: ProxyMetrics,
    /// TLS interception of CONNECT tunnels; `None`: every tunnel is spliced.
    pub intercept: Option<Intercept>,
}

impl Shared {
    /// Builds the shared state without TLS interception. `own_listeners` are
    /// refused as destinations.
    pub fn new(
        cfg: ProxyConfig,
        own_listeners: Vec<SocketAddr>,
        pipeline: Pipeline,
        metrics: ProxyMetrics,
    ) -> Arc<Self> {
        Self::with_intercept(cfg, own_listeners, pipeline, metrics, None)
    }

    /// Builds the shared state; with `intercept`, CONNECT tunnels to the hosts its
    /// rules select are intercepted and the upstream client speaks `https`.
    pub fn with_intercept(
        cfg: ProxyConfig,
        own_listeners: Vec<SocketAddr>,
        pipeline: Pipeline,
        metrics: ProxyMetrics,
        intercept: Option<Intercept>,
    ) -> Arc<Self> {
        let guard = Arc::new(Guard::new(cfg.allow_private.clone(), own_listeners));
        let client = upstream::client(
            guard.clone(),
            cfg.connect_timeout,
            cfg.upstream_idle_timeout,
            cfg.upstream_pool_max_idle,
            intercept.as_ref().map(|i| i.upstream_tls.clone()),
        );
        Arc::new(Self {
            cfg,
            guard,
            client,
            pipeline,
            metrics,
            intercept,
        })
    }

    /// Whether CONNECT tunnels to `host` are intercepted: the interception rules, a credential
    /// bound to the host (a key cannot be added to an opaque tunnel) or an MCP server on it (its
    /// calls are decided one by one); passthrough wins over all.
    pub fn intercepts(&self, host: &str) -> bool {
        self.intercept.as_ref().is_some_and(|i| {
            i.rules.should_intercept(host)
                || !i.rules.passthrough.matches(host)
                    && (self
                        .pipeline
                        .credentials
                        .as_ref()
                        .is_some_and(|c| c.intercepts(host))
                        || self
                            .pipeline
                            .mcp
                            .as_ref()
                            .is_some_and(|m| m.intercepts(host)))
        })
    }
}

/// Server configurations (a leaf certificate minted for the host) for intercepted tunnels.
/// Implemented by the gateway CA's leaf cache; the data plane never mints certificates.
pub trait LeafSource: Send + Sync + 'static {
    /// The server configuration presenting a certificate for `host`.
    fn server_config<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Arc<ServerConfig>, String>>;
}

/// Interception settings and state shared by every tunnel.
pub struct Intercept {
    /// Leaf configurations per host.
    pub leaves: Arc<dyn LeafSource>,
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
    /// Interception with `leaves`, `rules` and the upstream client configuration.
    pub fn new(
        leaves: Arc<dyn LeafSource>,
        rules: InterceptRules,
        upstream_tls: Arc<ClientConfig>,
    ) -> Self {
        Self {
            leaves,
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
    pub(crate) fn first_failure(&self, host: &str) -> bool {
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
