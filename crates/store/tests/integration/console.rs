//! The console's queries (keyset pages, capped counts, series, top lists, refusals, the
//! shadow report, agent activity, sub-agents seen) and console sessions, on both backends:
//! exact rows, tenant scoping, the JSON fields read from the stored record.

use portcullis_store::{
    AgentActivity, AuditRow, ConsoleSession, Cursor, Dimension, RefusalRow, RequestFilter, Role,
    Scope, ShadowRow, Store, StoreError, SubagentSeen, TokenBucket, TopRow, VerdictBucket,
};
use serde_json::{json, Value};

crate::both_backends!(
    requests_page_newest_first_by_keyset_with_every_filter,
    scopes_keep_tenants_apart,
    counts_are_capped,
    series_bucket_requests_and_tokens,
    top_lists_and_refusals_group_exactly,
    shadow_report_counts_would_be_denials_with_newest_examples,
    agent_activity_and_subagents_seen,
    sessions_live_until_idle_expiry_or_revocation,
    sessions_are_deleted_and_pruned,
);

/// 2026-01-01T00:00:00Z in ms.
pub(crate) const T: i64 = 1_767_225_600_000;

/// One stored record; the JSON carries what the columns do not (host, usage, error,
/// would_deny), as the gateway writes it.
pub(crate) struct Rec {
    pub(crate) id: &'static str,
    pub(crate) ts: i64,
    pub(crate) tenant: &'static str,
    pub(crate) agent: &'static str,
    pub(crate) subagent: Option<&'static str>,
    pub(crate) verdict: &'static str,
    pub(crate) policy: Option<&'static str>,
    pub(crate) provider: Option<&'static str>,
    pub(crate) model: Option<&'static str>,
    pub(crate) host: &'static str,
    pub(crate) status: u16,
    pub(crate) tokens: Option<u64>,
    pub(crate) error: Option<&'static str>,
    pub(crate) would_deny: &'static [&'static str],
}

impl Rec {
    pub(crate) fn row(&self) -> AuditRow {
        let usage = match self.tokens {
            Some(t) => json!({"input_tokens": t, "output_tokens": 0, "total_tokens": t,
                "source": "provider"}),
            None if self.provider.is_some() => json!({"input_tokens": null,
                "output_tokens": null, "total_tokens": null, "source": "missing"}),
            None => Value::Null,
        };
        let record = json!({
            "id": self.id, "ts": self.ts, "tenant": self.tenant, "agent_id": self.agent,
            "subagent": self.subagent, "verdict": self.verdict, "policy": self.policy,
            "provider": self.provider, "model": self.model, "host": self.host,
            "path": "/v1/x?q=\"'<script>", "status": self.status, "usage": usage,
            "error": self.error, "would_deny": self.would_deny, "kind": "http",
        });
        AuditRow {
            id: self.id.to_owned(),
            ts_ms: self.ts,
            tenant: self.tenant.to_owned(),
            agent_id: self.agent.to_owned(),
            subagent: self.subagent.map(str::to_owned),
            verdict: self.verdict.to_owned(),
            policy: self.policy.map(str::to_owned),
            policy_revision: None,
            provider: self.provider.map(str::to_owned),
            model: self.model.map(str::to_owned),
            kind: "http".to_owned(),
            status: Some(self.status),
            cost_usd_micros: None,
            rollup: None,
            record_json: record.to_string(),
        }
    }
}

pub(crate) const BASE: Rec = Rec {
    id: "",
    ts: T,
    tenant: "acme",
    agent: "alpha",
    subagent: None,
    verdict: "allow",
    policy: None,
    provider: Some("openai"),
    model: Some("gpt-4o"),
    host: "api.openai.com",
    status: 200,
    tokens: None,
    error: None,
    would_deny: &[],
};

