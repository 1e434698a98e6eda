//! The serde model with its defaults and validation.

use crate::{duration, ConfigError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The whole configuration document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The agent-facing proxy listener.
    pub proxy: ProxyConfig,
    /// The operator-facing admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

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
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_ports: vec![80, 443],
            allow_private: Vec::new(),
            allow_unauthenticated: false,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(90),
            upstream_pool_max_idle: 32,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: the operator API, health and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `portcullis=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Upper bound accepted for `proxy.max_header_bytes`.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1024 * 1024;

impl Config {
    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.proxy;
        if p.allowed_ports.is_empty() {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "must list at least one port",
            ));
        }
        if p.allowed_ports.contains(&0) {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "port 0 is not a port",
            ));
        }
        if !(1024..=MAX_HEADER_BYTES_LIMIT).contains(&p.max_header_bytes) {
            return Err(ConfigError::new(
                "proxy.max_header_bytes",
                format!("must be between 1024 and {MAX_HEADER_BYTES_LIMIT}"),
            ));
        }
        if !(1..=1000).contains(&p.max_headers) {
            return Err(ConfigError::new(
                "proxy.max_headers",
                "must be between 1 and 1000",
            ));
        }
        if p.max_connections == 0 {
            return Err(ConfigError::new(
                "proxy.max_connections",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("proxy.header_read_timeout", p.header_read_timeout),
            ("proxy.idle_timeout", p.idle_timeout),
            ("proxy.connect_timeout", p.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        if p.listen == self.admin.listen && p.listen.port() != 0 {
            return Err(ConfigError::new(
                "admin.listen",
                "must differ from proxy.listen (agents must never reach the admin API)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.proxy.allowed_ports, vec![80, 443]);
        assert!(!c.proxy.allow_unauthenticated);
    }

    #[test]
    fn values_parse() {
        let c = Config::from_toml(
            r#"
            [proxy]
            listen = "0.0.0.0:3128"
            allowed_ports = [443, 8443]
            allow_private = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
            idle_timeout = "2m"
            connect_timeout = 5
            [log]
            format = "json"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.proxy.allowed_ports, vec![443, 8443]);
        assert_eq!(c.proxy.allow_private.len(), 3);
        assert_eq!(c.proxy.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.proxy.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[proxy]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(e.key, "proxy.listen_addr");
        assert!(e.reason.contains("listen_addr"), "{e}");
        let e = Config::from_toml("[nope]\n").unwrap_err();
        assert!(e.reason.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[proxy]\nallowed_ports = [\"x\"]", "proxy.allowed_ports"),
            (
                "[proxy]\nallow_private = [\"10.0.0.0/33\"]",
                "proxy.allow_private",
            ),
            (
                "[proxy]\nidle_timeout = \"10 parsecs\"",
                "proxy.idle_timeout",
            ),
            ("[proxy]\nlisten = \"nowhere\"", "proxy.listen"),
            ("[log]\nformat = \"xml\"", "log.format"),
        ];
        for (src, key) in cases {
            let e = Config::from_toml(src).unwrap_err();
            assert!(e.key.starts_with(key), "{src}: {e}");
        }
        let e = Config::from_toml("[proxy]\nlisten = ").unwrap_err();
        assert_eq!(e.key, "(document)");
    }

    #[test]
    fn validation() {
        let cases = [
            ("[proxy]\nallowed_ports = []", "proxy.allowed_ports"),
            ("[proxy]\nallowed_ports = [0]", "proxy.allowed_ports"),
            ("[proxy]\nmax_header_bytes = 10", "proxy.max_header_bytes"),
            ("[proxy]\nmax_headers = 0", "proxy.max_headers"),
            ("[proxy]\nmax_connections = 0", "proxy.max_connections"),
            ("[proxy]\nidle_timeout = 0", "proxy.idle_timeout"),
            (
                "[proxy]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"",
                "admin.listen",
            ),
        ];
        for (src, key) in cases {
            let e = Config::from_toml(src).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{src}");
        }
    }
}
