//! The agent record: what the store persists and the identity registry serves.

use crate::{AgentMode, AgentStatus, RiskLevel};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Default token lifetime in seconds.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 600;

/// Per-agent limit overrides; `None` means "use the configured default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// LLM tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// LLM tokens per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Concurrent in-flight requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

impl AgentLimits {
    /// The overrides as `(key, value)` pairs, in a fixed order.
    pub fn entries(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("tokens_per_day", self.tokens_per_day),
            ("max_concurrent", self.max_concurrent),
        ]
    }
}

/// Where an agent definition comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    /// Created through the CLI or admin API.
    #[default]
    Store,
    /// Declared in the config file (`[[agents]]`), upserted at start.
    Config,
    /// A sub-agent registered on first use under its parent.
    Subagent,
}

/// A registered agent (or sub-agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// `^[a-z][a-z0-9_]{1,63}$`; for a sub-agent, its own name.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Parent agent id when this is a sub-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Groups used by policy bindings.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Credential status.
    #[serde(default)]
    pub status: AgentStatus,
    /// Policy mode.
    #[serde(default)]
    pub mode: AgentMode,
    /// Operator-assigned risk.
    #[serde(default)]
    pub risk_level: RiskLevel,
    /// Scopes tokens may carry (case-sensitive, colon separated).
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Token lifetime in seconds.
    pub token_ttl_secs: u64,
    /// Free-form attributes exposed to policy.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Credential generation; rotation increments it and invalidates older tokens.
    pub generation: u64,
    /// Lower-case hex SHA-256 of the client secret (never the secret itself).
    #[serde(default, skip_serializing)]
    pub secret_sha256: Option<String>,
    /// Limit overrides.
    #[serde(default)]
    pub limits: AgentLimits,
    /// Where the definition comes from.
    #[serde(default)]
    pub source: AgentSource,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Last change, Unix seconds.
    pub updated_at: u64,
}

impl Agent {
    /// A new active agent with defaults and no secret.
    pub fn new(id: impl Into<String>, tenant: impl Into<String>, now_unix: u64) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            parent: None,
            groups: Vec::new(),
            status: AgentStatus::Active,
            mode: AgentMode::Active,
            risk_level: RiskLevel::Low,
            allowed_scopes: Vec::new(),
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            attributes: Map::new(),
            generation: 1,
            secret_sha256: None,
            limits: AgentLimits::default(),
            source: AgentSource::Store,
            created_at: now_unix,
            updated_at: now_unix,
        }
    }
}
