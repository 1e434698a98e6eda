//! What an MCP exchange records: one audit record per JSON-RPC message, with the message's
//! own decision, and the per-tool call metric.

use crate::mcp_gate::McpGate;
use portcullis_core::{AuditRecord, Decision, McpRecord, Verdict};
use portcullis_mcp::{ArgumentsAudit, Id, Message, Outcome};
use std::collections::HashMap;
use std::sync::Arc;

/// One message as the exchange records it.
pub(crate) struct McpCall {
    pub(crate) index: usize,
    pub(crate) kind: Option<&'static str>,
    pub(crate) method: Option<String>,
    pub(crate) tool: Option<String>,
    pub(crate) id: Option<Id>,
    pub(crate) arguments: (Option<serde_json::Value>, Option<String>),
    pub(crate) decision: Arc<Decision>,
    pub(crate) is_error: Option<bool>,
}

impl McpCall {
    pub(crate) fn new(
        index: usize,
        m: Option<&Message>,
        decision: Arc<Decision>,
        mode: ArgumentsAudit,
    ) -> Self {
        Self {
            index,
            kind: m.map(|m| m.kind.as_str()),
            method: m.and_then(|m| m.method.clone()),
            tool: m.and_then(|m| m.tool.clone()),
            id: m.and_then(|m| m.id.clone()),
            arguments: portcullis_mcp::audit::arguments_record(
                mode,
                m.and_then(Message::arguments),
            ),
            decision,
            is_error: None,
        }
    }
}

/// Every message of one MCP exchange, recorded one record each.
pub(crate) struct McpLog {
    pub(crate) server: String,
    pub(crate) session: Option<String>,
    pub(crate) protocol_version: Option<String>,
    pub(crate) batch_size: u32,
    pub(crate) calls: Vec<McpCall>,
    pub(crate) denied_index: Option<usize>,
}

impl McpLog {
    /// The answer's outcome per id.
    pub(crate) fn set_outcomes(&mut self, outcomes: &HashMap<String, Outcome>) {
        for c in &mut self.calls {
            if let Some(o) = c.id.as_ref().and_then(|id| outcomes.get(&id.key())) {
                c.is_error = Some(o.failed());
            }
        }
    }

    /// One record per message from the exchange's record `base` and its `verdict`; also
    /// counts tool calls in `portcullis_mcp_calls_total`.
    pub(crate) fn records(
        self,
        base: AuditRecord,
        verdict: Verdict,
        gate: Option<&McpGate>,
        metrics: &crate::metrics::ProxyMetrics,
        agent: &str,
    ) -> Vec<AuditRecord> {
        let denied = self.denied_index.and_then(|i| {
            self.calls
                .get(i)
                .map(|c| (i, c.decision.reasons.first().cloned().unwrap_or_default()))
        });
        let n = self.calls.len();
        let mut out = Vec::with_capacity(n.max(1));
        for (k, c) in self.calls.into_iter().enumerate() {
            let mut r = base.clone();
            if k > 0 {
                r.id = crate::ids::new_id();
                // One span per message: the batch's later messages get spans of their own.
                if let Some(t) = r.trace.as_mut() {
                    t.span_id = portcullis_core::to_hex(&crate::trace::new_span_id());
                }
            }
            let d = &c.decision;
            r.verdict = match (verdict, &denied) {
                (Verdict::Allow | Verdict::WouldDeny, _) => d.verdict,
                (Verdict::Deny, Some((i, why))) if *i != c.index => {
                    r.reasons.push(format!(
                        "refused with its batch: message {i} was denied: {why}"
                    ));
                    if r.error.is_none() {
                        r.error = Some("mcp_batch_refused".to_owned());
                    }
                    Verdict::Deny
                }
                (Verdict::Deny, Some(_)) => d.verdict,
                (other, _) => other,
            };
            let mut reasons = d.reasons.clone();
            reasons.append(&mut r.reasons);
            r.reasons = reasons;
            r.policy = d.policy.clone();
            r.would_deny = d.would_deny.clone();
            r.decision_id = Some(d.decision_id.clone());
            r.policy_us = Some(d.eval_us);
            if c.method.as_deref() == Some(portcullis_mcp::message::TOOLS_CALL) {
                let tool = c.tool.as_deref().unwrap_or_default();
                let label = gate.map_or_else(
                    || portcullis_mcp::labels::OTHER.to_owned(),
                    |g| g.labels.label(&self.server, tool),
                );
                metrics
                    .mcp_calls
                    .with_label_values(&[agent, &self.server, &label, r.verdict.as_str()])
                    .inc();
            }
            r.mcp = Some(McpRecord {
                server: self.server.clone(),
                method: c.method,
                kind: c.kind.map(str::to_owned),
                tool: c.tool,
                id: c.id.as_ref().map(Id::key),
                is_error: c.is_error,
                arguments: c.arguments.0,
                arguments_sha256: c.arguments.1,
                session: self.session.clone(),
                protocol_version: self.protocol_version.clone(),
                batch_size: self.batch_size,
                batch_index: u32::try_from(c.index).unwrap_or(u32::MAX),
            });
            out.push(r);
        }
        out
    }
}
