//! One exchange, one context, one exit.
//!
//! Every request and every tunnel gets an [`Exchange`] when it arrives. It is the only place
//! the audit record is assembled: the admission sequence and the forwarding code tell it
//! what they learn (principal, target, classification, decision, credential, timings), and
//! it writes the record exactly once — at [`Exchange::refuse`] or [`Exchange::finish`], or
//! on drop, so an early return, a client that goes away or a panic in a task never loses a
//! record. The metrics every finished exchange moves are updated here too.

use crate::body::ProxyBody;
use crate::mcp_log::McpLog;
use crate::refusal::{Denial, Refusal};
use crate::respond::{mcp_denied_response, refusal_response, stub_response};
use crate::state::Shared;
use crate::target::Target;
use crate::trace::{SpanIds, TraceMode};
use http::Response;
use portcullis_core::{
    AuditRecord, Decision, ErrorEnvelope, Principal, RequestKind, Usage, UsageSource, Verdict,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Provider label until requests are classified.
const NO_PROVIDER: &str = "none";
/// Agent label for exchanges refused before authentication succeeded.
const NO_AGENT: &str = "unauthenticated";

/// The metric label of `agent_id` (`unauthenticated` before an agent is known).
fn agent_label(agent_id: &str) -> &str {
    if agent_id.is_empty() {
        NO_AGENT
    } else {
        agent_id
    }
}

/// How an exchange that was not refused ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Status answered (200 for an established tunnel).
    pub status: u16,
    /// Error code when it ended badly (`client_aborted`, `upstream_body_error`, ...).
    pub error: Option<&'static str>,
    /// Bytes from the client (request body; tunnel: sent upstream).
    pub bytes_in: u64,
    /// Bytes to the client (response body; tunnel: sent to the client).
    pub bytes_out: u64,
    /// Token usage the tap read (classified LLM responses).
    pub usage: Option<Usage>,
}

/// The context of one request or tunnel; see the module documentation.
pub struct Exchange {
    shared: Arc<Shared>,
    started: Instant,
    record: AuditRecord,
    decision: Option<Arc<Decision>>,
    /// The messages of an MCP request: one record each.
    mcp: Option<McpLog>,
    /// The gateway's span (`[telemetry]` on), recorded as the record's `trace`.
    trace: Option<SpanIds>,
    done: bool,
}

impl Exchange {
    /// An exchange of `kind` that just arrived from `client_addr`.
    pub fn new(
        shared: &Arc<Shared>,
        kind: RequestKind,
        method: &str,
        client_addr: SocketAddr,
    ) -> Self {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut record = AuditRecord::new(
            crate::ids::new_id(),
            ts,
            String::new(),
            String::new(),
            kind,
            Verdict::Error,
        );
        record.method = Some(method.to_owned());
        record.client_addr = Some(client_addr.to_string());
        let trace = shared.pipeline.trace.is_on().then(SpanIds::root);
        Self {
            shared: shared.clone(),
            started: Instant::now(),
            record,
            decision: None,
            mcp: None,
            trace,
            done: false,
        }
    }

    /// Continues the client's trace from the request's `traceparent` (telemetry on; off,
    /// the headers are not read).
    pub fn continue_trace(&mut self, headers: &http::HeaderMap) {
        if let Some(t) = self.trace.as_mut() {
            t.continue_from(headers);
        }
    }

    /// The `traceparent` to send upstream: with `telemetry.propagate`, this exchange's span
    /// as parent; `None` leaves the request's headers as sent.
    pub fn upstream_traceparent(&self) -> Option<http::HeaderValue> {
        match self.shared.pipeline.trace {
            TraceMode::On { propagate: true } => self.trace.as_ref().map(SpanIds::header),
            _ => None,
        }
    }

    /// When the exchange arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The decision made so far, if any.
    pub fn decision(&self) -> Option<&Arc<Decision>> {
        self.decision.as_ref()
    }

    /// Who is acting (the record is attributed to the agent from here on).
    pub fn set_principal(&mut self, p: &Principal) {
        p.agent_id.as_ref().clone_into(&mut self.record.agent_id);
        p.tenant.as_ref().clone_into(&mut self.record.tenant);
    }

    /// The sub-agent named for this exchange.
    pub fn set_subagent(&mut self, s: Option<&str>) {
        self.record.subagent = s.map(str::to_owned);
    }