pub(crate) fn fixture() -> Vec<AuditRow> {
    [
        Rec {
            id: "a1",
            ts: T + 1_000,
            tokens: Some(100),
            ..BASE
        },
        Rec {
            id: "a2",
            ts: T + 2_000,
            subagent: Some("planner"),
            verdict: "deny",
            policy: Some("block_pii"),
            status: 403,
            would_deny: &["beta_rules"],
            ..BASE
        },
        Rec {
            id: "a3",
            ts: T + 3_000,
            agent: "beta",
            verdict: "would_deny",
            policy: Some("beta_rules"),
            provider: Some("anthropic"),
            model: Some("claude"),
            host: "api.anthropic.com",
            tokens: Some(50),
            would_deny: &["beta_rules"],
            ..BASE
        },
        Rec {
            id: "a4",
            ts: T + 3_000,
            agent: "beta",
            subagent: Some("planner"),
            verdict: "rate_limited",
            provider: None,
            model: None,
            host: "pypi.org",
            status: 429,
            error: Some("rate_limited"),
            would_deny: &["strict"],
            ..BASE
        },
        Rec {
            id: "a5",
            ts: T + 61_000,
            verdict: "error",
            status: 502,
            error: Some("upstream_unreachable"),
            ..BASE
        },
        Rec {
            id: "a6",
            ts: T + 62_000,
            agent: "gamma",
            provider: None,
            model: None,
            host: "pypi.org",
            ..BASE
        },
        Rec {
            id: "g1",
            ts: T + 2_500,
            tenant: "globex",
            agent: "rival",
            verdict: "deny",
            policy: Some("block_pii"),
            status: 403,
            tokens: Some(7),
            would_deny: &["beta_rules"],
            ..BASE
        },
        Rec {
            id: "u1",
            ts: T + 4_000,
            tenant: "",
            agent: "",
            verdict: "deny",
            provider: None,
            model: None,
            host: "evil.example",
            status: 407,
            error: Some("proxy_auth_required"),
            ..BASE
        },
    ]
    .iter()
    .map(Rec::row)
    .collect()
}

async fn filled(s: &Store) -> Result<(), StoreError> {
    assert_eq!(s.insert_audit_batch(&fixture()).await?, 8);
    Ok(())
}

pub(crate) fn acme() -> Scope {
    Scope {
        tenant: Some("acme".to_owned()),
        include_unattributed: false,
    }
}

fn since_t() -> RequestFilter {
    RequestFilter {
        since_ms: T,
        ..Default::default()
    }
}

async fn ids(s: &Store, scope: &Scope, f: &RequestFilter) -> Result<Vec<String>, StoreError> {
    let page = s.console_requests(scope, f, None, 100).await?;
    Ok(page
        .iter()
        .map(|r| {
            assert_eq!(r.record["id"].as_str(), Some(r.cursor.id.as_str()));
            r.cursor.id.clone()
        })
        .collect())
}

fn some(v: &str) -> Option<String> {
    Some(v.to_owned())
}

async fn requests_page_newest_first_by_keyset_with_every_filter(
    s: Store,
) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    let all = since_t();
    // Ties on ts are broken by id, newest (greatest) first.
    assert_eq!(
        ids(&s, &sc, &all).await?,
        ["a6", "a5", "a4", "a3", "a2", "a1"]
    );

    // Keyset pages tile the result: the cursor of a page's last row starts the next.
    let first = s.console_requests(&sc, &all, None, 3).await?;
    let got: Vec<&str> = first.iter().map(|r| r.cursor.id.as_str()).collect();
    assert_eq!(got, ["a6", "a5", "a4"]);
    assert_eq!(
        first[2].cursor,
        Cursor {
            ts_ms: T + 3_000,
            id: "a4".to_owned()
        }
    );
    let second = s
        .console_requests(&sc, &all, Some(&first[2].cursor), 3)
        .await?;
    let got: Vec<&str> = second.iter().map(|r| r.cursor.id.as_str()).collect();
    assert_eq!(got, ["a3", "a2", "a1"]);
    assert!(s
        .console_requests(&sc, &all, Some(&second[2].cursor), 3)
        .await?
        .is_empty());
    // The record comes back verbatim, attacker-controlled text included.
    assert_eq!(second[0].record["path"], json!("/v1/x?q=\"'<script>"));
    assert_eq!(second[0].record["usage"]["total_tokens"], json!(50));

    let cases: Vec<(RequestFilter, Vec<&str>)> = vec![
        (
            RequestFilter {
                host: some("pypi.org"),
                ..since_t()
            },
            vec!["a6", "a4"],
        ),
        (
            RequestFilter {
                status: Some(429),
                ..since_t()
            },
            vec!["a4"],
        ),
        (
            RequestFilter {
                subagent: some("planner"),
                ..since_t()
            },
            vec!["a4", "a2"],
        ),
        (
            RequestFilter {
                verdict: some("deny"),
                ..since_t()
            },
            vec!["a2"],
        ),
        (
            RequestFilter {
                policy: some("block_pii"),
                ..since_t()
            },
            vec!["a2"],
        ),
        (
            RequestFilter {
                agent_id: some("beta"),
                ..since_t()
            },
            vec!["a4", "a3"],
        ),
        (
            RequestFilter {
                provider: some("openai"),
                model: some("gpt-4o"),
                ..since_t()
            },
            vec!["a5", "a2", "a1"],
        ),
        (
            RequestFilter {
                since_ms: T + 2_000,
                until_ms: Some(T + 61_000),
                ..Default::default()
            },
            vec!["a4", "a3", "a2"],
        ),
        (
            RequestFilter {
                host: some("pypi.org' OR '1'='1"),
                ..since_t()
            },
            vec![],
        ),
    ];
    for (f, want) in cases {
        assert_eq!(ids(&s, &sc, &f).await?, want, "{f:?}");
    }
    // The page size is capped.
    let many: Vec<AuditRow> = (0..600)
        .map(|i| {
            let id: &'static str = Box::leak(format!("m{i:04}").into_boxed_str());
            Rec {
                id,
                ts: T + 100_000 + i,
                ..BASE
            }
            .row()
        })
        .collect();
    assert_eq!(s.insert_audit_batch(&many).await?, 600);
    assert_eq!(
        s.console_requests(&sc, &all, None, 10_000).await?.len(),
        500
    );
    Ok(())
}

