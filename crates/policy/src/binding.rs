//! Policy bindings (`[[policy.bindings]]`): which agents a policy applies to, and how.

use portcullis_core::{PolicyMode, Principal};
use serde::{Deserialize, Serialize};

/// What a blocked request receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBlock {
    /// 403 JSON error.
    #[default]
    Json,
    /// A well-formed provider response stating the refusal (recognised LLM APIs only).
    Stub,
}

/// The decision when no active policy applies (`policy.default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDecision {
    /// Allow (the startup banner warns).
    Allow,
    /// Deny.
    #[default]
    Deny,
}

/// One `[[policy.bindings]]` entry.
///
/// A policy with no binding applies to every agent in mode `active`. A policy with bindings
/// applies to an agent when one of them matches; the first matching binding (config order)
/// gives the mode and `on_block`. A binding matches when the agent's tenant is in `tenants`
/// (if given) and the agent is in `agents` or in one of `groups` (if either is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// Policy name (`portcullis.policy.<name>`).
    pub policy: String,
    /// Agent ids; empty with empty `groups` means every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Groups; empty with empty `agents` means every agent.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tenants; empty means every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `active`, `shadow` or `disabled`.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Overrides `policy.on_block` for requests this binding decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_block: Option<OnBlock>,
}

impl Binding {
    /// A binding of `policy` to everyone in `mode`.
    pub fn all(policy: impl Into<String>, mode: PolicyMode) -> Self {
        Self {
            policy: policy.into(),
            agents: Vec::new(),
            groups: Vec::new(),
            tenants: Vec::new(),
            mode,
            on_block: None,
        }
    }

    /// Whether this binding selects the subject.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        if !self.tenants.is_empty() && !self.tenants.iter().any(|t| t == subject.tenant) {
            return false;
        }
        if self.agents.is_empty() && self.groups.is_empty() {
            return true;
        }
        self.agents.iter().any(|a| a == subject.agent_id)
            || self
                .groups
                .iter()
                .any(|g| subject.groups.iter().any(|sg| sg == g))
    }
}

/// The identity fields bindings look at.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Groups.
    pub groups: &'a [String],
}

impl<'a> From<&'a Principal> for Subject<'a> {
    fn from(p: &'a Principal) -> Self {
        Self {
            agent_id: &p.agent_id,
            tenant: &p.tenant,
            groups: &p.groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subj<'a>(id: &'a str, tenant: &'a str, groups: &'a [String]) -> Subject<'a> {
        Subject {
            agent_id: id,
            tenant,
            groups,
        }
    }

    #[test]
    fn matching_rules() {
        let g = vec!["research".to_owned()];
        let none: Vec<String> = vec![];
        let all = Binding::all("p", PolicyMode::Active);
        assert!(all.matches(&subj("a", "t", &none)));
        let by_group = Binding {
            groups: vec!["research".into()],
            ..all.clone()
        };
        assert!(by_group.matches(&subj("a", "t", &g)));
        assert!(!by_group.matches(&subj("a", "t", &none)));
        let by_agent_or_group = Binding {
            agents: vec!["b".into()],
            ..by_group.clone()
        };
        assert!(by_agent_or_group.matches(&subj("b", "t", &none)));
        assert!(by_agent_or_group.matches(&subj("a", "t", &g)));
        let by_tenant = Binding {
            tenants: vec!["acme".into()],
            ..by_agent_or_group
        };
        assert!(!by_tenant.matches(&subj("b", "t", &none)));
        assert!(by_tenant.matches(&subj("b", "acme", &none)));
    }

    #[test]
    fn serde_rejects_unknown_fields_and_defaults_mode() {
        let b: Binding = serde_json::from_str(r#"{"policy":"x"}"#).unwrap();
        assert_eq!(b.mode, PolicyMode::Active);
        assert!(serde_json::from_str::<Binding>(r#"{"policy":"x","agent":["a"]}"#).is_err());
        let b: Binding =
            serde_json::from_str(r#"{"policy":"x","mode":"shadow","on_block":"stub"}"#).unwrap();
        assert_eq!(
            (b.mode, b.on_block),
            (PolicyMode::Shadow, Some(OnBlock::Stub))
        );
    }
}
