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
    /// MCP tool calls per minute (over `mcp.calls_per_minute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_calls_per_minute: Option<u64>,
    /// LLM spend per day, US dollars (a decimal number; kept as micro-dollars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<crate::price::Usd>,
    /// LLM spend per calendar month, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<crate::price::Usd>,
}

impl AgentLimits {
    /// The dollar budgets as `(key, value)` pairs, in a fixed order.
    pub fn usd_entries(&self) -> [(&'static str, Option<crate::price::Usd>); 2] {
        [
            ("usd_per_day", self.usd_per_day),
            ("usd_per_month", self.usd_per_month),
        ]
    }

    /// The integer overrides as `(key, value)` pairs, in a fixed order (the dollar budgets
    /// are in [`AgentLimits::usd_entries`]).
    pub fn entries(&self) -> [(&'static str, Option<u64>); 5] {
        [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("tokens_per_day", self.tokens_per_day),
            ("max_concurrent", self.max_concurrent),
            ("mcp_calls_per_minute", self.mcp_calls_per_minute),
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

/// Config-declared values an operator overrode at run time (CLI or admin API), so that the
/// config upsert at the next start keeps the operator's decision.
///
/// Each field holds the value the *config* declared when the operator overrode it. While
/// the config still declares that value, the stored (run-time) value wins; once the
/// operator edits the config to a different value, that edit is the newer decision and
/// applies (see [`Agent::reconcile_config`]). Status needs no entry: the config never
/// declares it, so suspension and revocation are always run-time decisions.
///
/// Serialised (as part of an [`Agent`]) only as the list of overridden field names, so the
/// remembered secret hash never leaves the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// The config `mode` in force when the operator changed the mode at run time.
    pub mode: Option<AgentMode>,
    /// SHA-256 (hex) of the config secret the operator rotated away at run time.
    pub secret_sha256: Option<String>,
}

impl ConfigOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.secret_sha256.is_none()
    }

    /// Names of the overridden fields (`mode`, `secret`), for display.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.mode.is_some() {
            v.push("mode");
        }
        if self.secret_sha256.is_some() {
            v.push("secret");
        }
        v
    }
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
    /// Config-declared values overridden at run time (config agents only); serialised as
    /// the overridden field names (`["mode", "secret"]`), never read from JSON.
    #[serde(
        default,
        skip_deserializing,
        serialize_with = "overridden_fields",
        skip_serializing_if = "ConfigOverrides::is_empty"
    )]
    pub config_overrides: ConfigOverrides,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Last change, Unix seconds.
    pub updated_at: u64,
}

