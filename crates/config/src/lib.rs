//! Portcullis configuration.
//!
//! One TOML document, parsed from a string ([`Config::from_toml`]) and validated
//! separately ([`Config::validate`]) so tests need no files; [`Config::load`]
//! adds reading the file. Every key has a default in one place (the `Default`
//! impls of each section) and is documented in `config/portcullis.toml`.
//!
//! This crate depends on no domain crate: each section is plain serde data, and the
//! binary maps it onto the settings types of the crates that use it (and runs the checks
//! that need their logic: host globs, provider entries, limit settings).
#![warn(missing_docs)]

mod admin;
mod agents;
mod alerts;
mod audit;
mod console;
mod credentials;
pub mod duration;
mod identity;
mod limits;
mod llm;
mod log;
mod mcp;
mod policy;
mod proxy;
mod sidecar;
mod store;
mod telemetry;
mod tls;
mod validate;

pub use admin::AdminConfig;
pub use agents::AgentConfig;
pub use alerts::{
    AlertsConfig, WebhookConfig, WebhookFormat, MAX_RETRIES, MAX_THRESHOLD, MAX_THRESHOLDS,
    MAX_WEBHOOKS,
};
pub use audit::{AuditConfig, AuditOnFull, AuditSink, McpArguments};
pub use console::{ConsoleConfig, GroupRole, TrustedHeaderConfig};
pub use credentials::{CredentialConfig, CredentialMode};
pub use identity::IdentityConfig;
pub use limits::{
    LimitsBackend, LimitsConfig, OnRedisError, TenantLimitsConfig, DEFAULT_CHARS_PER_TOKEN,
    DEFAULT_MAX_TOKENS,
};
pub use llm::{
    shipped_prices, LlmConfig, PriceConfig, ProviderConfig, ProviderFormat, ShippedPrices,
};
pub use log::{LogConfig, LogFormat};
pub use mcp::{McpConfig, McpOnBlock, McpServerConfig};
pub use policy::{BindingConfig, DefaultDecision, OnBlock, PolicyConfig};
pub use proxy::{ProxyConfig, MAX_HEADER_BYTES_LIMIT};
pub use sidecar::SidecarConfig;
pub use store::{StoreConfig, STORE_URL_ENV};
pub use telemetry::TelemetryConfig;
pub use tls::TlsConfig;

use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// Persistence.
    pub store: StoreConfig,
    /// Agent identity and tokens.
    pub identity: IdentityConfig,
    /// Rego policy.
    pub policy: PolicyConfig,
    /// LLM provider recognition.
    pub llm: LlmConfig,
    /// Sidecar mode: one agent per gateway, loopback clients need no credentials.
    pub sidecar: SidecarConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Agents declared in the config (GitOps), upserted at start.
    pub agents: Vec<AgentConfig>,
    /// TLS interception of CONNECT tunnels.
    pub tls: TlsConfig,
    /// Default per-agent rate limits and token budgets (`[agents.limits]` overrides them).
    pub limits: LimitsConfig,
    /// Provider credentials the gateway injects into allowed requests.
    pub credentials: Vec<CredentialConfig>,
    /// The operator console on the admin listener.
    pub console: ConsoleConfig,
    /// MCP servers governed per JSON-RPC message.
    pub mcp: McpConfig,
    /// Budget alerts sent to webhooks.
    pub alerts: AlertsConfig,
    /// OpenTelemetry traces and GenAI metrics over OTLP (off unless an endpoint is set).
    pub telemetry: TelemetryConfig,
}

/// A configuration error naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: `{key}`: {reason}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `proxy.allowed_ports`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A new error for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Parses a TOML document (no validation beyond types and known keys).
    pub fn from_toml(src: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(src).map_err(|e| toml_error("(document)", &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." {
                "(document)".to_owned()
            } else {
                key
            };
            toml_error(&key, e.inner())
        })
    }

    /// Reads, parses and validates a config file (the checks of [`Config::validate`]; the
    /// caller runs the domain checks on top).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
        let cfg = Self::from_toml(&src)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn toml_error(key: &str, e: &toml::de::Error) -> ConfigError {
    // toml's messages carry a source excerpt; keep the first line of the message proper
    // plus the position so the operator can find it.
    let msg = e.message().trim().to_owned();
    let at = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    ConfigError::new(key, format!("{msg}{at}"))
}

#[cfg(test)]
mod tests;
