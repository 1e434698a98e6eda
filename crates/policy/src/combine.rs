//! Deny-overrides combination of per-policy results into one decision (DESIGN §4).

use crate::binding::DefaultDecision;
use portcullis_core::{AgentMode, Decision, Evaluation, PolicyMode, Verdict};

/// Code of a policy denial.
pub const CODE_POLICY_DENIED: &str = "policy_denied";
/// Code of a denial caused by an evaluation error or undefined result (fail closed).
pub const CODE_POLICY_ERROR: &str = "policy_error";
/// Code of a request by a disabled agent.
pub const CODE_AGENT_DISABLED: &str = "agent_disabled";

/// One policy's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyResult {
    /// Evaluated: whether it allows, and its deny reasons (sorted, deduplicated).
    Evaluated {
        /// `allow` was true.
        allow: bool,
        /// `deny` reasons.
        deny: Vec<String>,
    },
    /// Evaluation failed or produced an undefined/ill-typed result.
    Error(String),
}

/// A policy that applies to the request, with its effective mode (active or shadow).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Policy name.
    pub name: String,
    /// Effective mode (never `disabled`: disabled policies are not applied).
    pub mode: PolicyMode,
    /// Result.
    pub result: PolicyResult,
}

/// A decision without its per-request fields (`decision_id`, `eval_us`, `cached`).
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// The decision with empty id, zero time, not cached.
    pub decision: Decision,
    /// Whether any applied policy (active or shadow) failed to evaluate.
    pub policy_error: bool,
}

/// Combines per-policy results. `applied` must be in a deterministic order (policy name).
pub fn combine(applied: &[Applied], agent_mode: AgentMode, default: DefaultDecision) -> Combined {
    if agent_mode == AgentMode::Disabled {
        return Combined {
            decision: decision(
                false,
                Verdict::Deny,
                None,
                vec!["agent is disabled".to_owned()],
                Some(CODE_AGENT_DISABLED),
                Vec::new(),
                Vec::new(),
            ),
            policy_error: false,
        };
    }
    let evaluations: Vec<Evaluation> = applied
        .iter()
        .map(|a| match &a.result {
            PolicyResult::Evaluated { allow, deny } => Evaluation {
                policy: a.name.clone(),
                mode: a.mode,
                allow: *allow,
                deny: deny.clone(),
            },
            PolicyResult::Error(e) => Evaluation {
                policy: a.name.clone(),
                mode: a.mode,
                allow: false,
                deny: vec![format!("policy error: {e}")],
            },
        })
        .collect();
    let policy_error = applied
        .iter()
        .any(|a| matches!(a.result, PolicyResult::Error(_)));

    let active: Vec<&Applied> = applied
        .iter()
        .filter(|a| a.mode == PolicyMode::Active)
        .collect();
    let mut would_deny = Vec::new();
    let mut shadow_reasons = Vec::new();
    for a in applied.iter().filter(|a| a.mode == PolicyMode::Shadow) {
        match &a.result {
            PolicyResult::Evaluated { deny, .. } if !deny.is_empty() => {
                would_deny.push(a.name.clone());
                shadow_reasons.extend(deny.iter().cloned());
            }
            PolicyResult::Error(e) => {
                would_deny.push(a.name.clone());
                shadow_reasons.push(format!("policy error: {e}"));
            }
            PolicyResult::Evaluated { .. } => {}
        }
    }

    // Enforced outcome: errors first (fail closed), then denials, then allows, then default.
    let errored: Vec<&Applied> = active
        .iter()
        .copied()
        .filter(|a| matches!(a.result, PolicyResult::Error(_)))
        .collect();
    let denying: Vec<&Applied> = active
        .iter()
        .copied()
        .filter(|a| matches!(&a.result, PolicyResult::Evaluated { deny, .. } if !deny.is_empty()))
        .collect();
    let (allowed, policy, mut reasons, code) = if !errored.is_empty() {
        let reasons = errored
            .iter()
            .map(|a| match &a.result {
                PolicyResult::Error(e) => format!("policy {} failed: {e}", a.name),
                PolicyResult::Evaluated { .. } => String::new(),
            })
            .collect();
        (
            false,
            Some(errored[0].name.clone()),
            reasons,
            Some(CODE_POLICY_ERROR),
        )
    } else if !denying.is_empty() {
        let reasons = denying
            .iter()
            .flat_map(|a| match &a.result {
                PolicyResult::Evaluated { deny, .. } => deny.clone(),
                PolicyResult::Error(_) => Vec::new(),
            })
            .collect();
        (
            false,
            Some(denying[0].name.clone()),
            reasons,
            Some(CODE_POLICY_DENIED),
        )
    } else if active.is_empty() {
        match default {
            DefaultDecision::Allow => (true, None, Vec::new(), None),
            DefaultDecision::Deny => (
                false,
                None,
                vec!["no policy applies to this request (default deny)".to_owned()],
                Some(CODE_POLICY_DENIED),
            ),
        }
    } else if let Some(a) = active
        .iter()
        .find(|a| matches!(a.result, PolicyResult::Evaluated { allow: true, .. }))
    {
        (true, Some(a.name.clone()), Vec::new(), None)
    } else {
        (
            false,
            None,
            vec!["no policy allows this request".to_owned()],
            Some(CODE_POLICY_DENIED),
        )
    };

    let mut d = if allowed {
        if would_deny.is_empty() {
            decision(
                true,
                Verdict::Allow,
                policy,
                Vec::new(),
                None,
                Vec::new(),
                evaluations,
            )
        } else {
            let first = would_deny.first().cloned();
            decision(
                true,
                Verdict::WouldDeny,
                first,
                shadow_reasons,
                None,
                would_deny,
                evaluations,
            )
        }
    } else {
        reasons.sort();
        reasons.dedup();
        decision(
            false,
            Verdict::Deny,
            policy,
            reasons,
            code,
            would_deny,
            evaluations,
        )
    };
    if agent_mode == AgentMode::Shadow && !d.allowed {
        d.allowed = true;
        d.verdict = Verdict::WouldDeny;
    }
    Combined {
        decision: d,
        policy_error,
    }
}