fn overridden_fields<S: serde::Serializer>(o: &ConfigOverrides, s: S) -> Result<S::Ok, S::Error> {
    o.fields().serialize(s)
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
            config_overrides: ConfigOverrides::default(),
            created_at: now_unix,
            updated_at: now_unix,
        }
    }

    /// Records what a run-time write (CLI, admin API) changed on a config-declared agent,
    /// given the record `before` the write: a new mode or a new secret overrides the config's
    /// value until the config itself declares a different one. The first override keeps the
    /// config's value (a second rotation still remembers the config secret, not the first
    /// rotated one). Agents not declared in the config are left as they are.
    pub fn note_runtime_change(&mut self, before: &Agent) {
        self.config_overrides = before.config_overrides.clone();
        if self.source != AgentSource::Config {
            return;
        }
        if self.mode != before.mode && self.config_overrides.mode.is_none() {
            self.config_overrides.mode = Some(before.mode);
        }
        if self.secret_sha256 != before.secret_sha256
            && self.config_overrides.secret_sha256.is_none()
        {
            self.config_overrides.secret_sha256 = before.secret_sha256.clone();
        }
    }

    /// Applies the config's declared `mode` and secret hash to this stored config agent at
    /// start, keeping run-time decisions:
    ///
    /// * mode: the stored mode stays while the config still declares the mode that was in
    ///   force when the operator changed it; a different declared mode applies (and ends
    ///   the override);
    /// * secret: the stored (rotated) secret and generation stay while the config still
    ///   declares the secret that was rotated away; a different declared secret applies,
    ///   and a secret that differs from the stored one moves the generation on (older
    ///   tokens stop working).
    ///
    /// Status is not touched: the config never declares it.
    pub fn reconcile_config(&mut self, mode: AgentMode, secret_sha256: &str) {
        if self.config_overrides.mode != Some(mode) {
            self.mode = mode;
            self.config_overrides.mode = None;
        }
        if self.config_overrides.secret_sha256.as_deref() != Some(secret_sha256) {
            if self.secret_sha256.as_deref() != Some(secret_sha256) {
                self.secret_sha256 = Some(secret_sha256.to_owned());
                self.generation = self.generation.saturating_add(1);
            }
            self.config_overrides.secret_sha256 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_agent() -> Agent {
        let mut a = Agent::new("bot", "acme", 1);
        a.source = AgentSource::Config;
        a.secret_sha256 = Some("c0".repeat(32));
        a
    }

    #[test]
    fn rotation_and_mode_change_survive_the_same_config() {
        let before = config_agent();
        let mut a = before.clone();
        a.secret_sha256 = Some("a1".repeat(32));
        a.generation += 1;
        a.mode = AgentMode::Disabled;
        a.note_runtime_change(&before);
        assert_eq!(a.config_overrides.mode, Some(AgentMode::Active));
        assert_eq!(
            a.config_overrides.secret_sha256.as_deref(),
            before.secret_sha256.as_deref()
        );
        let rotated = a.clone();
        // The next start declares the same config: nothing reverts.
        a.reconcile_config(AgentMode::Active, &"c0".repeat(32));
        assert_eq!(a, rotated);
    }

    #[test]
    fn a_second_rotation_remembers_the_config_secret() {
        let first = config_agent();
        let mut second = first.clone();
        second.secret_sha256 = Some("a1".repeat(32));
        second.note_runtime_change(&first);
        let mut third = second.clone();
        third.secret_sha256 = Some("b2".repeat(32));
        third.note_runtime_change(&second);
        assert_eq!(
            third.config_overrides.secret_sha256,
            Some("c0".repeat(32)),
            "the config's secret, not the first rotated one"
        );
        let gen = third.generation;
        third.reconcile_config(AgentMode::Active, &"c0".repeat(32));
        assert_eq!(third.secret_sha256, Some("b2".repeat(32)));
        assert_eq!(third.generation, gen);
    }

    #[test]
    fn a_new_config_value_is_a_newer_decision_and_applies() {
        let before = config_agent();
        let mut a = before.clone();
        a.secret_sha256 = Some("a1".repeat(32));
        a.generation = 2;
        a.mode = AgentMode::Shadow;
        a.note_runtime_change(&before);
        a.reconcile_config(AgentMode::Disabled, &"d3".repeat(32));
        assert_eq!(a.mode, AgentMode::Disabled);
        assert_eq!(a.secret_sha256, Some("d3".repeat(32)));
        assert_eq!(a.generation, 3, "a new secret kills older tokens");
        assert!(a.config_overrides.is_empty());
        // From then on the config is followed again.
        a.reconcile_config(AgentMode::Active, &"d3".repeat(32));
        assert_eq!(a.mode, AgentMode::Active);
        assert_eq!(a.generation, 3);
    }

    #[test]
    fn status_is_never_touched_by_the_config() {
        for status in [AgentStatus::Suspended, AgentStatus::Revoked] {
            let mut a = config_agent();
            a.status = status;
            a.reconcile_config(AgentMode::Active, &"e4".repeat(32));
            assert_eq!(a.status, status);
        }
    }

    #[test]
    fn store_agents_and_unchanged_fields_record_nothing() {
        let mut store_agent = Agent::new("api_bot", "acme", 1);
        let before = store_agent.clone();
        store_agent.mode = AgentMode::Disabled;
        store_agent.note_runtime_change(&before);
        assert!(store_agent.config_overrides.is_empty());

        let before = config_agent();
        let mut a = before.clone();
        a.risk_level = crate::RiskLevel::High;
        a.note_runtime_change(&before);
        assert!(a.config_overrides.is_empty());
    }

    #[test]
    fn overrides_never_serialise_the_secret_hash() {
        let mut a = config_agent();
        a.config_overrides.secret_sha256 = Some("c0".repeat(32));
        a.config_overrides.mode = Some(AgentMode::Shadow);
        let text = serde_json::to_string(&a).unwrap_or_default();
        assert!(!text.contains(&"c0".repeat(32)), "{text}");
        assert!(
            text.contains("\"config_overrides\":[\"mode\",\"secret\"]"),
            "{text}"
        );
        // Never taken from JSON: overrides are the store's to keep.
        let back: Agent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(back.config_overrides.is_empty());
        let plain = serde_json::to_string(&config_agent()).unwrap_or_default();
        assert!(!plain.contains("config_overrides"), "{plain}");
    }
}
