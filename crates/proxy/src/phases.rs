//! The phases the data plane calls at fixed points, as narrow interfaces.
//!
//! One admission sequence (see `admission.rs`) calls them in order for every exchange:
//! authenticate → sub-agent → target → classify → authorize → audit admission → limits →
//! credential; the finished exchange is handed to the [`Recorder`]. The proxy owns sockets and
//! HTTP; these traits own decisions and bookkeeping, so each is tested alone and the proxy is
//! tested with fakes (`crates/proxy/tests`). A phase answers with a typed outcome; the proxy
//! alone maps refusals to responses (`refusal.rs`).

use crate::refusal::{AuthFailure, Malformed, Stub};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
pub use portcullis_core::Injection;
use portcullis_core::{AuditRecord, Decision, Principal, RequestKind};
use portcullis_limits::{Admission, LimitError, LimitFuture, Permit, UsageSnapshot};
use portcullis_llm::{Classification, Classifier};
use std::net::SocketAddr;
use std::sync::Arc;

/// Facts about a request, borrowed from it, for authorization.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// `Connect` for tunnels, `Http` for requests.
    pub kind: RequestKind,
    /// Who is asking.
    pub principal: &'a Principal,
    /// Validated sub-agent name, if any.
    pub subagent: Option<&'a str>,
    /// Method (CONNECT for tunnels).
    pub method: &'a Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Destination host (lower-case name or IP literal).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// The canonical path (empty for CONNECT).
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Request headers (hop-by-hop and credentials still present; redact before exposing).
    pub headers: &'a HeaderMap,
    /// Client address.
    pub client_addr: SocketAddr,
    /// LLM classification, when the destination is a known provider.
    pub llm: Option<&'a Classification>,
    /// The JSON body, when it was inspected.
    pub body: Option<&'a serde_json::Value>,
    /// The agent's recent usage (`input.usage`), from the limiter; zero without one.
    pub usage: UsageSnapshot,
    /// The credential that will be injected if the request is allowed (`input.credential`).
    pub credential: Option<&'a str>,
    /// The MCP message decided (`input.mcp`), for requests to `[[mcp.servers]]` endpoints.
    pub mcp: Option<McpFacts<'a>>,
}

/// One MCP message as policy sees it (`input.mcp`).
#[derive(Debug, Clone, Copy)]
pub struct McpFacts<'a> {
    /// The `[[mcp.servers]]` name.
    pub server: &'a str,
    /// The message (`None`: a GET or DELETE of the endpoint, which carries none).
    pub message: Option<&'a portcullis_mcp::Message>,
    /// `Mcp-Session-Id`, when sent.
    pub session_id: Option<&'a str>,
    /// `MCP-Protocol-Version`, when sent.
    pub protocol_version: Option<&'a str>,
    /// Messages in the body.
    pub batch_size: usize,
    /// Tool calls by this agent in the last minute (`input.usage.mcp_calls_last_minute`).
    pub calls_last_minute: u64,
}

/// A decision and how to answer it if it blocks.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The decision.
    pub decision: Decision,
    /// Answer a block with a provider-shaped stub (`on_block = "stub"`) when possible.
    pub stub: bool,
}

/// Phase 1: who is this?
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates from `Proxy-Authorization`.
    fn authenticate(
        &self,
        proxy_authorization: Option<&HeaderValue>,
        client_addr: SocketAddr,
    ) -> Result<Principal, AuthFailure>;

    /// Validates an `X-Portcullis-Subagent` value for `principal` and registers the
    /// sub-agent on first use.
    fn subagent(&self, principal: &Principal, value: &HeaderValue) -> Result<String, Malformed>;

    /// Re-validates a principal authenticated earlier on the same tunnel (credential
    /// rotated, agent disabled or suspended, token expired) before each inner request of
    /// an intercepted tunnel. Defaults to accepting it unchanged.
    fn recheck(&self, principal: &Principal) -> Result<Principal, AuthFailure> {
        Ok(principal.clone())
    }

    /// Whether every request is let through without credentials (development only).
    fn is_open(&self) -> bool {
        false
    }
}

/// Phase 2: may it? Must not fail: an internal error is a deny (fail closed).
pub trait Authorizer: Send + Sync + 'static {
    /// Decides one request.
    fn authorize(&self, facts: &RequestFacts<'_>) -> Authorization;

    /// A provider-shaped refusal for a recognised LLM API, if one exists for it.
    fn stub(&self, _decision: &Decision, _llm: &Classification) -> Option<Stub> {
        None
    }
}