fn decision(
    allowed: bool,
    verdict: Verdict,
    policy: Option<String>,
    mut reasons: Vec<String>,
    code: Option<&str>,
    would_deny: Vec<String>,
    evaluations: Vec<Evaluation>,
) -> Decision {
    reasons.sort();
    reasons.dedup();
    Decision {
        allowed,
        verdict,
        policy,
        reasons,
        code: code.map(str::to_owned),
        decision_id: String::new(),
        would_deny,
        evaluations,
        eval_us: 0,
        cached: false,
        revision: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PolicyMode::{Active, Shadow};

    fn ok(name: &str, mode: PolicyMode, allow: bool, deny: &[&str]) -> Applied {
        Applied {
            name: name.into(),
            mode,
            result: PolicyResult::Evaluated {
                allow,
                deny: deny.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    fn err(name: &str, mode: PolicyMode) -> Applied {
        Applied {
            name: name.into(),
            mode,
            result: PolicyResult::Error("boom".into()),
        }
    }

    fn run(applied: &[Applied]) -> Decision {
        combine(applied, AgentMode::Active, DefaultDecision::Deny).decision
    }

    #[test]
    fn combination_table() {
        // (case, applied, allowed, verdict, policy, code)
        type Case = (
            &'static str,
            Vec<Applied>,
            bool,
            Verdict,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "single allow",
                vec![ok("a", Active, true, &[])],
                true,
                Verdict::Allow,
                Some("a"),
                None,
            ),
            (
                "allow and deny: deny overrides",
                vec![ok("a", Active, true, &[]), ok("b", Active, false, &["no"])],
                false,
                Verdict::Deny,
                Some("b"),
                Some(CODE_POLICY_DENIED),
            ),
            (
                "a policy allowing and denying itself",
                vec![ok("a", Active, true, &["no"])],
                false,
                Verdict::Deny,
                Some("a"),
                Some(CODE_POLICY_DENIED),
            ),
            (
                "nobody allows",
                vec![ok("a", Active, false, &[])],
                false,
                Verdict::Deny,
                None,
                Some(CODE_POLICY_DENIED),
            ),
            (
                "none applicable, default deny",
                vec![],
                false,
                Verdict::Deny,
                None,
                Some(CODE_POLICY_DENIED),
            ),
            (
                "shadow deny on allow",
                vec![
                    ok("a", Active, true, &[]),
                    ok("s", Shadow, false, &["risky"]),
                ],
                true,
                Verdict::WouldDeny,
                Some("s"),
                None,
            ),
            (
                "shadow allow never allows",
                vec![ok("a", Active, false, &[]), ok("s", Shadow, true, &[])],
                false,
                Verdict::Deny,
                None,
                Some(CODE_POLICY_DENIED),
            ),
            (
                "only shadow policies: default applies",
                vec![ok("s", Shadow, true, &[])],
                false,
                Verdict::Deny,
                None,
                Some(CODE_POLICY_DENIED),
            ),
            (
                "active error fails closed",
                vec![ok("a", Active, true, &[]), err("e", Active)],
                false,
                Verdict::Deny,
                Some("e"),
                Some(CODE_POLICY_ERROR),
            ),
            (
                "shadow error is would_deny",
                vec![ok("a", Active, true, &[]), err("e", Shadow)],
                true,
                Verdict::WouldDeny,
                Some("e"),
                None,
            ),
        ];
        for (name, applied, allowed, verdict, policy, code) in cases {
            let d = run(&applied);
            assert_eq!(d.allowed, allowed, "{name}");
            assert_eq!(d.verdict, verdict, "{name}");
            assert_eq!(d.policy.as_deref(), policy, "{name}");
            assert_eq!(d.code.as_deref(), code, "{name}");
            assert_eq!(d.evaluations.len(), applied.len(), "{name}");
        }
    }

    #[test]
    fn default_allow_only_when_no_active_policy() {
        let d = combine(&[], AgentMode::Active, DefaultDecision::Allow).decision;
        assert!(d.allowed);
        assert_eq!(d.verdict, Verdict::Allow);
        let d = combine(
            &[ok("a", Active, false, &[])],
            AgentMode::Active,
            DefaultDecision::Allow,
        )
        .decision;
        assert!(
            !d.allowed,
            "an applicable policy that does not allow is a deny"
        );
    }

    #[test]
    fn reasons_are_sorted_and_merged_across_denying_policies() {
        let d = run(&[
            ok("b", Active, false, &["z", "m"]),
            ok("c", Active, false, &["a", "m"]),
            ok("s", Shadow, false, &["shadowed"]),
        ]);
        assert_eq!(d.reasons, vec!["a", "m", "z"]);
        assert_eq!(d.policy.as_deref(), Some("b"));
        assert_eq!(d.would_deny, vec!["s"]);
    }

    #[test]
    fn agent_modes() {
        let deny = [ok("a", Active, false, &["no"])];
        let d = combine(&deny, AgentMode::Shadow, DefaultDecision::Deny).decision;
        assert!(d.allowed);
        assert_eq!(d.verdict, Verdict::WouldDeny);
        assert_eq!(d.reasons, vec!["no"]);
        let d = combine(
            &[err("e", Active)],
            AgentMode::Shadow,
            DefaultDecision::Deny,
        );
        assert!(d.decision.allowed && d.policy_error);
        let allow = [ok("a", Active, true, &[])];
        let d = combine(&allow, AgentMode::Disabled, DefaultDecision::Allow).decision;
        assert!(!d.allowed);
        assert_eq!(d.code.as_deref(), Some(CODE_AGENT_DISABLED));
        assert!(d.evaluations.is_empty());
    }
}
