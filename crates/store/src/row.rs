//! One audit record as the store keeps it: [`AuditRow`], and what it adds to the per-minute
//! rollups ([`RollupFacts`]).

use portcullis_core::AuditRecord;
use serde::{Deserialize, Serialize};

/// One audit record as stored: filterable columns plus the full JSON. Serialisable so a
/// record waiting for the store (the audit spool) keeps exactly what will be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Time-ordered unique id (sorts like the time it was issued).
    pub id: String,
    /// Timestamp, Unix milliseconds.
    pub ts_ms: i64,
    /// Tenant of the agent.
    pub tenant: String,
    /// Agent id (`anonymous` in unauthenticated mode).
    pub agent_id: String,
    /// Sub-agent name, if any.
    pub subagent: Option<String>,
    /// `allow`, `deny`, `would_deny`, `rate_limited` or `error`.
    pub verdict: String,
    /// The deciding policy, if any.
    pub policy: Option<String>,
    /// Revision of the policy set that decided, if any.
    pub policy_revision: Option<String>,
    /// LLM provider, when classified.
    pub provider: Option<String>,
    /// LLM model, when classified.
    pub model: Option<String>,
    /// `http`, `connect` or `token`.
    pub kind: String,
    /// HTTP status answered, if a response was sent.
    pub status: Option<u16>,
    /// What the call cost, micro-dollars; `None` when unpriced.
    #[serde(default)]
    pub cost_usd_micros: Option<i64>,
    /// The complete record as a JSON object.
    pub record_json: String,
    /// What the record adds to the per-minute rollups, when the row was built from the
    /// record (`None`: read from `record_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup: Option<RollupFacts>,
}

impl From<AuditRecord> for AuditRow {
    /// The stored form of the one audit record: its filterable fields as columns and the
    /// whole record serialised once (the same JSON every other sink writes).
    fn from(r: AuditRecord) -> Self {
        let record_json = r.to_json();
        let rollup = Some(RollupFacts::of_record(&r));
        AuditRow {
            id: r.id,
            ts_ms: r.ts,
            tenant: r.tenant,
            agent_id: r.agent_id,
            subagent: r.subagent,
            verdict: r.verdict.as_str().to_owned(),
            policy: r.policy,
            policy_revision: r.policy_revision,
            provider: r.provider,
            model: r.model,
            kind: r.kind.as_str().to_owned(),
            status: r.status,
            cost_usd_micros: r
                .cost_usd
                .map(|c| i64::try_from(c.micros()).unwrap_or(i64::MAX)),
            record_json,
            rollup,
        }
    }
}

/// What a stored record adds to the rollups beyond its columns: its total tokens, error and
/// would-deny policies. A row built from a record carries them ([`AuditRow::from`]: no
/// parse); any other row (hand-made, or spooled by an older version) has them read from its
/// JSON, which also checks that the JSON is valid.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RollupFacts {
    #[serde(default)]
    pub(crate) usage: Option<UsageFacts>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) would_deny: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct UsageFacts {
    #[serde(default)]
    pub(crate) total_tokens: Option<u64>,
}

impl RollupFacts {
    /// The facts of `r`, taken from the record itself.
    pub fn of_record(r: &AuditRecord) -> Self {
        Self {
            usage: r.usage.map(|u| UsageFacts {
                total_tokens: u.counts().map(|c| c[4]),
            }),
            error: r.error.clone(),
            would_deny: r.would_deny.clone(),
        }
    }

    /// The facts of one record's JSON, checking that it is JSON at all: `Err` when it is
    /// not. JSON of another shape (hand-made rows, future fields of another type) has no
    /// facts.
    pub(crate) fn of(record_json: &str) -> std::result::Result<Self, ()> {
        match serde_json::from_str::<RollupFacts>(record_json) {
            Ok(f) => Ok(f),
            Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(record_json).is_ok() => {
                Ok(RollupFacts::default())
            }
            Err(_) => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_own_facts_equal_those_read_from_its_json() {
        use portcullis_core::{RequestKind, Usage, Verdict};
        let mut r = AuditRecord::new("r1", 1, "acme", "bot", RequestKind::Http, Verdict::Deny);
        for (usage, error, would_deny) in [
            (None, None, vec![]),
            (
                Some(Usage::provider(40, 2, 8, 1)),
                None,
                vec!["shadow".to_owned()],
            ),
            (Some(Usage::missing(true)), Some("upstream_timeout"), vec![]),
            (
                Some(Usage::provider(0, 0, 0, 0)),
                Some("policy_denied"),
                vec!["a".to_owned(), "b".to_owned()],
            ),
        ] {
            r.usage = usage;
            r.error = error.map(str::to_owned);
            r.would_deny = would_deny;
            let own = RollupFacts::of_record(&r);
            assert_eq!(own, RollupFacts::of(&r.to_json()).unwrap(), "{r:?}");
            // A row built from the record carries them, and the spool keeps them.
            let row = AuditRow::from(r.clone());
            assert_eq!(row.rollup.as_ref(), Some(&own));
            let spooled: AuditRow =
                serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
            assert_eq!(spooled, row);
        }
        assert_eq!(
            RollupFacts::of_record(&r)
                .usage
                .and_then(|u| u.total_tokens),
            Some(0)
        );
    }

    #[test]
    fn facts_come_from_the_record_and_odd_json_has_none() {
        let f = RollupFacts::of(
            r#"{"usage":{"total_tokens":42,"input_tokens":40},"error":"denied",
               "would_deny":["a","b"],"host":"x"}"#,
        )
        .unwrap();
        assert_eq!(f.usage.and_then(|u| u.total_tokens), Some(42));
        assert_eq!(f.error.as_deref(), Some("denied"));
        assert_eq!(f.would_deny, ["a", "b"]);
        assert_eq!(
            RollupFacts::of(r#"{"usage":{"total_tokens":null},"error":null}"#).unwrap(),
            RollupFacts {
                usage: Some(UsageFacts { total_tokens: None }),
                ..RollupFacts::default()
            }
        );
        for odd in [
            "[1,2]",
            "\"text\"",
            r#"{"usage":{"total_tokens":-5}}"#,
            r#"{"would_deny":"strict"}"#,
            r#"{"usage":{"total_tokens":1.5}}"#,
        ] {
            assert_eq!(RollupFacts::of(odd), Ok(RollupFacts::default()), "{odd}");
        }
        assert!(RollupFacts::of("{not json").is_err());
        assert!(RollupFacts::of("").is_err());
    }
}