async fn scopes_keep_tenants_apart(s: Store) -> Result<(), StoreError> {
    filled(&s).await?;
    let all = since_t();
    let globex = Scope {
        tenant: some("globex"),
        include_unattributed: false,
    };
    assert_eq!(ids(&s, &globex, &all).await?, ["g1"]);
    let platform = Scope {
        tenant: some("acme"),
        include_unattributed: true,
    };
    assert_eq!(
        ids(&s, &platform, &all).await?,
        ["a6", "a5", "u1", "a4", "a3", "a2", "a1"]
    );
    assert_eq!(ids(&s, &Scope::default(), &all).await?.len(), 8);
    let nobody = Scope {
        tenant: some("initech"),
        include_unattributed: false,
    };
    assert!(ids(&s, &nobody, &all).await?.is_empty());
    assert_eq!(
        s.console_top(&globex, T, T + 120_000, Dimension::Agent, 10)
            .await?,
        [TopRow {
            key: "rival".to_owned(),
            requests: 1,
            tokens: 7,
            refused: 1
        }]
    );
    let shadow = s.console_shadow(&globex, T, T + 120_000, 5).await?;
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0].examples[0]["id"], json!("g1"));
    Ok(())
}

async fn counts_are_capped(s: Store) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    assert_eq!(s.console_count(&sc, &since_t(), 100).await?, 6);
    assert_eq!(s.console_count(&sc, &since_t(), 4).await?, 4);
    assert_eq!(s.console_count(&sc, &since_t(), 0).await?, 0);
    assert_eq!(s.console_count(&sc, &since_t(), u64::MAX).await?, 6);
    let pypi = RequestFilter {
        host: some("pypi.org"),
        ..since_t()
    };
    assert_eq!(s.console_count(&sc, &pypi, 100).await?, 2);
    Ok(())
}

async fn series_bucket_requests_and_tokens(s: Store) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    let mut verdicts = s
        .console_verdict_series(&sc, T, T + 120_000, 60_000)
        .await?;
    verdicts.sort_by(|a, b| (a.start_ms, &a.verdict).cmp(&(b.start_ms, &b.verdict)));
    let vb = |start_ms: i64, verdict: &str| VerdictBucket {
        start_ms,
        verdict: verdict.to_owned(),
        requests: 1,
    };
    assert_eq!(
        verdicts,
        [
            vb(T, "allow"),
            vb(T, "deny"),
            vb(T, "rate_limited"),
            vb(T, "would_deny"),
            vb(T + 60_000, "allow"),
            vb(T + 60_000, "error"),
        ]
    );

    let mut tokens = s
        .console_token_series(&sc, T, T + 120_000, 60_000, Dimension::Model)
        .await?;
    tokens.sort_by(|a, b| (a.start_ms, &a.key).cmp(&(b.start_ms, &b.key)));
    let tb = |start_ms: i64, key: &str, tokens: u64, requests: u64| TokenBucket {
        start_ms,
        key: key.to_owned(),
        tokens,
        requests,
    };
    // Only LLM requests; a record without reported usage adds no tokens.
    assert_eq!(
        tokens,
        [
            tb(T, "claude", 50, 1),
            tb(T, "gpt-4o", 100, 2),
            tb(T + 60_000, "gpt-4o", 0, 1),
        ]
    );
    let by_agent = s
        .console_token_series(&sc, T, T + 60_000, 60_000, Dimension::Agent)
        .await?;
    let mut by_agent: Vec<_> = by_agent
        .into_iter()
        .map(|b| (b.key, b.tokens, b.requests))
        .collect();
    by_agent.sort();
    assert_eq!(
        by_agent,
        [("alpha".to_owned(), 100, 2), ("beta".to_owned(), 50, 1)]
    );
    assert!(matches!(
        s.console_verdict_series(&sc, T, T + 1, 0).await,
        Err(StoreError::Invalid { .. })
    ));
    Ok(())
}

