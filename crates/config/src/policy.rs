//! `[policy]`: where policies come from and how their decisions apply.

use crate::duration;
use portcullis_core::PolicyMode;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What a blocked request receives (`policy.on_block`).
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

/// One `[[policy.bindings]]` entry: which agents a policy applies to, and its mode.
///
/// A policy with no binding applies to every agent in mode `active`. A binding matches when
/// the agent's tenant is in `tenants` (if given) and the agent is in `agents` or in one of
/// `groups` (if either is given); the first matching binding gives the mode and `on_block`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
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

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of `.rego` files, watched for changes. Unset: `config/policies` when it
    /// exists in the working directory, else the built-in example set.
    pub dir: Option<PathBuf>,
    /// URL of an OPA-compatible bundle (`.tar.gz` with `.manifest`, `*.rego`, `data.json`),
    /// polled with `If-None-Match` and long polling; exclusive with `dir`.
    pub bundle_url: Option<String>,
    /// Where the last good bundle is kept, loaded at start when the server cannot be reached.
    pub bundle_path: PathBuf,
    /// Delay between polls when the server does not long-poll, and after a failed poll.
    #[serde(with = "duration")]
    pub bundle_poll: Duration,
    /// How long the server may hold a poll open (`Prefer: wait=N`); `0` disables long polling.
    #[serde(with = "duration")]
    pub bundle_long_poll: Duration,
    /// Largest bundle download accepted, in bytes (it may unpack to at most four times this).
    pub bundle_max_bytes: u64,
    /// Decision when no active policy applies: `deny` (default) or `allow`.
    pub default: DefaultDecision,
    /// Blocked response: `json` (403 JSON) or `stub` (a provider-shaped refusal for LLM APIs).
    pub on_block: OnBlock,
    /// Decision cache lifetime; `0` disables the cache.
    #[serde(with = "duration")]
    pub cache_ttl: Duration,
    /// Which agents each policy applies to, and its mode.
    pub bindings: Vec<BindingConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: None,
            bundle_url: None,
            bundle_path: PathBuf::from("data/policy-bundle.tar.gz"),
            bundle_poll: Duration::from_secs(10),
            bundle_long_poll: Duration::from_secs(30),
            bundle_max_bytes: 16 << 20,
            default: DefaultDecision::Deny,
            on_block: OnBlock::Json,
            cache_ttl: Duration::from_secs(60),
            bindings: Vec::new(),
        }
    }
}
