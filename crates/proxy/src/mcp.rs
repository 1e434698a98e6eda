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
pub use crate::mcp_gate::{McpGate, McpServer, McpSettings};
use crate::mcp_log::{McpCall, McpLog};
use crate::phases::{Authorization, McpFacts, RequestFacts};
use crate::refusal::{Denial, McpInvalid, Refusal};
use http::request::Parts;
use http::{HeaderMap, Method};
use portcullis_core::Decision;
use portcullis_mcp::headers::{check_mirrored, sse_only, MCP_METHOD, MCP_NAME};
use portcullis_mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use portcullis_mcp::{Body, Id, Message, OnBlock, Refused};
use std::sync::Arc;

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
        Err(e) => return Err(crate::refusal::body_refusal(e.as_ref(), body_timeout)),
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

/// Counts the request's tool calls against the agent's limit (`own`, its override) or else
/// `mcp.calls_per_minute`, refusing the request when they do not fit.
pub(crate) fn count_calls(
    gate: &McpGate,
    agent: &str,
    own: Option<u64>,
    req: &McpRequest,
) -> Result<(), Refusal> {
    gate.counter
        .admit(
            agent,
            req.tool_calls(),
            own.or(gate.settings.calls_per_minute),
        )
        .map_err(Refusal::Limited)
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
