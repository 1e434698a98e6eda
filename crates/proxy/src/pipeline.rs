//! The phases the data plane calls at fixed points, as narrow interfaces.
//!
//! `authenticate → authorize → limit → forward → record`. The proxy owns sockets and
//! HTTP; these traits own decisions and bookkeeping, so each is tested alone and
//! the proxy is tested with simple implementations. Identity, policy and audit
//! plug in here.

use http::{HeaderMap, HeaderValue, Method};
use portcullis_core::{ApiError, Decision, Principal, Verdict};
use portcullis_limits::{Admission, Permit, Refusal, UsageSnapshot};
use portcullis_llm::{Classification, Classifier};
use std::net::SocketAddr;
use std::sync::Arc;

/// What kind of request a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A CONNECT tunnel request.
    Connect,
    /// A forwarded HTTP request.
    Http,
}

impl RequestKind {
    /// Label for policy input and records.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Connect => "connect",
            RequestKind::Http => "http",
        }
    }
}

/// Facts about a request, borrowed from it, for authorization.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// Connect or http.
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
    /// Path (empty for CONNECT).
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
}

/// A decision and how to answer it if it blocks.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The decision.
    pub decision: Decision,
    /// Answer a block with a provider-shaped stub (`on_block = "stub"`) when possible.
    pub stub: bool,
}

/// A provider-shaped refusal (`on_block = "stub"`).
#[derive(Debug, Clone)]
pub struct Stub {
    /// Body bytes.
    pub body: Vec<u8>,
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
}

/// Phase 1: who is this?
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates from `Proxy-Authorization`. Errors are answered as they are
    /// (407 with `Proxy-Authenticate`, or 403 for a disabled agent).
    fn authenticate(
        &self,
        proxy_authorization: Option<&HeaderValue>,
        client_addr: SocketAddr,
    ) -> Result<Principal, ApiError>;

    /// Validates an `X-Portcullis-Subagent` value for `principal` and registers the
    /// sub-agent on first use. Errors (400) are answered as they are.
    fn subagent(&self, principal: &Principal, value: &HeaderValue) -> Result<String, ApiError>;

    /// Re-validates a principal authenticated earlier on the same tunnel (credential
    /// rotated, agent disabled or suspended, token expired) before each inner request of
    /// an intercepted tunnel. Defaults to accepting it unchanged.
    fn recheck(&self, principal: &Principal) -> Result<Principal, ApiError> {
        Ok(principal.clone())
    }

    /// Whether every request is let through without credentials (development only).
    fn is_open(&self) -> bool {
        false
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

/// A JSON answer from a gateway-local endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: serde_json::Value,
}

/// Endpoints the gateway serves on the proxy port besides `/healthz`
/// (e.g. `POST /oauth/token`, `GET /.well-known/jwks.json`).
pub trait LocalService: Send + Sync + 'static {
    /// Whether `method path` is served here (decides whether the body is read).
    fn serves(&self, method: &Method, path: &str) -> bool;
    /// Answers a request that [`LocalService::serves`] accepted.
    fn handle(&self, req: LocalRequest) -> LocalResponse;
}

/// Phase 2: may it?
pub trait Authorizer: Send + Sync + 'static {
    /// Decides one request. Must not fail: an internal error is a deny (fail closed).
    fn authorize(&self, facts: &RequestFacts<'_>) -> Authorization;

    /// The error answered for a denied decision (403 with the policy's reason).
    fn blocked(&self, decision: &Decision) -> ApiError;

    /// A provider-shaped refusal for a recognised LLM API, if one exists for it.
    fn stub(&self, _decision: &Decision, _llm: &Classification) -> Option<Stub> {
        None
    }
}

/// Phase 3: rate limits and token budgets, for requests policy allowed.
pub trait RequestLimits: Send + Sync + 'static {
    /// The agent's recent usage, for the policy input.
    fn usage(&self, principal: &Principal) -> UsageSnapshot;

    /// Takes the agent's concurrency slot as soon as it is authenticated, before its body is
    /// read (a stalled upload holds a slot too), or refuses (answered 429).
    fn admit(&self, principal: &Principal) -> Result<Admission, Refusal>;

    /// Admits a request policy allowed, holding `admission`, or refuses it (answered 429).
    /// `llm` sizes the token reservation of an LLM request together with `body_len`, the
    /// request body's size in bytes. The permit is held until the response ends, then settled
    /// with the recorded usage.
    fn acquire(
        &self,
        principal: &Principal,
        llm: Option<&Classification>,
        body_len: u64,
        admission: Admission,
    ) -> Result<Permit, Refusal>;
}

/// A credential to set on an upstream request. Its `Debug` never shows the value, and the
/// value is marked sensitive (never indexed by HPACK, shown as `Sensitive` by `http`).
#[derive(Clone)]
pub struct Injection {
    /// The credential's name (policy input, audit, metrics).
    pub name: Arc<str>,
    /// Header to set.
    pub header: http::HeaderName,
    /// Header value, secret included.
    pub value: HeaderValue,
    /// `true`: replace what the agent sent; `false`: only when it sent none.
    pub replace: bool,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("name", &self.name)
            .field("header", &self.header)
            .field("replace", &self.replace)
            .finish_non_exhaustive()
    }
}