/// Phase 3: rate limits and token budgets.
///
/// Answers are [`LimitFuture`]s: ready at once for the in-memory limiter (awaiting costs a
/// branch), a future for a shared backend that asks a server.
pub trait RequestLimits: Send + Sync + 'static {
    /// The agent's recent usage, for the policy input of a CONNECT (requests read it from
    /// their [`Admission`]).
    fn usage(&self, principal: &Principal) -> LimitFuture<'_, UsageSnapshot>;

    /// Takes the agent's concurrency slot as soon as it is authenticated, before its body is
    /// read (a stalled upload holds a slot too), or refuses. The admission carries the agent's
    /// usage as read in the same step (the policy input's `usage`).
    fn admit(&self, principal: &Principal) -> LimitFuture<'_, Result<Admission, LimitError>>;

    /// Admits a request policy allowed, holding `admission`, or refuses it. `llm` sizes the
    /// token reservation of an LLM request together with `body_len`, the request body's size
    /// in bytes. The permit is held until the response ends, then settled with the usage.
    fn acquire(
        &self,
        principal: &Principal,
        llm: Option<&Classification>,
        body_len: u64,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>>;

    /// The agent's own limit on MCP tool calls per minute, when it sets one (`[agents.limits]
    /// mcp_calls_per_minute`); `None` leaves `mcp.calls_per_minute`.
    fn mcp_calls_per_minute(&self, _principal: &Principal) -> Option<u64> {
        None
    }
}

/// Phase 4: credential injection, for requests policy and limits allowed. Only requests
/// the gateway terminates TLS for (`https` inside intercepted tunnels) get credentials: a
/// secret never travels in plaintext.
pub trait CredentialInjector: Send + Sync + 'static {
    /// Whether any credential is bound to `host`: its CONNECT tunnels are intercepted.
    fn intercepts(&self, host: &str) -> bool;

    /// The credential `principal` may use for `host`, by name (nothing secret is read).
    fn bound(&self, principal: &Principal, host: &str) -> Option<Arc<str>>;

    /// The header to set for credential `name`. An error (the secret cannot be read, the
    /// credential was removed) refuses the request: it is never forwarded without the
    /// credential policy expected. The error says why, without the secret.
    fn injection(&self, name: &str) -> Result<Injection, String>;
}

