//! Per-minute rollups of the audit table (migration 7): what the console's aggregates read.
//!
//! Every batch of records inserted adds, in the same transaction, one row per group
//! (tenant, minute, agent, provider, model, verdict, policy, error code) to `audit_rollup`
//! one per (tenant, minute, shadow policy) to `audit_shadow_rollup` and one per (tenant,
//! minute, agent, sub-agent) to `audit_subagent_rollup`, counting only the
//! records the batch really inserted, so a retried batch counts nothing twice. Absent
//! values are stored as `''` so each group is one row under the unique key. Groups are
//! written in key order, so two writers sharing a PostgreSQL lock rows in the same order
//! and cannot deadlock. Retention removes whole minutes with the records.

use crate::error::{Result, StoreError};
use crate::row::{AuditRow, RollupFacts};
use sqlx::{Database, Encode, QueryBuilder, Type};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

/// One minute in Unix milliseconds.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Verdicts whose records count in the shadow report (shadow denials are recorded on
/// would_deny records, and on records another policy or a limit refused anyway).
pub(crate) const SHADOW_VERDICTS: [&str; 3] = ["would_deny", "deny", "rate_limited"];
/// The `kind` of budget alert records.
const ALERT_KIND: &str = "alert";
/// Groups per upsert statement (10 parameters each).
const GROUPS_PER_UPSERT: usize = 500;

/// The start of the minute `ts_ms` falls in.
pub(crate) fn minute_of(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(MINUTE_MS)
}

/// Every row's facts: carried, or read from its JSON (naming the first row that is not
/// JSON).
pub(crate) fn facts_of(rows: &[AuditRow]) -> Result<Vec<Cow<'_, RollupFacts>>> {
    rows.iter()
        .map(|r| match &r.rollup {
            Some(f) => Ok(Cow::Borrowed(f)),
            None => RollupFacts::of(&r.record_json)
                .map(Cow::Owned)
                .map_err(|()| {
                    StoreError::invalid(
                        "audit record",
                        format!("record {:?} is not valid JSON", r.id),
                    )
                }),
        })
        .collect()
}

/// The key of one `audit_rollup` group.
type GroupKey<'a> = (
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

/// Requests and reported tokens of one group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    requests: i64,
    tokens: i64,
}

/// The rollup rows of a set of inserted records.
#[derive(Debug, Default)]
pub(crate) struct Rollup<'a> {
    groups: BTreeMap<GroupKey<'a>, Counts>,
    shadow: BTreeMap<(&'a str, i64, &'a str), i64>,
    /// (tenant, minute, agent, sub-agent) → (requests, newest ts).
    subagents: BTreeMap<(&'a str, i64, &'a str, &'a str), (i64, i64)>,
}

impl<'a> Rollup<'a> {
    /// Counts `row` (with its `facts`). Budget alerts are records, not requests: they count
    /// nowhere.
    pub(crate) fn add(&mut self, row: &'a AuditRow, facts: &'a RollupFacts) {
        if row.kind == ALERT_KIND {
            return;
        }
        let minute = minute_of(row.ts_ms);
        let key = (
            row.tenant.as_str(),
            minute,
            row.agent_id.as_str(),
            row.provider.as_deref().unwrap_or(""),
            row.model.as_deref().unwrap_or(""),
            row.verdict.as_str(),
            row.policy.as_deref().unwrap_or(""),
            facts.error.as_deref().unwrap_or(""),
        );
        let c = self.groups.entry(key).or_default();
        c.requests += 1;
        let tokens = facts
            .usage
            .as_ref()
            .and_then(|u| u.total_tokens)
            .unwrap_or(0);
        c.tokens = c
            .tokens
            .saturating_add(i64::try_from(tokens).unwrap_or(i64::MAX));
        if let Some(sub) = &row.subagent {
            let seen = self
                .subagents
                .entry((
                    row.tenant.as_str(),
                    minute,
                    row.agent_id.as_str(),
                    sub.as_str(),
                ))
                .or_insert((0, row.ts_ms));
            seen.0 += 1;
            seen.1 = seen.1.max(row.ts_ms);
        }
        if SHADOW_VERDICTS.contains(&row.verdict.as_str()) {
            // A policy named twice in one record is one would-be denial.
            let mut seen = HashSet::new();
            for p in &facts.would_deny {
                if seen.insert(p.as_str()) {
                    *self
                        .shadow
                        .entry((row.tenant.as_str(), minute, p.as_str()))
                        .or_default() += 1;
                }
            }
        }
    }

