//! `[proxy]`: the agent-facing listener and its bounds.

use crate::duration;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Upper bound accepted for `proxy.max_header_bytes`.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1024 * 1024;

/// `[proxy]`: the data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address agents connect to.
    pub listen: SocketAddr,
    /// Destination ports agents may reach (CONNECT and absolute-form).
    pub allowed_ports: Vec<u16>,
    /// Private/reserved destinations that are nevertheless allowed (CIDRs).
    pub allow_private: Vec<IpNet>,
    /// Development only: serve without authenticating agents.
    pub allow_unauthenticated: bool,
    /// Largest request body buffered for classification and policy (LLM requests);
    /// larger bodies are streamed and classified without body fields.
    pub max_inspect_body: usize,
    /// Largest request head (request line + headers) accepted; larger → 431.
    pub max_header_bytes: usize,
    /// Most request headers accepted; more → 431.
    pub max_headers: usize,
    /// Time allowed to receive a complete request head (slowloris guard).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Upstream TCP connect timeout (→ 504).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Pooled idle upstream connections are closed after this.
    #[serde(with = "duration")]
    pub upstream_idle_timeout: Duration,
    /// Most idle pooled connections kept per upstream host.
    pub upstream_pool_max_idle: usize,
    /// Most concurrent client connections; beyond it new connections get 503.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, time allowed for in-flight requests and tunnels to finish.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// A request body that sends nothing for this long is cut: 408 `body_read_timeout`.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Keep `%2F`, `%5C` and `\` in request paths as sent instead of refusing them (400
    /// `ambiguous_path`). They are never decoded; the rest of the path is still canonicalised.
    pub allow_encoded_slashes: bool,
    /// `Upgrade` protocols relayed to the upstream (case-insensitive tokens). Any other token is
    /// stripped from the request, and a 101 the client did not get through this list is refused.
    pub allowed_upgrades: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_ports: vec![80, 443],
            allow_private: Vec::new(),
            allow_unauthenticated: false,
            max_inspect_body: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(90),
            upstream_pool_max_idle: 256,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            allow_encoded_slashes: false,
            allowed_upgrades: vec!["websocket".to_owned()],
        }
    }
}