    /// The destination (host and port).
    pub fn set_target(&mut self, t: &Target) {
        self.record.host = Some(t.host_str());
        self.record.port = Some(t.port);
    }

    /// A destination known only as the request named it (before it was validated).
    pub fn set_host_as_sent(&mut self, host: Option<&str>, port: Option<u16>) {
        self.record.host = host.filter(|h| !h.is_empty()).map(str::to_owned);
        self.record.port = port;
    }

    /// `http` or `https`.
    pub fn set_scheme(&mut self, scheme: &str) {
        self.record.scheme = Some(scheme.to_owned());
    }

    /// The path (canonical once canonicalised).
    pub fn set_path(&mut self, path: &str) {
        if self.record.path.as_deref() != Some(path) {
            self.record.path = Some(path.to_owned());
        }
    }

    /// The gateway terminated the client's TLS.
    pub fn set_tls_intercepted(&mut self) {
        self.record.tls_intercepted = true;
    }

    /// The LLM classification.
    pub fn set_llm(&mut self, c: &portcullis_llm::Classification) {
        self.record.provider = Some(c.provider.to_string());
        self.record.model = c.model.clone();
        self.record.api = c.api.map(|a| a.as_str().to_owned());
        self.record.stream = Some(c.stream);
    }

    /// The policy decision.
    pub fn set_decision(&mut self, d: Arc<Decision>) {
        self.decision = Some(d);
    }

    /// The messages of an MCP request and their decisions: the exchange is recorded as one
    /// record per message.
    pub(crate) fn set_mcp(&mut self, log: McpLog) {
        self.mcp = Some(log);
    }

    /// What the MCP server answered, per request id.
    pub(crate) fn set_mcp_outcomes(
        &mut self,
        outcomes: &std::collections::HashMap<String, portcullis_mcp::Outcome>,
    ) {
        if let Some(log) = self.mcp.as_mut() {
            log.set_outcomes(outcomes);
        }
    }

    /// The credential injected upstream (its name, never its value).
    pub fn set_credential(&mut self, name: &str) {
        self.record.credential = Some(name.to_owned());
    }

    /// The upstream answered (or the tunnel's upstream connected): time to first byte.
    pub fn set_ttfb(&mut self) {
        self.record.upstream_ttfb_ms = Some(millis(self.started.elapsed()));
    }

    /// The exchange is now a tunnel, recorded when it closes.
    pub fn into_tunnel(mut self) -> Self {
        self.record.kind = RequestKind::Tunnel;
        self
    }

    /// Refuses the exchange: the one refusal path. Returns the answer (the provider's error
    /// envelope added for a recognised LLM API) and records the exchange.
    pub fn refuse(self, refusal: Refusal, envelope: Option<ErrorEnvelope>) -> Response<ProxyBody> {
        let resp = refusal_response(&refusal, envelope);
        self.close_refused(&refusal);
        resp
    }

    /// Answers a denied admission: the refusal, or the policy's provider-shaped stub (200
    /// with `X-Portcullis-Blocked: true`, recorded as denied).
    pub fn answer(self, denied: Denial) -> Response<ProxyBody> {
        match denied {
            Denial::Refuse(r, envelope) => self.refuse(r, envelope),
            Denial::Stub(stub) => {
                let code = self
                    .decision
                    .as_ref()
                    .map_or("policy_denied", |d| d.refusal_code());
                let decision_id = self.decision.as_ref().map(|d| d.decision_id.as_str());
                let resp = stub_response(&stub, decision_id);
                self.finish(Outcome {
                    status: 200,
                    error: Some(code),
                    bytes_out: stub.body.len() as u64,
                    ..Outcome::default()
                });
                resp
            }
            Denial::Mcp(denied) => {
                let resp = mcp_denied_response(&denied);
                self.finish(Outcome {
                    status: 200,
                    error: Some(denied.decision.refusal_code()),
                    bytes_out: denied.answer.body.len() as u64,
                    ..Outcome::default()
                });
                resp
            }
        }
    }

