//! Who is making a request: the authenticated agent as the data plane sees it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Lifecycle status of an agent's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// May authenticate.
    #[default]
    Active,
    /// Temporarily refused; can be re-activated.
    Suspended,
    /// Permanently refused.
    Revoked,
}

/// How policy applies to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    /// Denials are enforced.
    #[default]
    Active,
    /// Denials become `would_deny`.
    Shadow,
    /// Every request is refused (403 `agent_disabled`).
    Disabled,
}

/// Risk classification an operator assigns to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum RiskLevel {
    /// Low risk.
    #[default]
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
    /// Critical risk.
    Critical,
}

/// Claims of the token a request was authenticated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Scopes granted to the token, verbatim.
    pub scopes: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// An authenticated agent. Cheap to clone; shared by every request of a tunnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// Agent id.
    pub agent_id: Arc<str>,
    /// Tenant the agent belongs to.
    pub tenant: Arc<str>,
    /// Groups, used by policy bindings.
    pub groups: Arc<[String]>,
    /// Operator-assigned risk.
    pub risk_level: RiskLevel,
    /// Agent mode.
    pub mode: AgentMode,
    /// Free-form attributes for policies.
    pub attributes: Arc<Map<String, Value>>,
    /// Effective scopes: the token's when authenticated by token, else the agent's allowed scopes.
    pub scopes: Arc<[String]>,
    /// Present when authenticated with a token.
    pub token: Option<Arc<TokenInfo>>,
    /// Credential generation the principal was verified against.
    pub generation: u64,
}

impl Principal {
    /// A principal for unauthenticated development mode (`proxy.allow_unauthenticated`).
    pub fn anonymous() -> Self {
        Self {
            agent_id: Arc::from("anonymous"),
            tenant: Arc::from("default"),
            groups: Arc::from(Vec::new()),
            risk_level: RiskLevel::Low,
            mode: AgentMode::Active,
            attributes: Arc::new(Map::new()),
            scopes: Arc::from(Vec::new()),
            token: None,
            generation: 0,
        }
    }
}
