//! MCP servers governed per JSON-RPC message (`[[mcp.servers]]`, docs/mcp.md).
//!
//! A request to a registered MCP endpoint is read whole (bounded by `mcp.max_body`; larger is
//! refused, never streamed past policy), parsed ([`portcullis_mcp::parse_body`]), its
//! `Mcp-Method` / `Mcp-Name` headers checked against the body, and every message decided by the
//! Authorizer with `input.mcp`; one denial refuses the whole body, answered like an MCP server
//! would (`mcp_answer.rs`). The exchange then owns one [`McpCall`] per message and writes one
//! audit record per message when it closes. The gateway never terminates the MCP session: the
//! body goes upstream byte for byte.

use crate::body::{full, ProxyBody};
use crate::exchange::Exchange;
use crate::inspect::{read_prefix, Prefix};
use crate::phases::{Authorization, McpFacts, RequestFacts};
use crate::refusal::{Denial, McpInvalid, Refusal};
use http::request::Parts;
use http::{HeaderMap, Method};
use portcullis_core::{AuditRecord, Decision, McpRecord, Verdict};
use portcullis_limits::McpCallCounter;
use portcullis_mcp::headers::{check_mirrored, sse_only, MCP_METHOD, MCP_NAME};
use portcullis_mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use portcullis_mcp::{ArgumentsAudit, Body, Id, Limits, Message, OnBlock, Outcome, Refused};
use portcullis_tls::HostMatcher;
use std::collections::HashMap;
use std::sync::Arc;

/// One `[[mcp.servers]]` endpoint.
pub struct McpServer {
    /// Name (policy input, audit, metric label).
    pub name: String,
    /// Its hosts.
    pub hosts: HostMatcher,
    /// Path prefix (every path when `None`).
    pub path: Option<String>,
}

impl McpServer {
    fn matches(&self, host: &str, path: &str) -> bool {
        self.hosts.matches(host)
            && self.path.as_deref().is_none_or(|p| {
                path == p
                    || path.starts_with(p)
                        && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/'))
            })
    }
}

/// `[mcp]` as the data plane uses it.
pub struct McpSettings {
    /// The endpoints.
    pub servers: Vec<McpServer>,
    /// How a denied call is answered.
    pub on_block: OnBlock,
    /// Filter `tools/list` answers.
    pub filter_tools_list: bool,
    /// Request parsing bounds.
    pub limits: Limits,
    /// Largest answer read or filtered.
    pub max_answer: usize,
    /// How arguments are recorded.
    pub arguments: ArgumentsAudit,
    /// Tool calls per minute per agent.
    pub calls_per_minute: Option<u64>,
    /// Most (server, tool) metric labels.
    pub max_tool_labels: usize,
}

/// The MCP phase's shared state: settings, tool labels, tool-call counters.
pub struct McpGate {
    pub(crate) settings: McpSettings,
    pub(crate) labels: portcullis_mcp::labels::ToolLabels,
    pub(crate) counter: McpCallCounter,
}

impl McpGate {
    /// The gate for `settings`, counting calls on `clock`.
    pub fn new(settings: McpSettings, clock: Arc<dyn portcullis_core::Clock>) -> Self {
        Self {
            labels: portcullis_mcp::labels::ToolLabels::new(settings.max_tool_labels),
            counter: McpCallCounter::new(clock),
            settings,
        }
    }

    /// Whether `host` is an MCP server's (its tunnels are intercepted).
    pub fn intercepts(&self, host: &str) -> bool {
        self.settings.servers.iter().any(|s| s.hosts.matches(host))
    }

    /// The server whose endpoint `host` and `path` are.
    pub(crate) fn server(&self, host: &str, path: &str) -> Option<&McpServer> {
        self.settings.servers.iter().find(|s| s.matches(host, path))
    }

    /// The name of the server whose endpoint `host` and `path` are (the admin simulator reads
    /// described requests with this).
    pub fn server_name(&self, host: &str, path: &str) -> Option<&str> {
        self.server(host, path).map(|s| s.name.as_str())
    }

    /// The request parsing bounds.
    pub fn limits(&self) -> Limits {
        self.settings.limits
    }

    /// Forgets idle tool-call counters.
    pub fn sweep(&self) {
        self.counter.sweep();
    }
}

/// What admission learned about an MCP request, kept for the answer.
pub(crate) struct McpRequest {
    pub(crate) server: String,
    pub(crate) body: Option<Body>,
    pub(crate) session_id: Option<String>,
    pub(crate) protocol_version: Option<String>,
    pub(crate) sse_only: bool,
    pub(crate) calls_last_minute: u64,
}

