//! Who a limit applies to: scope keys and the set of scopes one request is checked against.

use serde::Serialize;
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::settings::LimitSettings;

/// The level a limit applies at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// All agents of a tenant together.
    Tenant,
    /// One agent (the usual scope).
    Agent,
    /// One sub-agent under its parent agent.
    Subagent,
}

impl ScopeKind {
    /// `tenant`, `agent` or `subagent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Agent => "agent",
            Self::Subagent => "subagent",
        }
    }
}

/// The key under which a limiter keeps one scope's counters.
///
/// A cheap-to-clone string (`Arc<str>`): build it once per agent (e.g. next to the agent record)
/// rather than per request. The encoding is injective whatever the ids contain, and is usable
/// as-is as a key in a shared store:
/// `t:<tenant>`, `a:<agent>`, `s:<len(agent)>:<agent><subagent>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey(Arc<str>);

impl ScopeKey {
    /// The key of a tenant.
    pub fn tenant(tenant: &str) -> Self {
        Self(format!("t:{tenant}").into())
    }

    /// The key of an agent.
    pub fn agent(agent_id: &str) -> Self {
        Self(format!("a:{agent_id}").into())
    }

    /// The key of a sub-agent of `agent_id`.
    pub fn subagent(agent_id: &str, subagent: &str) -> Self {
        Self(format!("s:{}:{agent_id}{subagent}", agent_id.len()).into())
    }

    /// The encoded key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind of scope this key names.
    pub fn kind(&self) -> ScopeKind {
        match self.0.as_bytes().first() {
            Some(b't') => ScopeKind::Tenant,
            Some(b's') => ScopeKind::Subagent,
            _ => ScopeKind::Agent,
        }
    }
}

impl Borrow<str> for ScopeKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One scope of a request and the settings that apply to it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Whose counters.
    pub key: &'a ScopeKey,
    /// Which limits (already merged with overrides).
    pub settings: &'a LimitSettings,
}

/// Every scope one request is checked against: always its agent, optionally its sub-agent and
/// its tenant. A request is admitted only if every scope admits it, and then it is charged to
/// every scope (all or nothing).
#[derive(Debug, Clone, Copy)]
pub struct LimitScopes<'a> {
    /// The agent's scope.
    pub agent: Scope<'a>,
    /// The sub-agent's scope, when sub-agent limits are configured.
    pub subagent: Option<Scope<'a>>,
    /// The tenant's scope, when tenant limits are configured.
    pub tenant: Option<Scope<'a>>,
}

impl<'a> LimitScopes<'a> {
    /// Only the agent scope.
    pub fn agent(key: &'a ScopeKey, settings: &'a LimitSettings) -> Self {
        Self {
            agent: Scope { key, settings },
            subagent: None,
            tenant: None,
        }
    }

    /// Adds the sub-agent scope.
    #[must_use]
    pub fn with_subagent(mut self, key: &'a ScopeKey, settings: &'a LimitSettings) -> Self {
        self.subagent = Some(Scope { key, settings });
        self
    }

    /// Adds the tenant scope.
    #[must_use]
    pub fn with_tenant(mut self, key: &'a ScopeKey, settings: &'a LimitSettings) -> Self {
        self.tenant = Some(Scope { key, settings });
        self
    }

    /// The scopes in a fixed order: tenant, agent, sub-agent (absent ones are `None`).
    pub fn as_array(&self) -> [Option<Scope<'a>>; 3] {
        [self.tenant, Some(self.agent), self.subagent]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_injective_and_typed() {
        let a = ScopeKey::subagent("ab", "c");
        let b = ScopeKey::subagent("a", "bc");
        assert_ne!(a, b);
        assert_ne!(ScopeKey::agent("x"), ScopeKey::tenant("x"));
        assert_eq!(ScopeKey::agent("bot").as_str(), "a:bot");
        assert_eq!(ScopeKey::tenant("acme").kind(), ScopeKind::Tenant);
        assert_eq!(ScopeKey::agent("t").kind(), ScopeKind::Agent);
        assert_eq!(ScopeKey::subagent("bot", "s").kind(), ScopeKind::Subagent);
        assert_eq!(ScopeKey::agent("bot"), ScopeKey::agent("bot"));
    }
}