    /// Counts the rows of `rows` whose id is in `inserted` (all of them when `inserted` is
    /// `None`).
    pub(crate) fn add_inserted(
        &mut self,
        rows: &'a [AuditRow],
        facts: &'a [Cow<'a, RollupFacts>],
        inserted: Option<&HashSet<String>>,
    ) {
        for (row, f) in rows.iter().zip(facts) {
            if inserted.is_none_or(|ids| ids.contains(&row.id)) {
                self.add(row, f.as_ref());
            }
        }
    }

    /// The statements adding the counted groups to the rollup tables, for the caller to run
    /// in the transaction that inserted the records (none when nothing was counted).
    pub(crate) fn upserts<DB>(&self) -> Vec<QueryBuilder<'a, DB>>
    where
        DB: Database,
        &'a str: Encode<'a, DB> + Type<DB>,
        i64: Encode<'a, DB> + Type<DB>,
    {
        let mut out = Vec::new();
        let groups: Vec<_> = self.groups.iter().map(|(k, c)| (*k, *c)).collect();
        for chunk in groups.chunks(GROUPS_PER_UPSERT) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO audit_rollup (tenant, minute, agent_id, provider, model, verdict, \
                 policy, error, requests, tokens) ",
            );
            qb.push_values(chunk.iter().copied(), |mut b, (k, c)| {
                b.push_bind(k.0)
                    .push_bind(k.1)
                    .push_bind(k.2)
                    .push_bind(k.3)
                    .push_bind(k.4)
                    .push_bind(k.5)
                    .push_bind(k.6)
                    .push_bind(k.7)
                    .push_bind(c.requests)
                    .push_bind(c.tokens);
            });
            qb.push(
                " ON CONFLICT (tenant, minute, agent_id, provider, model, verdict, policy, error) \
                 DO UPDATE SET requests = audit_rollup.requests + excluded.requests, \
                 tokens = audit_rollup.tokens + excluded.tokens",
            );
            out.push(qb);
        }
        let shadow: Vec<_> = self.shadow.iter().map(|(k, n)| (*k, *n)).collect();
        for chunk in shadow.chunks(GROUPS_PER_UPSERT) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO audit_shadow_rollup (tenant, minute, policy, requests) ",
            );
            qb.push_values(chunk.iter().copied(), |mut b, (k, n)| {
                b.push_bind(k.0).push_bind(k.1).push_bind(k.2).push_bind(n);
            });
            qb.push(
                " ON CONFLICT (tenant, minute, policy) DO UPDATE SET \
                 requests = audit_shadow_rollup.requests + excluded.requests",
            );
            out.push(qb);
        }
        let subagents: Vec<_> = self.subagents.iter().map(|(k, v)| (*k, *v)).collect();
        for chunk in subagents.chunks(GROUPS_PER_UPSERT) {
            let mut qb = QueryBuilder::<DB>::new(
                "INSERT INTO audit_subagent_rollup (tenant, minute, agent_id, subagent, requests, \
                 last_ts) ",
            );
            qb.push_values(chunk.iter().copied(), |mut b, (k, (n, last))| {
                b.push_bind(k.0)
                    .push_bind(k.1)
                    .push_bind(k.2)
                    .push_bind(k.3)
                    .push_bind(n)
                    .push_bind(last);
            });
            // CASE rather than MAX/GREATEST: one spelling for both dialects.
            qb.push(
                " ON CONFLICT (tenant, minute, agent_id, subagent) DO UPDATE SET \
                 requests = audit_subagent_rollup.requests + excluded.requests, \
                 last_ts = CASE WHEN excluded.last_ts > audit_subagent_rollup.last_ts \
                 THEN excluded.last_ts ELSE audit_subagent_rollup.last_ts END",
            );
            out.push(qb);
        }
        out
    }
}

/// The statements deleting the rollups of every whole minute before a cut-off: bind the
/// cut-off's [`last_pruned_minute`] to each. Minute m holds records of [m, m + 1 min), gone
/// entirely once m + 1 min <= the cut-off.
pub(crate) const PRUNE: [&str; 3] = [
    "DELETE FROM audit_rollup WHERE minute <= $1",
    "DELETE FROM audit_shadow_rollup WHERE minute <= $1",
    "DELETE FROM audit_subagent_rollup WHERE minute <= $1",
];