async fn top_lists_and_refusals_group_exactly(s: Store) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    let top = |key: &str, requests: u64, tokens: u64, refused: u64| TopRow {
        key: key.to_owned(),
        requests,
        tokens,
        refused,
    };
    assert_eq!(
        s.console_top(&sc, T, T + 120_000, Dimension::Agent, 10)
            .await?,
        [
            top("alpha", 3, 100, 2),
            top("beta", 2, 50, 1),
            top("gamma", 1, 0, 0)
        ]
    );
    assert_eq!(
        s.console_top(&sc, T, T + 120_000, Dimension::Agent, 1)
            .await?,
        [top("alpha", 3, 100, 2)]
    );
    assert_eq!(
        s.console_top(&sc, T, T + 120_000, Dimension::Provider, 10)
            .await?,
        [top("openai", 3, 100, 2), top("anthropic", 1, 50, 0)]
    );
    assert_eq!(
        s.console_top(&sc, T, T + 120_000, Dimension::Model, 10)
            .await?,
        [top("gpt-4o", 3, 100, 2), top("claude", 1, 50, 0)]
    );

    let mut refusals = s.console_refusals(&sc, T, T + 120_000, 10).await?;
    refusals.sort_by(|a, b| a.verdict.cmp(&b.verdict));
    let refusal = |verdict: &str, policy: Option<&str>, code: Option<&str>| RefusalRow {
        verdict: verdict.to_owned(),
        policy: policy.map(str::to_owned),
        code: code.map(str::to_owned),
        count: 1,
    };
    assert_eq!(
        refusals,
        [
            refusal("deny", Some("block_pii"), None),
            refusal("error", None, Some("upstream_unreachable")),
            refusal("rate_limited", None, Some("rate_limited")),
        ]
    );
    let platform = Scope {
        tenant: some("acme"),
        include_unattributed: true,
    };
    let refusals = s.console_refusals(&platform, T, T + 120_000, 10).await?;
    assert_eq!(refusals.len(), 4);
    assert!(refusals.contains(&refusal("deny", None, Some("proxy_auth_required"))));
    Ok(())
}

async fn shadow_report_counts_would_be_denials_with_newest_examples(
    s: Store,
) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    let report = s.console_shadow(&sc, T, T + 120_000, 5).await?;
    let summary: Vec<(String, u64, Vec<Value>)> = report
        .iter()
        .map(|r: &ShadowRow| {
            let ex = r.examples.iter().map(|e| e["id"].clone()).collect();
            (r.policy.clone(), r.count, ex)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("beta_rules".to_owned(), 2, vec![json!("a3"), json!("a2")]),
            ("strict".to_owned(), 1, vec![json!("a4")]),
        ]
    );
    let one = s.console_shadow(&sc, T, T + 120_000, 1).await?;
    assert_eq!(one[0].examples.len(), 1);
    assert_eq!(one[0].examples[0]["id"], json!("a3"));
    assert!(s
        .console_shadow(&sc, T + 60_000, T + 120_000, 5)
        .await?
        .is_empty());
    Ok(())
}

async fn agent_activity_and_subagents_seen(s: Store) -> Result<(), StoreError> {
    filled(&s).await?;
    let sc = acme();
    let act = |requests_last_minute: u64, tokens_today: u64| AgentActivity {
        requests_last_minute,
        tokens_today,
    };
    assert_eq!(
        s.console_agent_activity(&sc, T + 60_000, T).await?,
        [
            ("alpha".to_owned(), act(1, 100)),
            ("beta".to_owned(), act(0, 50)),
            ("gamma".to_owned(), act(1, 0)),
        ]
    );
    let seen = |agent_id: &str, last_ms: i64| SubagentSeen {
        agent_id: agent_id.to_owned(),
        subagent: "planner".to_owned(),
        requests: 1,
        last_ms,
    };
    assert_eq!(
        s.console_subagents(&sc, T, 10).await?,
        [seen("alpha", T + 2_000), seen("beta", T + 3_000)]
    );
    assert_eq!(
        s.console_subagents(&sc, T, 1).await?,
        [seen("alpha", T + 2_000)]
    );
    assert!(s.console_subagents(&sc, T + 3_001, 10).await?.is_empty());
    Ok(())
}