    /// Refuses an exchange that cannot be answered (a tunnel being closed) and records it.
    pub fn close_refused(mut self, refusal: &Refusal) {
        let agent = self.agent_label();
        refusal.observe(&self.shared.metrics, &agent);
        let verdict = refusal.verdict(self.decision.as_deref());
        if let Some(why) = refusal.reason() {
            self.record.reasons.push(why);
        }
        let outcome = Outcome {
            status: refusal.status().code(),
            error: Some(refusal.code()),
            ..Outcome::default()
        };
        self.close(outcome, verdict);
    }

    /// Records how the exchange ended (a response streamed to its end or abandoned, a tunnel
    /// closed): the verdict is the decision's.
    pub fn finish(mut self, outcome: Outcome) {
        let verdict = match (&self.decision, outcome.error) {
            (Some(d), _) => d.verdict,
            (None, Some(_)) => Verdict::Error,
            (None, None) => Verdict::Allow,
        };
        self.close(outcome, verdict);
    }

    /// Records how the exchange ended with the verdict its phase decided (a gateway-local
    /// endpoint's own refusal, an OAuth error).
    pub fn finish_as(mut self, outcome: Outcome, verdict: Verdict) {
        self.close(outcome, verdict);
    }

    fn agent_label(&self) -> String {
        agent_label(&self.record.agent_id).to_owned()
    }

    fn close(&mut self, outcome: Outcome, verdict: Verdict) {
        self.done = true;
        let elapsed = self.started.elapsed();
        let kind = self.record.kind;
        let mut r = std::mem::replace(
            &mut self.record,
            AuditRecord::new(
                String::new(),
                0,
                String::new(),
                String::new(),
                kind,
                Verdict::Error,
            ),
        );
        r.verdict = verdict;
        r.status = (outcome.status != 0).then_some(outcome.status);
        r.error = outcome.error.map(str::to_owned);
        r.bytes_in = outcome.bytes_in;
        r.bytes_out = outcome.bytes_out;
        r.latency_ms = millis(elapsed);
        r.usage = outcome.usage;
        r.trace = self.trace.as_ref().map(SpanIds::context);
        if let Some(log) = self.mcp.take() {
            // One record per message, each with its own decision; the exchange's metrics once.
            self.decision = None;
            self.observe(&r, elapsed);
            // The exchange's own record was moved into `r` above: label with its agent.
            let agent = agent_label(&r.agent_id).to_owned();
            let gate = self.shared.pipeline.mcp.clone();
            for rec in log.records(r, verdict, gate.as_deref(), &self.shared.metrics, &agent) {
                self.shared.pipeline.recorder.record(rec);
            }
            return;
        }
        if let Some(d) = self.decision.take() {
            r.policy = d.policy.clone();
            let mut reasons = d.reasons.clone();
            reasons.append(&mut r.reasons);
            r.reasons = reasons;
            r.would_deny = d.would_deny.clone();
            r.decision_id = Some(d.decision_id.clone());
            r.policy_revision = d.revision.clone();
            r.policy_us = Some(d.eval_us);
        }
        self.observe(&r, elapsed);
        self.shared.pipeline.recorder.record(r);
    }

    fn observe(&self, r: &AuditRecord, elapsed: std::time::Duration) {
        let m = &self.shared.metrics;
        let agent = agent_label(&r.agent_id);
        let provider = r.provider.as_deref().unwrap_or(NO_PROVIDER);
        m.requests
            .with_label_values(&[agent, r.verdict.as_str(), provider])
            .inc();
        m.duration
            .with_label_values(&[provider])
            .observe(elapsed.as_secs_f64());
        if let Some(u) = r.usage.filter(|u| u.source == UsageSource::Provider) {
            let model = m.model_label(r.model.as_deref());
            for (kind, n) in [
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cached_input", u.cached_input_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                m.llm_tokens
                    .with_label_values(&[agent, provider, &model, kind])
                    .inc_by(n);
            }
        }
    }
}

impl Drop for Exchange {
    /// An exchange dropped before it was finished is still recorded: the client went away
    /// before its answer (or the task serving it ended), or a panic unwound through it.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let error = if std::thread::panicking() {
            "internal_error"
        } else {
            "client_aborted"
        };
        let verdict = self.decision.as_ref().map_or(Verdict::Error, |d| d.verdict);
        self.close(
            Outcome {
                error: Some(error),
                ..Outcome::default()
            },
            verdict,
        );
    }
}

/// Whole milliseconds, rounded.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros().saturating_add(500) / 1000).unwrap_or(u64::MAX)
}