/// The newest minute whose records are all older than `cutoff_ms`.
pub(crate) fn last_pruned_minute(cutoff_ms: i64) -> i64 {
    cutoff_ms.saturating_sub(MINUTE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, ts_ms: i64, verdict: &str, json: &str) -> AuditRow {
        AuditRow {
            id: id.to_owned(),
            ts_ms,
            tenant: "acme".to_owned(),
            agent_id: "bot".to_owned(),
            subagent: None,
            verdict: verdict.to_owned(),
            policy: None,
            policy_revision: None,
            provider: Some("openai".to_owned()),
            model: Some("gpt-4o".to_owned()),
            kind: "http".to_owned(),
            status: Some(200),
            record_json: json.to_owned(),
            cost_usd_micros: None,
            rollup: None,
        }
    }

    #[test]
    fn minutes_floor_whatever_the_sign() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(59_999), 0);
        assert_eq!(minute_of(60_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }

    #[test]
    fn groups_sum_per_minute_and_count_only_inserted_rows() {
        let rows = [
            row("1", 1_000, "allow", r#"{"usage":{"total_tokens":10}}"#),
            row("2", 59_000, "allow", r#"{"usage":{"total_tokens":5}}"#),
            row("3", 61_000, "allow", r#"{"usage":{"total_tokens":7}}"#),
            row(
                "4",
                62_000,
                "would_deny",
                r#"{"usage":null,"would_deny":["strict","strict","pii"]}"#,
            ),
            row("5", 62_500, "allow", r#"{"would_deny":["ignored"]}"#),
        ];
        let facts = facts_of(&rows).unwrap();
        let mut all = Rollup::default();
        all.add_inserted(&rows, &facts, None);
        let key = |minute, verdict| ("acme", minute, "bot", "openai", "gpt-4o", verdict, "", "");
        assert_eq!(
            all.groups.get(&key(0, "allow")),
            Some(&Counts {
                requests: 2,
                tokens: 15
            })
        );
        assert_eq!(
            all.groups.get(&key(60_000, "allow")),
            Some(&Counts {
                requests: 2,
                tokens: 7
            })
        );
        assert_eq!(
            all.groups.get(&key(60_000, "would_deny")),
            Some(&Counts {
                requests: 1,
                tokens: 0
            })
        );
        assert_eq!(
            all.shadow.iter().collect::<Vec<_>>(),
            [
                (&("acme", 60_000, "pii"), &1),
                (&("acme", 60_000, "strict"), &1)
            ],
            "a shadow policy counts once per record, allowed records not at all"
        );
        let inserted: HashSet<String> = ["2".to_owned()].into();
        let mut some = Rollup::default();
        some.add_inserted(&rows, &facts, Some(&inserted));
        assert_eq!(
            some.groups.into_iter().collect::<Vec<_>>(),
            [(
                key(0, "allow"),
                Counts {
                    requests: 1,
                    tokens: 5
                }
            )]
        );
        assert!(some.shadow.is_empty());
        let mut alert = row("a", 0, "allow", r#"{"usage":{"total_tokens":3}}"#);
        alert.kind = "alert".to_owned();
        let mut none = Rollup::default();
        none.add(&alert, &facts[0]);
        assert!(none.groups.is_empty(), "an alert is not a request");
        let mut rows = rows.to_vec();
        rows[0].subagent = Some("planner".to_owned());
        rows[1].subagent = Some("planner".to_owned());
        rows[2].subagent = Some("planner".to_owned());
        let mut subs = Rollup::default();
        subs.add_inserted(&rows, &facts, None);
        assert_eq!(
            subs.subagents.into_iter().collect::<Vec<_>>(),
            [
                (("acme", 0, "bot", "planner"), (2, 59_000)),
                (("acme", 60_000, "bot", "planner"), (1, 61_000))
            ]
        );
    }

    #[test]
    fn a_row_whose_json_is_not_json_is_named() {
        let mut carried = row("c", 0, "allow", "{");
        carried.rollup = Some(RollupFacts::default());
        let rows = [row("a", 0, "allow", "{}"), carried.clone()];
        // A row built from a record carries its facts: its JSON is the gateway's own.
        assert_eq!(facts_of(&rows).map(|f| f.len()).ok(), Some(2));
        let rows = [row("a", 0, "allow", "{}"), row("b", 0, "allow", "{")];
        let e = facts_of(&rows).unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{e:?}");
        assert!(e.to_string().contains("\"b\""), "{e}");
    }
}
