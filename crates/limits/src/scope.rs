//! Who a limit applies to: scope keys and the set of scopes one request is checked against.

use serde::Serialize;
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::estimate::TokenReservation;
use crate::outcome::{LimitKind, Refusal};
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

    /// The refusal of an LLM request whose model has no known price when a dollar budget
    /// applies to one of its scopes: it cannot be sized against the budget, so it is refused
    /// (`unpriced`, never fits) rather than let through uncounted. Every backend asks this
    /// first; `None` when the request is priced, not an LLM request, or no dollar budget
    /// applies.
    pub fn unpriced_refusal(
        &self,
        reservation: Option<TokenReservation>,
        now_secs: u64,
    ) -> Option<Refusal> {
        let r = reservation?;
        if r.price().is_some() {
            return None;
        }
        const KINDS: [ScopeKind; 3] = [ScopeKind::Tenant, ScopeKind::Agent, ScopeKind::Subagent];
        self.as_array()
            .into_iter()
            .zip(KINDS)
            .find_map(|(scope, kind)| {
                let s = scope?.settings;
                let (limit, value) = match (s.usd_per_day, s.usd_per_month) {
                    (Some(d), _) => (LimitKind::UsdPerDay, d),
                    (None, Some(m)) => (LimitKind::UsdPerMonth, m),
                    (None, None) => return None,
                };
                Some(Refusal {
                    limit,
                    scope: kind,
                    limit_value: value.micros(),
                    remaining: 0,
                    requested: 0,
                    retry_after_secs: 60,
                    reset_unix: now_secs.saturating_add(60),
                    never_fits: true,
                    unpriced: true,
                })
            })
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

    #[test]
    fn unpriced_llm_requests_are_refused_only_under_a_dollar_budget() {
        use portcullis_core::{TokenPrice, Usd};
        let (a, t) = (ScopeKey::agent("bot"), ScopeKey::tenant("acme"));
        let free = LimitSettings::default();
        let budget = LimitSettings {
            usd_per_month: Some(Usd::from_micros(9_000_000)),
            ..LimitSettings::default()
        };
        let unpriced = Some(TokenReservation::tokens(10));
        let priced = unpriced.map(|r| r.with_price(Some(TokenPrice::default())));
        let plain = LimitScopes::agent(&a, &free);
        assert!(plain.unpriced_refusal(unpriced, 0).is_none(), "no budget");
        let tenant = plain.with_tenant(&t, &budget);
        let r = tenant.unpriced_refusal(unpriced, 100).unwrap();
        assert_eq!(
            (r.limit, r.scope, r.limit_value, r.never_fits, r.unpriced),
            (
                LimitKind::UsdPerMonth,
                ScopeKind::Tenant,
                9_000_000,
                true,
                true
            )
        );
        assert!(tenant.unpriced_refusal(priced, 0).is_none(), "priced");
        assert!(
            tenant.unpriced_refusal(None, 0).is_none(),
            "not an LLM call"
        );
    }
}