const NOW: u64 = 1_767_225_600;

fn hash(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn session(key_id: Option<&str>, tenant: &str, role: Role) -> ConsoleSession {
    ConsoleSession {
        key_id: key_id.map(str::to_owned),
        tenant: tenant.to_owned(),
        role,
        subject: key_id.unwrap_or("alice@example.com").to_owned(),
        created_at: NOW,
        last_seen: NOW,
        expires_at: NOW + 3_600,
    }
}

async fn sessions_live_until_idle_expiry_or_revocation(s: Store) -> Result<(), StoreError> {
    let (key, _secret) = s.create_api_key("acme", Role::Admin, "ops", NOW).await?;
    // A key session is stored with a stale tenant and role: lookups take the key's.
    let by_key = session(Some(&key.id), "stale", Role::Viewer);
    s.create_console_session(&hash('a'), &by_key).await?;
    let proxied = session(None, "globex", Role::Viewer);
    s.create_console_session(&hash('b'), &proxied).await?;

    let found = s.console_session(&hash('a'), NOW + 10, 600).await?;
    assert_eq!(
        found,
        Some(ConsoleSession {
            tenant: "acme".to_owned(),
            role: Role::Admin,
            ..by_key.clone()
        })
    );
    assert_eq!(
        s.console_session(&hash('b'), NOW + 10, 600).await?,
        Some(proxied.clone())
    );
    // Unknown, malformed and uppercase hashes find nothing.
    assert_eq!(s.console_session(&hash('c'), NOW, 600).await?, None);
    assert_eq!(s.console_session("not-a-hash", NOW, 600).await?, None);
    assert_eq!(s.console_session("' OR 1=1 --", NOW, 600).await?, None);
    assert!(matches!(
        s.create_console_session("short", &by_key).await,
        Err(StoreError::Invalid { .. })
    ));

    // Idle: gone after 600 s without use; touching extends the idle window only.
    assert_eq!(s.console_session(&hash('b'), NOW + 600, 600).await?, None);
    s.touch_console_session(&hash('b'), NOW + 500).await?;
    let touched = s.console_session(&hash('b'), NOW + 600, 600).await?;
    assert_eq!(touched.map(|t| t.last_seen), Some(NOW + 500));
    s.touch_console_session(&hash('b'), NOW + 3_599).await?;
    assert!(s
        .console_session(&hash('b'), NOW + 3_599, 600)
        .await?
        .is_some());
    assert_eq!(s.console_session(&hash('b'), NOW + 3_600, 600).await?, None);

    // Revoking the key ends its sessions.
    s.revoke_api_key(None, &key.id, NOW + 20).await?;
    assert_eq!(s.console_session(&hash('a'), NOW + 30, 600).await?, None);
    Ok(())
}

async fn sessions_are_deleted_and_pruned(s: Store) -> Result<(), StoreError> {
    for (c, created) in [('a', NOW), ('b', NOW), ('c', NOW + 1_000)] {
        let mut one = session(None, "acme", Role::Admin);
        one.created_at = created;
        one.last_seen = created;
        one.expires_at = created + 3_600;
        s.create_console_session(&hash(c), &one).await?;
    }
    assert!(s.delete_console_session(&hash('a')).await?);
    assert!(!s.delete_console_session(&hash('a')).await?);
    assert_eq!(s.console_session(&hash('a'), NOW, 600).await?, None);
    // At NOW + 1_200 with 600 s idle: `b` (last seen NOW) is idle, `c` is live.
    assert_eq!(s.prune_console_sessions(NOW + 1_200, 600).await?, 1);
    assert_eq!(s.console_session(&hash('b'), NOW + 100, 600).await?, None);
    assert!(s
        .console_session(&hash('c'), NOW + 1_200, 600)
        .await?
        .is_some());
    assert_eq!(s.prune_console_sessions(NOW + 4_600, 100_000).await?, 1);
    assert_eq!(s.prune_console_sessions(NOW + 4_600, 100_000).await?, 0);
    Ok(())
}