/// Phase last: keep the record. Must not block the request path.
pub trait Recorder: Send + Sync + 'static {
    /// Takes one finished record.
    fn record(&self, record: AuditRecord);

    /// Whether a request may start, decided before anything is forwarded: a full
    /// fail-closed audit trail refuses (the error says why); a full blocking one waits
    /// (bounded).
    fn admit(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A request addressed to the gateway itself on the proxy port (origin-form),
/// with its body read (bounded).
#[derive(Debug)]
pub struct LocalRequest {
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_LOCAL_BODY`] bytes).
    pub body: bytes::Bytes,
    /// Client address.
    pub client_addr: SocketAddr,
}

/// Largest body accepted by gateway-local endpoints.
pub const MAX_LOCAL_BODY: usize = 64 * 1024;

/// What a gateway-local endpoint's exchange adds to its audit record.
#[derive(Debug, Clone, Default)]
pub struct LocalAudit {
    /// The agent, once the request identified it (refusals after authentication included).
    pub principal: Option<Principal>,
    /// The policy decision, when one was made.
    pub decision: Option<Arc<Decision>>,
    /// The refusal, when the request was refused: its machine code and whether it is a denial
    /// (a decision against the agent) rather than an error.
    pub refused: Option<LocalRefusal>,
}

/// A gateway-local endpoint's refusal, as recorded.
#[derive(Debug, Clone)]
pub struct LocalRefusal {
    /// Machine code (`invalid_client`, `invalid_scope`, ...).
    pub code: &'static str,
    /// A decision against the agent (`deny`), not a failure (`error`).
    pub denied: bool,
}

/// A JSON answer from a gateway-local endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    /// Status.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: serde_json::Value,
}

/// How a gateway-local endpoint is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRoute {
    /// Not an endpoint of this service.
    NotServed,
    /// Served and not audited (public keys: nothing is decided).
    Unaudited,
    /// Served and audited as one exchange of this kind (`token`).
    Audited(RequestKind),
}

/// Endpoints the gateway serves on the proxy port besides `/healthz`
/// (e.g. `POST /oauth/token`, `GET /.well-known/jwks.json`).
pub trait LocalService: Send + Sync + 'static {
    /// Whether and how `method path` is served (decides whether the body is read).
    fn route(&self, method: &Method, path: &str) -> LocalRoute;
    /// Answers a request that [`LocalService::route`] accepted, saying what to record.
    fn handle(&self, req: LocalRequest) -> (LocalResponse, LocalAudit);
}

/// Development mode (`proxy.allow_unauthenticated = true`): everyone is `anonymous`.
#[derive(Debug, Default)]
pub struct Unauthenticated;

impl Authenticator for Unauthenticated {
    fn authenticate(
        &self,
        _: Option<&HeaderValue>,
        _: SocketAddr,
    ) -> Result<Principal, AuthFailure> {
        Ok(Principal::anonymous())
    }

    fn subagent(&self, _: &Principal, value: &HeaderValue) -> Result<String, Malformed> {
        match value.to_str() {
            Ok(v) if portcullis_core::is_valid_id(v) => Ok(v.to_owned()),
            _ => Err(Malformed::Subagent {
                code: "invalid_subagent",
                detail: "X-Portcullis-Subagent must match ^[a-z][a-z0-9_]{1,63}$".into(),
            }),
        }
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// Lets every request through that the data plane's own guards (ports, SSRF)
/// accept. Only used together with [`Unauthenticated`] before policy is configured.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &RequestFacts<'_>) -> Authorization {
        Authorization {
            decision: Decision::allow_unconditionally(crate::ids::new_id()),
            stub: false,
        }
    }
}

/// Writes each record as a structured log line (target `portcullis::access`).
#[derive(Debug, Default)]
pub struct LogRecorder;

impl Recorder for LogRecorder {
    fn record(&self, r: AuditRecord) {
        Self::access_line(&r);
    }
}

impl LogRecorder {
    /// Writes the access line for `r`.
    pub fn access_line(r: &AuditRecord) {
        tracing::info!(
            target: "portcullis::access",
            id = %r.id,
            kind = r.kind.as_str(),
            agent = if r.agent_id.is_empty() { "-" } else { r.agent_id.as_str() },
            subagent = r.subagent.as_deref().unwrap_or("-"),
            provider = r.provider.as_deref().unwrap_or("-"),
            model = r.model.as_deref().unwrap_or("-"),
            method = %r.method.as_deref().unwrap_or("-"),
            scheme = r.scheme.as_deref().unwrap_or("-"),
            host = %r.host.as_deref().unwrap_or("-"),
            port = r.port.unwrap_or(0),
            path = %r.path.as_deref().unwrap_or("-"),
            verdict = r.verdict.as_str(),
            status = r.status.unwrap_or(0),
            error = r.error.as_deref().unwrap_or("-"),
            latency_ms = r.latency_ms,
            bytes_in = r.bytes_in,
            bytes_out = r.bytes_out,
            completed = r.error.is_none(),
            client = %r.client_addr.as_deref().unwrap_or("-"),
            "request"
        );
    }
}

/// The phase implementations the proxy runs with.
#[derive(Clone)]
pub struct Pipeline {
    /// Authentication.
    pub authenticator: Arc<dyn Authenticator>,
    /// Authorization.
    pub authorizer: Arc<dyn Authorizer>,
    /// Record keeping.
    pub recorder: Arc<dyn Recorder>,
    /// Rate limits and token budgets (`None`: unlimited, no usage counters).
    pub limits: Option<Arc<dyn RequestLimits>>,
    /// Credential injection (`None`: agents bring their own credentials).
    pub credentials: Option<Arc<dyn CredentialInjector>>,
    /// Gateway-local endpoints on the proxy port.
    pub local: Option<Arc<dyn LocalService>>,
    /// LLM provider classifier (pure; `None` disables classification).
    pub classifier: Option<Arc<Classifier>>,
    /// MCP servers governed per JSON-RPC message (`None`: none registered).
    pub mcp: Option<Arc<crate::mcp_gate::McpGate>>,
    /// Trace context (`[telemetry]`): off, or a span per exchange (and `traceparent`
    /// upstream with `propagate`).
    pub trace: crate::trace::TraceMode,
}

impl Pipeline {
    /// Development pipeline: no authentication, allow all, log records.
    pub fn unauthenticated() -> Self {
        Self {
            authenticator: Arc::new(Unauthenticated),
            authorizer: Arc::new(AllowAll),
            recorder: Arc::new(LogRecorder),
            limits: None,
            credentials: None,
            local: None,
            classifier: None,
            mcp: None,
            trace: crate::trace::TraceMode::Off,
        }
    }
}
