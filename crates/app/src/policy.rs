//! Policy plugged into the data plane and the token endpoint: the authorizer, its metrics
//! and readiness.

use portcullis_admin::ReadyCheck;
use portcullis_core::{Decision, Principal, RequestKind};
use portcullis_llm::{Api, Classification};
use portcullis_policy::{
    build_input, stub_response, ExchangeFacts, McpFacts, OnBlock, PolicyEngine, PolicyInput,
    StubFormat, UsageFacts,
};
use portcullis_proxy::phases::{Authorization, Authorizer, RequestFacts};
use portcullis_proxy::refusal::Stub;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};
use std::sync::Arc;

/// Policy metrics.
#[derive(Clone)]
pub struct PolicyMetrics {
    decisions: IntCounterVec,
    eval: HistogramVec,
}

impl PolicyMetrics {
    /// Registers the policy metrics (decisions, evaluation time, reloads read at scrape time).
    pub fn new(registry: &Registry, engine: Arc<PolicyEngine>) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_decisions_total",
                "Per-policy results of evaluated decisions.",
            ),
            &["policy", "mode", "result"],
        )?;
        let eval = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_policy_eval_duration_seconds",
                "Time to decide one request (cached or not).",
            )
            .buckets(vec![
                0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
                0.001, 0.005,
            ]),
            &["cached"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(eval.clone()))?;
        registry.register(Box::new(EngineCollector::new(engine)?))?;
        Ok(Self { decisions, eval })
    }

    fn observe(&self, d: &Decision) {
        self.eval
            .with_label_values(&[if d.cached { "true" } else { "false" }])
            .observe(d.eval_us as f64 / 1e6);
        for e in &d.evaluations {
            let result = if !e.deny.is_empty() {
                "deny"
            } else if e.allow {
                "allow"
            } else {
                "abstain"
            };
            self.decisions
                .with_label_values(&[&e.policy, e.mode.as_str(), result])
                .inc();
        }
    }
}

/// Exports the engine's own counters at scrape time.
struct EngineCollector {
    engine: Arc<PolicyEngine>,
    reloads: IntCounterVec,
    errors: IntCounterVec,
    cache_hits: IntCounterVec,
    descs: Vec<Desc>,
}

impl EngineCollector {
    fn new(engine: Arc<PolicyEngine>) -> prometheus::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_reloads_total",
                "Policy set reloads by result.",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_errors_total",
                "Decisions in which a policy failed to evaluate (denied: fail closed).",
            ),
            &[],
        )?;
        let cache_hits = IntCounterVec::new(
            Opts::new(
                "portcullis_policy_cache_hits_total",
                "Decisions served from the cache.",
            ),
            &[],
        )?;
        let descs = [&reloads, &errors, &cache_hits]
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(Self {
            engine,
            reloads,
            errors,
            cache_hits,
            descs,
        })
    }
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.engine.stats();
        let set = |c: &IntCounterVec, labels: &[&str], v: u64| {
            let m = c.with_label_values(labels);
            m.reset();
            m.inc_by(v);
        };
        set(&self.reloads, &["ok"], s.reloads_ok);
        set(&self.reloads, &["error"], s.reloads_error);
        set(&self.errors, &[], s.policy_errors);
        set(&self.cache_hits, &[], s.cache_hits);
        [&self.reloads, &self.errors, &self.cache_hits]
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

/// The proxy's authorizer: every CONNECT and forwarded request is decided by Rego.
pub struct PolicyAuthorizer {
    engine: Arc<PolicyEngine>,
    metrics: PolicyMetrics,
}

impl PolicyAuthorizer {
    /// An authorizer deciding with `engine`.
    pub fn new(engine: Arc<PolicyEngine>, metrics: PolicyMetrics) -> Self {
        Self { engine, metrics }
    }

    /// Decides a `kind=token` request (scopes being asked for) for the token endpoint.
    pub fn decide_token(&self, principal: &Principal) -> Decision {
        let out = self
            .engine
            .decide(&PolicyInput::new(RequestKind::Token, principal));
        self.metrics.observe(&out.decision);
        out.decision
    }
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, f: &RequestFacts<'_>) -> Authorization {
        let input = build_input(&ExchangeFacts {
            kind: f.kind,
            principal: f.principal,
            subagent: f.subagent,
            method: f.method.as_str(),
            scheme: f.scheme,
            host: f.host,
            port: f.port,
            path: f.path,
            query: f.query,
            headers: f.headers,
            llm: f.llm,
            body: f.body,
            usage: UsageFacts {
                requests_last_minute: f.usage.requests_last_minute,
                tokens_today: f.usage.tokens_today,
                mcp_calls_last_minute: f.mcp.map_or(0, |m| m.calls_last_minute),
                usd_today_micros: f.usage.usd_today.micros(),
                usd_month_micros: f.usage.usd_month.micros(),
            },
            credential: f.credential,
            mcp: f.mcp.map(mcp_facts),
        });
        let out = self.engine.decide(&input);
        self.metrics.observe(&out.decision);
        Authorization {
            stub: out.on_block == OnBlock::Stub,
            decision: out.decision,
        }
    }

    fn stub(&self, decision: &Decision, llm: &Classification) -> Option<Stub> {
        let format = match llm.api? {
            Api::ChatCompletions => StubFormat::OpenAiChat,
            Api::Messages => StubFormat::AnthropicMessages,
            Api::Responses | Api::Embeddings => return None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let s = stub_response(format, decision, llm.model.as_deref(), llm.stream, now);
        Some(Stub {
            body: s.body,
            content_type: s.content_type,
        })
    }
}

/// The data plane's MCP facts as policy input (`input.mcp`).
pub fn mcp_facts(m: portcullis_proxy::phases::McpFacts<'_>) -> McpFacts<'_> {
    McpFacts::of(
        m.server,
        m.message,
        m.session_id,
        m.protocol_version,
        m.batch_size,
    )
}

/// `/readyz` component: ready while a good policy set serves; the last reload's
/// errors (file:line:col) are shown either way.
pub struct PolicyReady(pub Arc<PolicyEngine>);

impl ReadyCheck for PolicyReady {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn check(&self) -> (bool, Value) {
        let st = self.0.reload_status();
        let detail = json!({
            "version": st.version,
            "revision": st.revision,
            "policies": st.policies,
            "last_reload": if st.ok { "ok" } else { "error" },
            "last_reload_at": st.at,
            "errors": st.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        });
        (
            st.policies > 0 || self.0.config().default == portcullis_policy::DefaultDecision::Allow,
            detail,
        )
    }
}