impl McpRequest {
    /// The ids of the `tools/list` requests.
    pub(crate) fn list_ids(&self) -> Vec<Id> {
        self.body
            .iter()
            .flat_map(|b| b.messages.iter())
            .filter(|m| m.is_tools_list())
            .filter_map(|m| m.id.clone())
            .collect()
    }

    /// Tool calls in the body.
    fn tool_calls(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| {
            b.messages.iter().filter(|m| m.is_tool_call()).count() as u64
        })
    }

    /// The policy facts of message `m` (`None`: a GET or DELETE of the endpoint).
    pub(crate) fn facts<'a>(&'a self, m: Option<&'a Message>) -> McpFacts<'a> {
        McpFacts {
            server: &self.server,
            message: m,
            session_id: self.session_id.as_deref(),
            protocol_version: self.protocol_version.as_deref(),
            batch_size: self.body.as_ref().map_or(0, |b| b.messages.len()),
            calls_last_minute: self.calls_last_minute,
        }
    }
}

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Reads and parses the body of a request to an MCP endpoint (a POST; other methods carry
/// none), checking the mirrored headers. Returns the request and the body to forward.
pub(crate) async fn read(
    gate: &McpGate,
    server: &McpServer,
    parts: &Parts,
    body: Option<ProxyBody>,
    agent: &str,
    body_timeout: std::time::Duration,
) -> Result<(McpRequest, Option<ProxyBody>, u64), Refusal> {
    let h = &parts.headers;
    let mut req = McpRequest {
        server: server.name.clone(),
        body: None,
        session_id: header_text(h, MCP_SESSION_ID),
        protocol_version: header_text(h, MCP_PROTOCOL_VERSION),
        sse_only: sse_only(h.get(http::header::ACCEPT).and_then(|v| v.to_str().ok())),
        calls_last_minute: gate.counter.last_minute(agent),
    };
    if parts.method != Method::POST {
        return Ok((req, body, 0));
    }
    let Some(body) = body else {
        return Ok((req, None, 0));
    };
    let limits = gate.settings.limits;
    let bytes = match read_prefix(body, limits.max_body).await {
        Ok(Prefix::Complete(b)) => b,
        Ok(Prefix::Partial(..)) => {
            return Err(invalid(&portcullis_mcp::ParseError::TooLarge(
                limits.max_body,
            )))
        }
        Err(e) => return Err(crate::admission::body_refusal(e.as_ref(), body_timeout)),
    };
    let parsed = portcullis_mcp::parse_body(&bytes, &limits).map_err(|e| invalid(&e))?;
    let values =
        |name: &str| -> Vec<&[u8]> { h.get_all(name).iter().map(|v| v.as_bytes()).collect() };
    check_mirrored(&values(MCP_METHOD), &values(MCP_NAME), &parsed).map_err(|e| {
        Refusal::Mcp(McpInvalid {
            code: "mcp_header_mismatch",
            rpc_code: portcullis_mcp::answer::HEADER_MISMATCH,
            detail: e.to_string(),
            too_large: false,
        })
    })?;
    let len = bytes.len() as u64;
    req.body = Some(parsed);
    Ok((req, Some(full(bytes)), len))
}

fn invalid(e: &portcullis_mcp::ParseError) -> Refusal {
    Refusal::Mcp(McpInvalid {
        code: e.code(),
        rpc_code: e.rpc_code(),
        detail: e.to_string(),
        too_large: matches!(e, portcullis_mcp::ParseError::TooLarge(_)),
    })
}

/// Decides every message (one decision for a GET or DELETE); the exchange learns each. The
/// first denial refuses the whole body.
pub(crate) fn authorize(
    gate: &McpGate,
    ex: &mut Exchange,
    req: &McpRequest,
    facts: &dyn Fn(McpFacts<'_>) -> Authorization,
) -> Result<(), Denial> {
    let messages: Vec<Option<&Message>> = match &req.body {
        Some(b) => b.messages.iter().map(Some).collect(),
        None => vec![None],
    };
    let mut calls = Vec::with_capacity(messages.len());
    let mut denied: Option<(usize, Arc<Decision>, bool)> = None;
    for (i, m) in messages.iter().enumerate() {
        let authz = facts(req.facts(*m));
        let decision = Arc::new(authz.decision);
        if !decision.allowed && denied.is_none() {
            denied = Some((i, decision.clone(), authz.stub));
        }
        calls.push(McpCall::new(i, *m, decision, gate.settings.arguments));
    }
    let deciding = denied
        .as_ref()
        .map(|d| d.1.clone())
        .or_else(|| calls.first().map(|c| c.decision.clone()));
    if let Some(d) = deciding {
        ex.set_decision(d);
    }
    let denied_index = denied.as_ref().map(|d| d.0);
    ex.set_mcp(McpLog {
        server: req.server.clone(),
        session: req
            .session_id
            .as_deref()
            .map(portcullis_mcp::audit::session_hash),
        protocol_version: req.protocol_version.clone(),
        batch_size: u32::try_from(req.body.as_ref().map_or(0, |b| b.messages.len()))
            .unwrap_or(u32::MAX),
        calls,
        denied_index,
    });
    let Some((index, decision, stub)) = denied else {
        return Ok(());
    };
    let batch = req.body.as_ref().is_some_and(|b| b.batch);
    let on_block = if stub {
        OnBlock::ToolResult
    } else {
        gate.settings.on_block
    };
    let reason = decision
        .reasons
        .first()
        .cloned()
        .unwrap_or_else(|| "request denied by policy".to_owned());
    let refused = Refused {
        code: decision.refusal_code(),
        reason: &reason,
        policy: decision.policy.as_deref(),
        decision_id: &decision.decision_id,
        denied_index: batch.then_some(index),
    };
    let answer = req
        .body
        .as_ref()
        .and_then(|b| portcullis_mcp::answer::refusal(b, &refused, on_block, req.sse_only));
    Err(match answer {
        Some(a) => Denial::Mcp(crate::refusal::McpDenied {
            answer: a,
            decision,
        }),
        None => Denial::Refuse(Refusal::Policy(decision), None),
    })
}

/// Counts the body's tool calls against `mcp.calls_per_minute`, or refuses them.
pub(crate) fn count_calls(gate: &McpGate, agent: &str, req: &McpRequest) -> Result<(), Refusal> {
    gate.counter
        .admit(agent, req.tool_calls(), gate.settings.calls_per_minute)
        .map_err(Refusal::Limited)
}

/// One message as the exchange records it.
pub(crate) struct McpCall {
    index: usize,
    kind: Option<&'static str>,
    method: Option<String>,
    tool: Option<String>,
    id: Option<Id>,
    arguments: (Option<serde_json::Value>, Option<String>),
    pub(crate) decision: Arc<Decision>,
    is_error: Option<bool>,
}

impl McpCall {
    fn new(
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
    server: String,
    session: Option<String>,
    protocol_version: Option<String>,
    batch_size: u32,
    calls: Vec<McpCall>,
    denied_index: Option<usize>,
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

/// The facts of one message for the Authorizer, from the request's.
pub(crate) fn with_mcp<'a>(base: &RequestFacts<'a>, mcp: McpFacts<'a>) -> RequestFacts<'a> {
    RequestFacts {
        mcp: Some(mcp),
        ..*base
    }
}

/// The facts of a `tools/call` to `tool` with no arguments, for the `tools/list` filter: a tool
/// stays listed when such a call would be allowed.
pub(crate) fn listed_tool(tool: &str) -> Message {
    Message {
        kind: portcullis_mcp::Kind::Request,
        id: None,
        method: Some(portcullis_mcp::message::TOOLS_CALL.to_owned()),
        params: Some(serde_json::json!({ "name": tool })),
        tool: Some(tool.to_owned()),
        name: Some(tool.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(path: Option<&str>) -> McpServer {
        McpServer {
            name: "s".into(),
            hosts: HostMatcher::new(["mcp.example.com"]).unwrap(),
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn endpoints_match_on_host_and_path_segments() {
        let any = server(None);
        assert!(any.matches("mcp.example.com", "/anything"));
        assert!(!any.matches("other.example.com", "/mcp"));
        let p = server(Some("/mcp"));
        assert!(p.matches("mcp.example.com", "/mcp"));
        assert!(p.matches("mcp.example.com", "/mcp/x"));
        assert!(!p.matches("mcp.example.com", "/mcpx"));
        assert!(!p.matches("mcp.example.com", "/"));
        let slash = server(Some("/mcp/"));
        assert!(slash.matches("mcp.example.com", "/mcp/"));
        assert!(!slash.matches("mcp.example.com", "/mcp"));
    }
}