impl Injection {
    /// Applies the credential to upstream request headers; returns whether it was set.
    pub fn apply(&self, headers: &mut HeaderMap) -> bool {
        if !self.replace && headers.contains_key(&self.header) {
            return false;
        }
        headers.insert(self.header.clone(), self.value.clone());
        true
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

    /// The header to set for credential `name`. An error (the secret cannot be read) refuses
    /// the request: it is never forwarded without the credential policy expected.
    fn injection(&self, name: &str) -> Result<Injection, ApiError>;
}

/// Development mode (`proxy.allow_unauthenticated = true`): everyone is `anonymous`.
#[derive(Debug, Default)]
pub struct Unauthenticated;

impl Authenticator for Unauthenticated {
    fn authenticate(&self, _: Option<&HeaderValue>, _: SocketAddr) -> Result<Principal, ApiError> {
        Ok(Principal::anonymous())
    }

    fn subagent(&self, _: &Principal, value: &HeaderValue) -> Result<String, ApiError> {
        match value.to_str() {
            Ok(v) if portcullis_core::is_valid_id(v) => Ok(v.to_owned()),
            _ => Err(ApiError::bad_request(
                "invalid_subagent",
                "X-Portcullis-Subagent must match ^[a-z][a-z0-9_]{1,63}$",
            )),
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

    fn blocked(&self, decision: &Decision) -> ApiError {
        // AllowAll never denies; answer coherently should a caller ask anyway.
        ApiError::forbidden("policy_denied", "request denied")
            .with("decision_id", decision.decision_id.as_str())
    }
}

/// One finished request or tunnel, handed to the recorder (the audit trail).
#[derive(Debug, Clone)]
pub struct Record {
    /// Time-ordered unique id.
    pub id: String,
    /// Start time, Unix milliseconds.
    pub ts_ms: u64,
    /// `http`, `connect` (refused CONNECT) or `tunnel` (a spliced tunnel at close).
    pub kind: &'static str,
    /// Agent id, when authenticated.
    pub agent_id: Option<Arc<str>>,
    /// Tenant, when authenticated.
    pub tenant: Option<Arc<str>>,
    /// Sub-agent, when given.
    pub subagent: Option<String>,
    /// LLM provider, when classified.
    pub provider: Option<Arc<str>>,
    /// LLM API (`chat.completions`, `messages`, ...), when recognised.
    pub api: Option<&'static str>,
    /// Model, when read from the body (or an Azure deployment).
    pub model: Option<String>,
    /// Whether the LLM request asked for a stream.
    pub stream: bool,
    /// LLM token usage read from the response (classified requests only).
    pub usage: Option<portcullis_llm::Usage>,
    /// Method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Path (empty for tunnels).
    pub path: String,
    /// Outcome.
    pub verdict: Verdict,
    /// The policy decision, when one was made.
    pub decision: Option<Arc<Decision>>,
    /// Status answered to the client (200 for an established tunnel).
    pub status: u16,
    /// Error code when the request failed or was refused.
    pub error: Option<String>,
    /// Time from request received to response end or tunnel close.
    pub latency_ms: f64,
    /// Time from request received to upstream response head.
    pub upstream_ttfb_ms: Option<f64>,
    /// Request body bytes (client → upstream; tunnel: bytes sent upstream).
    pub bytes_in: u64,
    /// Response body bytes (upstream → client; tunnel: bytes sent to the client).
    pub bytes_out: u64,
    /// Whether the body ended normally (false: client abort or upstream error).
    pub completed: bool,
    /// Client address.
    pub client_addr: SocketAddr,
    /// Why the data plane refused a request policy allowed (the limit that was hit).
    pub refusal: Option<String>,
    /// Name of the credential injected upstream (never its value).
    pub credential: Option<Arc<str>>,
    /// The gateway terminated the client's TLS: an intercepted tunnel, or a request in one.
    pub tls_intercepted: bool,
}

/// Phase last: keep the record. Must not block the request path.
pub trait Recorder: Send + Sync + 'static {
    /// Takes one record.
    fn record(&self, record: Record);

    /// Whether a request may start, decided before anything is forwarded: a full
    /// fail-closed audit trail refuses (503); a full blocking one waits (bounded).
    fn admit(&self) -> futures_util::future::BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Writes each record as a structured log line (target `portcullis::access`).
#[derive(Debug, Default)]
pub struct LogRecorder;

impl Recorder for LogRecorder {
    fn record(&self, r: Record) {
        self.record_ref(&r);
    }
}

impl LogRecorder {
    /// Writes the access line for `r`.
    pub fn record_ref(&self, r: &Record) {
        tracing::info!(
            target: "portcullis::access",
            id = %r.id,
            kind = r.kind,
            agent = r.agent_id.as_deref().unwrap_or("-"),
            subagent = r.subagent.as_deref().unwrap_or("-"),
            provider = r.provider.as_deref().unwrap_or("-"),
            model = r.model.as_deref().unwrap_or("-"),
            method = %r.method,
            scheme = r.scheme,
            host = %r.host,
            port = r.port,
            path = %r.path,
            verdict = r.verdict.as_str(),
            status = r.status,
            error = r.error.as_deref().unwrap_or("-"),
            latency_ms = r.latency_ms,
            bytes_in = r.bytes_in,
            bytes_out = r.bytes_out,
            completed = r.completed,
            client = %r.client_addr,
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
        }
    }
}
