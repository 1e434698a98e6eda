//! The outcome of policy evaluation, as the data plane, audit and simulator see it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The verdict of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Forwarded.
    Allow,
    /// Refused by policy (or by a policy error: fail closed).
    Deny,
    /// A shadow policy or shadow agent would have refused; forwarded anyway.
    WouldDeny,
    /// Refused by a rate limit or token budget.
    RateLimited,
    /// Refused before policy (authentication, malformed, SSRF guard, upstream failure).
    Error,
}

impl Verdict {
    /// The label used in metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
            Verdict::RateLimited => "rate_limited",
            Verdict::Error => "error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a policy binding is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Enforced.
    #[default]
    Active,
    /// Evaluated and audited as `would_deny`, never enforced.
    Shadow,
    /// Not evaluated.
    Disabled,
}

impl PolicyMode {
    /// The label used in metrics, config and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Active => "active",
            PolicyMode::Shadow => "shadow",
            PolicyMode::Disabled => "disabled",
        }
    }
}

/// One policy's result inside a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Policy name (`portcullis.policy.<name>`).
    pub policy: String,
    /// Mode it ran in.
    pub mode: PolicyMode,
    /// Whether its `allow` rule was true.
    pub allow: bool,
    /// Its `deny` reasons.
    pub deny: Vec<String>,
}

/// The combined decision for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request may proceed (true for `allow` and `would_deny`).
    pub allowed: bool,
    /// `allow`, `deny` or `would_deny`.
    pub verdict: Verdict,
    /// The deciding policy (the first denying one, else the first allowing one).
    pub policy: Option<String>,
    /// Reasons for a denial (or would-be denial).
    pub reasons: Vec<String>,
    /// Machine code when denied: `policy_denied`, `policy_error`, `agent_disabled`.
    pub code: Option<String>,
    /// Unique id of this decision, echoed in `X-Portcullis-Decision-Id`.
    pub decision_id: String,
    /// Shadow policies that would have denied.
    pub would_deny: Vec<String>,
    /// Per-policy results.
    pub evaluations: Vec<Evaluation>,
    /// Evaluation time in microseconds.
    pub eval_us: u64,
    /// Whether the decision came from the cache.
    pub cached: bool,
    /// Revision of the policy set that decided: the bundle's manifest revision, or a hash of
    /// the policy files (`None` when no policy set was involved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl Decision {
    /// The machine code a refusal on this decision is answered with: `agent_disabled`,
    /// `policy_error` (evaluation failed: closed) or `policy_denied`.
    pub fn refusal_code(&self) -> &'static str {
        match self.code.as_deref() {
            Some("agent_disabled") => "agent_disabled",
            Some("policy_error") => "policy_error",
            _ => "policy_denied",
        }
    }

    /// An allow decision with no policy involved (e.g. unauthenticated development mode).
    pub fn allow_unconditionally(decision_id: String) -> Self {
        Self {
            allowed: true,
            verdict: Verdict::Allow,
            policy: None,
            reasons: Vec::new(),
            code: None,
            decision_id,
            would_deny: Vec::new(),
            evaluations: Vec::new(),
            eval_us: 0,
            cached: false,
            revision: None,
        }
    }
}
