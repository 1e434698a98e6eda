//! `[[agents]]`: agents declared in the config (GitOps), upserted at start.

use crate::duration;
use portcullis_core::{AgentLimits, AgentMode, RiskLevel};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[[agents]]`: an agent declared in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `^[a-z][a-z0-9_]{1,63}$`.
    pub id: String,
    /// Tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Groups for policy bindings.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Scopes tokens may carry.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Lower-case hex SHA-256 of the secret exactly as the client sends it.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `active`, `shadow` or `disabled`.
    #[serde(default)]
    pub mode: AgentMode,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    #[serde(default)]
    pub risk_level: RiskLevel,
    /// Token lifetime; defaults to `identity.token_ttl`.
    #[serde(default, with = "duration::option")]
    pub token_ttl: Option<Duration>,
    /// Limit overrides (`rpm`, `tpm`, `tokens_per_day`, `max_concurrent`) on top of `[limits]`,
    /// and `mcp_calls_per_minute` on top of `[mcp] calls_per_minute`.
    #[serde(default)]
    pub limits: AgentLimits,
}

fn default_tenant() -> String {
    "default".to_owned()
}
