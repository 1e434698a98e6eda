//! The body of `POST /v1/policies/simulate` (and the file of `portcullis policy eval`):
//! parsing and validating a request description (or a raw input document) and turning it
//! into the policy input document for a registered agent, with the data plane's own
//! classifier and input builder. Pure: no engine, no store, no sockets.
//!
//! The format is documented on [`crate::PolicyApi`].

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use portcullis_core::{is_valid_id, is_valid_scope, Principal, TokenInfo};
use portcullis_identity::{validate_subagent, FieldError, ValidationErrors};
use portcullis_llm::{Classification, Classifier, RequestHead};
use portcullis_mcp::headers::{check_mirrored, MCP_METHOD, MCP_NAME};
use portcullis_mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use portcullis_policy::{
    build_input, inspect_buffered, is_credential_header, with_principal, ExchangeFacts, Inspected,
    McpFacts, RequestKind, UsageFacts,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::SystemTime;

/// Most headers a description may carry.
const MAX_HEADERS: usize = 100;
/// Longest path or query accepted.
const MAX_URI_PART: usize = 8192;
/// Most token scopes accepted.
const MAX_SCOPES: usize = 256;

/// Default `proxy.max_inspect_body`: the largest request body the gateway inspects.
pub const DEFAULT_MAX_INSPECT_BODY: usize = 1024 * 1024;

/// `(host, path)` → the name of the MCP server whose endpoint that is.
pub type McpServerLookup = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// How the data plane recognises MCP endpoints (`[[mcp.servers]]`): the server name for a
/// host and path, and the parsing bounds.
#[derive(Clone)]
pub struct McpReader {
    /// `(host, path)` → the server's name, exactly as the data plane matches it.
    pub server: McpServerLookup,
    /// `[mcp]` parsing bounds.
    pub limits: portcullis_mcp::Limits,
}

impl std::fmt::Debug for McpReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpReader")
            .field("limits", &self.limits)
            .finish()
    }
}

/// How the data plane reads a request: its classifier (built-in providers plus
/// `[[llm.providers]]`), body bound (`proxy.max_inspect_body`) and MCP endpoints. The
/// simulator reads a described request with these, so it sees the facts the gateway would.
#[derive(Debug, Clone)]
pub struct RequestReader {
    /// The gateway's classifier.
    pub classifier: Arc<Classifier>,
    /// `proxy.max_inspect_body`.
    pub max_inspect_body: usize,
    /// The MCP endpoints (`None`: none registered).
    pub mcp: Option<McpReader>,
}

impl Default for RequestReader {
    /// The built-in providers and the default body bound.
    fn default() -> Self {
        Self {
            classifier: Arc::new(Classifier::new(&[]).unwrap_or_default()),
            max_inspect_body: DEFAULT_MAX_INSPECT_BODY,
            mcp: None,
        }
    }
}

/// A validated simulate body.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRequest {
    /// The agent to simulate as (tenant checked by the caller).
    pub(crate) agent: String,
    /// What to evaluate.
    pub(crate) what: What,
}

impl SimRequest {
    /// Validates a simulate body (already parsed as a JSON object) and classifies the
    /// described request with `reader`. Every invalid field is reported (422 in the API).
    pub fn parse(
        body: &Map<String, Value>,
        reader: &RequestReader,
    ) -> Result<Self, ValidationErrors> {
        parse(body, reader)
    }

    /// The agent to simulate as.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The classification the gateway derives for the described request (`None` for a
    /// raw input document or a request to a host that is not an LLM provider).
    pub fn classification(&self) -> Option<&Classification> {
        match &self.what {
            What::Request(d) => d.inspected.llm.as_ref(),
            What::Input(_) => None,
        }
    }

    /// The input document to evaluate for `principal` (the registered agent's; a described
    /// token's expiry defaults to `now_secs + ttl_secs`), credential headers removed.
    pub fn to_doc(&self, principal: &Principal, now_secs: u64, ttl_secs: u64) -> Value {
        self.what.to_doc(principal, now_secs, ttl_secs)
    }
}

/// The two forms of a simulate body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum What {
    /// A request description.
    Request(Box<Described>),
    /// A raw input document.
    Input(Map<String, Value>),
}

/// A validated request description, owning everything [`PolicyInput`] borrows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Described {
    kind: RequestKind,
    method: String,
    scheme: String,
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    /// Classification and JSON body, as the data plane would derive them.
    inspected: Inspected,
    usage: UsageFacts,
    token: Option<(Vec<String>, Option<u64>)>,
    subagent: Option<String>,
    credential: Option<String>,
    now: Option<String>,
    /// The MCP message, for a request to an MCP endpoint.
    mcp: Option<Mcp>,
}

/// A described request to an MCP endpoint, read as the data plane reads it.
#[derive(Debug, Clone, PartialEq)]
struct Mcp {
    server: String,
    message: Option<portcullis_mcp::Message>,
    session_id: Option<String>,
    protocol_version: Option<String>,
    batch_size: usize,
}

/// Reads a described HTTP request to an MCP endpoint like the data plane: the body parsed
/// (one message; a batch is decided message by message, so each is simulated alone) and the
/// mirrored headers checked.
fn mcp(
    reader: &RequestReader,
    method: &str,
    host: &str,
    path: &str,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    e: &mut Errors,
) -> Option<Mcp> {
    let r = reader.mcp.as_ref()?;
    let server = (r.server)(host, path)?;
    let text = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut out = Mcp {
        server,
        message: None,
        session_id: text(MCP_SESSION_ID),
        protocol_version: text(MCP_PROTOCOL_VERSION),
        batch_size: 0,
    };
    if !method.eq_ignore_ascii_case("POST") {
        return Some(out);
    }
    let Some(bytes) = body else {
        e.push(
            "request.body",
            "a POST to an MCP endpoint needs a JSON-RPC body",
        );
        return None;
    };
    let parsed = match portcullis_mcp::parse_body(bytes, &r.limits) {
        Ok(p) => p,
        Err(err) => {
            e.push(
                "request.body",
                format!("the gateway refuses this MCP body ({}): {err}", err.code()),
            );
            return None;
        }
    };
    let values =
        |n: &str| -> Vec<&[u8]> { headers.get_all(n).iter().map(|v| v.as_bytes()).collect() };
    if let Err(err) = check_mirrored(&values(MCP_METHOD), &values(MCP_NAME), &parsed) {
        e.push(
            "request.headers",
            format!("the gateway refuses this request (mcp_header_mismatch): {err}"),
        );
        return None;
    }
    if parsed.batch {
        e.push(
            "request.body",
            "a batch is decided message by message (one denial refuses it whole): simulate \
             each message alone",
        );
        return None;
    }
    out.batch_size = parsed.messages.len();
    out.message = parsed.messages.into_iter().next();
    Some(out)
}

/// A stated classification: checked against the derived one, never used instead of it.
#[derive(Debug, Clone, PartialEq)]
struct Llm {
    provider: String,
    api: String,
    model: Option<String>,
    stream: Option<bool>,
    max_tokens: Option<u64>,
}

/// Collects field errors while walking the body.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }

    fn unknown_fields(&mut self, prefix: &str, m: &Map<String, Value>, known: &[&str]) {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let field = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                self.push(field, "unknown field");
            }
        }
    }

    /// An optional string field (`null` counts as absent).
    fn string(&mut self, m: &Map<String, Value>, key: &str, field: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.push(field, "must be a string");
                None
            }
        }
    }

    /// An optional unsigned integer field.
    fn uint(&mut self, m: &Map<String, Value>, key: &str, field: &str) -> Option<u64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => {
                    self.push(field, "must be a non-negative integer");
                    None
                }
            },
        }
    }

    /// An optional object field.
    fn object<'m>(
        &mut self,
        m: &'m Map<String, Value>,
        key: &str,
        field: &str,
    ) -> Option<&'m Map<String, Value>> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.push(field, "must be a JSON object");
                None
            }
        }
    }
}

const TOP_FIELDS: &[&str] = &[
    "agent",
    "request",
    "input",
    "llm",
    "usage",
    "token",
    "subagent",
    "credential",
    "now",
];

/// Validates a simulate body (already parsed as a JSON object).
pub(crate) fn parse(
    body: &Map<String, Value>,
    reader: &RequestReader,
) -> Result<SimRequest, ValidationErrors> {
    let mut e = Errors::default();
    e.unknown_fields("", body, TOP_FIELDS);
    let agent = match body.get("agent") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            e.push("agent", "is required");
            String::new()
        }
        Some(_) => {
            e.push("agent", "must be a string");
            String::new()
        }
    };
    let what = match body.get("input") {
        None | Some(Value::Null) => What::Request(Box::new(described(body, reader, &mut e))),
        Some(Value::Object(input)) => {
            for k in TOP_FIELDS[3..].iter().chain(["request"].iter()) {
                if body.get(*k).is_some_and(|v| !v.is_null()) {
                    e.push(*k, "cannot be combined with input");
                }
            }
            if let Some(kind) = input.get("kind") {
                if !matches!(kind.as_str(), Some("http" | "connect" | "token")) {
                    e.push("input.kind", "must be http, connect or token");
                }
            }
            What::Input(input.clone())
        }
        Some(_) => {
            e.push("input", "must be a JSON object");
            What::Input(Map::new())
        }
    };
    if e.0.is_empty() {
        Ok(SimRequest { agent, what })
    } else {
        Err(ValidationErrors(e.0))
    }
}

fn described(body: &Map<String, Value>, reader: &RequestReader, e: &mut Errors) -> Described {
    let empty = Map::new();
    let req = match body.get("request") {
        Some(Value::Object(r)) => r,
        None | Some(Value::Null) => {
            if body.get("token").is_none_or(Value::is_null) {
                e.push("request", "is required (or give input)");
            }
            &empty
        }
        Some(_) => {
            e.push("request", "must be a JSON object");
            &empty
        }
    };
    e.unknown_fields(
        "request",
        req,
        &[
            "kind", "method", "scheme", "host", "port", "path", "query", "headers", "body",
            "body_raw",
        ],
    );
    let kind = match req.get("kind") {
        None | Some(Value::Null) if body.get("request").is_none_or(Value::is_null) => {
            RequestKind::Token
        }
        None | Some(Value::Null) => RequestKind::Http,
        Some(v) => match v.as_str() {
            Some("http") => RequestKind::Http,
            Some("connect") => RequestKind::Connect,
            Some("token") => RequestKind::Token,
            _ => {
                e.push("request.kind", "must be http, connect or token");
                RequestKind::Http
            }
        },
    };
    let method = e
        .string(req, "method", "request.method")
        .unwrap_or_else(|| match kind {
            RequestKind::Connect => "CONNECT".into(),
            RequestKind::Http | RequestKind::Tunnel => "GET".into(),
            RequestKind::Token | RequestKind::Alert => String::new(),
        });
    if !method.is_empty() && !is_http_token(&method, 32) {
        e.push(
            "request.method",
            "must be an HTTP method token (at most 32 characters)",
        );
    }
    let host = e
        .string(req, "host", "request.host")
        .map(|h| h.to_ascii_lowercase());
    let host = match (host, kind) {
        (Some(h), _) if is_host(&h) => h,
        (Some(_), _) => {
            e.push(
                "request.host",
                "must be a host name or IP address without port (at most 253 characters)",
            );
            String::new()
        }
        (None, RequestKind::Token) => String::new(),
        (None, _) => {
            e.push("request.host", "is required");
            String::new()
        }
    };
    let port = match e.uint(req, "port", "request.port") {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(_) => {
            e.push("request.port", "must be between 1 and 65535");
            None
        }
        None => None,
    };
    let scheme = match e.string(req, "scheme", "request.scheme").as_deref() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        Some(_) => {
            e.push("request.scheme", "must be http or https");
            "https".to_owned()
        }
        None if kind == RequestKind::Token => String::new(),
        None if port == Some(80) && kind == RequestKind::Http => "http".to_owned(),
        None => "https".to_owned(),
    };
    let port = port.unwrap_or(match (kind, scheme.as_str()) {
        (RequestKind::Token, _) => 0,
        (_, "http") => 80,
        _ => 443,
    });
    let (path, query) = path_and_query(req, kind, e);
    let headers = headers(req, e);
    let raw_body = request_body(req, kind, e);
    let stated = llm(body, e);
    let inspected = if kind == RequestKind::Http {
        let head = RequestHead {
            method: &method,
            host: &host,
            port,
            path: &path,
            content_type: headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        };
        inspect_buffered(
            &reader.classifier,
            &head,
            &headers,
            raw_body.as_deref().unwrap_or_default(),
            reader.max_inspect_body,
        )
    } else {
        Inspected::default()
    };
    if let Some(stated) = &stated {
        check_llm(stated, kind, inspected.llm.as_ref(), &host, port, e);
    }
    let mcp = if kind == RequestKind::Http {
        mcp(
            reader,
            &method,
            &host,
            &path,
            &headers,
            raw_body.as_deref(),
            e,
        )
    } else {
        None
    };
    Described {
        mcp,
        kind,
        method,
        scheme,
        host,
        port,
        path,
        query,
        headers,
        inspected,
        usage: usage(body, e),
        token: token(body, e),
        subagent: subagent(body, e),
        credential: credential(body, e),
        now: now(body, e),
    }
}

fn path_and_query(
    req: &Map<String, Value>,
    kind: RequestKind,
    e: &mut Errors,
) -> (String, Option<String>) {
    let path = e.string(req, "path", "request.path");
    let mut query = e.string(req, "query", "request.query");
    let path = match (path, kind) {
        (None, RequestKind::Http) => "/".to_owned(),
        (None, _) => String::new(),
        (Some(p), RequestKind::Connect) if !p.is_empty() => {
            e.push("request.path", "must be empty for connect");
            String::new()
        }
        (Some(p), _) => {
            let (p, q) = match p.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (p, None),
            };
            if let Some(q) = q {
                if query.is_some() {
                    e.push("request.query", "given both in path and as query");
                } else {
                    query = Some(q);
                }
            }
            if kind == RequestKind::Http && !p.starts_with('/') {
                e.push("request.path", "must start with /");
            }
            p
        }
    };
    let bad = |s: &str| s.len() > MAX_URI_PART || s.chars().any(char::is_control);
    if bad(&path) {
        e.push(
            "request.path",
            "must be at most 8192 characters without control characters",
        );
    }
    if let Some(q) = &query {
        let q = q.strip_prefix('?').unwrap_or(q);
        if bad(q) {
            e.push(
                "request.query",
                "must be at most 8192 characters without control characters",
            );
        }
        query = Some(q.to_owned());
    }
    (path, query)
}

fn headers(req: &Map<String, Value>, e: &mut Errors) -> HeaderMap {
    let mut map = HeaderMap::new();
    let Some(h) = e.object(req, "headers", "request.headers") else {
        return map;
    };
    if h.len() > MAX_HEADERS {
        e.push("request.headers", "at most 100 headers");
        return map;
    }
    for (name, v) in h {
        let field = format!("request.headers.{name}");
        let Ok(hn) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
            e.push(field, "is not a valid header name");
            continue;
        };
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in values {
            match v.as_str().map(HeaderValue::from_str) {
                Some(Ok(hv)) => {
                    map.append(hn.clone(), hv);
                }
                Some(Err(_)) => e.push(field.clone(), "is not a valid header value"),
                None => e.push(field.clone(), "must be a string or an array of strings"),
            }
        }
    }
    map
}

/// The request body as the agent would send it: `body` (JSON, sent serialized) or
/// `body_raw` (the exact text, e.g. malformed JSON or a duplicated field).
fn request_body(req: &Map<String, Value>, kind: RequestKind, e: &mut Errors) -> Option<Vec<u8>> {
    let json = req.get("body").filter(|v| !v.is_null());
    let raw = e.string(req, "body_raw", "request.body_raw");
    let bytes = match (json, raw) {
        (Some(_), Some(_)) => {
            e.push(
                "request.body_raw",
                "give request.body or request.body_raw, not both",
            );
            return None;
        }
        (Some(v), None) => serde_json::to_vec(v).ok(),
        (None, Some(text)) => Some(text.into_bytes()),
        (None, None) => None,
    };
    if bytes.is_some() && kind != RequestKind::Http {
        let field = if json.is_some() {
            "request.body"
        } else {
            "request.body_raw"
        };
        e.push(field, "only http requests have a body");
        return None;
    }
    bytes
}

/// Checks a stated `llm` against the classification the gateway derives from the
/// request (host, method, path and body): a simulation never decides on facts the
/// gateway would not have.
fn check_llm(
    stated: &Llm,
    kind: RequestKind,
    derived: Option<&Classification>,
    host: &str,
    port: u16,
    e: &mut Errors,
) {
    let Some(c) = derived else {
        let reason = if kind == RequestKind::Http {
            format!(
                "the gateway does not classify requests to {host}:{port} (not an LLM provider \
                 in its table); leave llm out"
            )
        } else {
            "only http requests are classified; leave llm out".to_owned()
        };
        e.push("llm", reason);
        return;
    };
    let not_inspected = match c.note {
        Some(note) if !c.body_inspected => format!(
            " (the body was not inspected: {})",
            serde_json::to_value(note)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        _ => String::new(),
    };
    let mut mismatch = |field: &str, derived: String, from: &str| {
        e.push(
            format!("llm.{field}"),
            format!("the gateway derives {derived} from {from}{not_inspected}; give that or leave it out"),
        );
    };
    if !stated.provider.is_empty() && stated.provider != *c.provider {
        mismatch("provider", format!("\"{}\"", c.provider), "the host");
    }
    let api = c.api.map(|a| a.as_str()).unwrap_or("");
    if !stated.api.is_empty() && stated.api != api {
        mismatch("api", format!("{api:?}"), "the method and path");
    }
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    if stated.model.is_some() && stated.model != c.model {
        let m = show(c.model.as_ref().map(|m| format!("\"{m}\"")));
        mismatch("model", format!("model {m}"), "the request body");
    }
    if stated.stream.is_some_and(|s| s != c.stream) {
        mismatch("stream", format!("stream {}", c.stream), "the request body");
    }
    if stated.max_tokens.is_some() && stated.max_tokens != c.max_tokens {
        let n = show(c.max_tokens.map(|n| n.to_string()));
        mismatch("max_tokens", format!("max_tokens {n}"), "the request body");
    }
}

fn llm(body: &Map<String, Value>, e: &mut Errors) -> Option<Llm> {
    let l = e.object(body, "llm", "llm")?;
    e.unknown_fields(
        "llm",
        l,
        &["provider", "api", "model", "stream", "max_tokens"],
    );
    let provider = e.string(l, "provider", "llm.provider");
    let api = e.string(l, "api", "llm.api");
    if provider.is_none() {
        e.push("llm.provider", "is required");
    }
    if api.is_none() {
        e.push("llm.api", "is required");
    }
    let stream = match l.get("stream") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            e.push("llm.stream", "must be a boolean");
            None
        }
    };
    Some(Llm {
        provider: provider.unwrap_or_default(),
        api: api.unwrap_or_default(),
        model: e.string(l, "model", "llm.model"),
        stream,
        max_tokens: e.uint(l, "max_tokens", "llm.max_tokens"),
    })
}

fn usage(body: &Map<String, Value>, e: &mut Errors) -> UsageFacts {
    let Some(u) = e.object(body, "usage", "usage") else {
        return UsageFacts::default();
    };
    e.unknown_fields(
        "usage",
        u,
        &[
            "requests_last_minute",
            "tokens_today",
            "mcp_calls_last_minute",
            "usd_today",
            "usd_month",
        ],
    );
    let mut dollars = |key: &str| match u.get(key) {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_f64().and_then(portcullis_core::Usd::from_dollars) {
            Some(d) => d.micros(),
            None => {
                e.push(
                    format!("usage.{key}"),
                    "must be a non-negative number of dollars",
                );
                0
            }
        },
    };
    let usd_today_micros = dollars("usd_today");
    let usd_month_micros = dollars("usd_month");
    UsageFacts {
        requests_last_minute: e
            .uint(u, "requests_last_minute", "usage.requests_last_minute")
            .unwrap_or(0),
        tokens_today: e.uint(u, "tokens_today", "usage.tokens_today").unwrap_or(0),
        usd_today_micros,
        usd_month_micros,
        mcp_calls_last_minute: e
            .uint(u, "mcp_calls_last_minute", "usage.mcp_calls_last_minute")
            .unwrap_or(0),
    }
}

fn token(body: &Map<String, Value>, e: &mut Errors) -> Option<(Vec<String>, Option<u64>)> {
    let t = e.object(body, "token", "token")?;
    e.unknown_fields("token", t, &["scopes", "exp"]);
    let scopes = match t.get("scopes") {
        Some(Value::Array(a)) if a.len() <= MAX_SCOPES => {
            let mut out = Vec::with_capacity(a.len());
            for (i, s) in a.iter().enumerate() {
                match s.as_str() {
                    Some(s) if is_valid_scope(s) => out.push(s.to_owned()),
                    _ => e.push(format!("token.scopes[{i}]"), "is not a valid scope"),
                }
            }
            out
        }
        Some(Value::Array(_)) => {
            e.push("token.scopes", "at most 256 scopes");
            Vec::new()
        }
        None | Some(Value::Null) => {
            e.push("token.scopes", "is required");
            Vec::new()
        }
        Some(_) => {
            e.push("token.scopes", "must be an array of strings");
            Vec::new()
        }
    };
    Some((scopes, e.uint(t, "exp", "token.exp")))
}

fn subagent(body: &Map<String, Value>, e: &mut Errors) -> Option<String> {
    let s = e.string(body, "subagent", "subagent")?;
    match validate_subagent(s.as_bytes()) {
        Ok(_) => Some(s),
        Err(err) => {
            e.push("subagent", err.to_string());
            None
        }
    }
}

fn credential(body: &Map<String, Value>, e: &mut Errors) -> Option<String> {
    let c = e.string(body, "credential", "credential")?;
    if !is_valid_id(&c) {
        e.push(
            "credential",
            "must be a credential name (^[a-z][a-z0-9_]{1,63}$)",
        );
    }
    Some(c)
}

fn now(body: &Map<String, Value>, e: &mut Errors) -> Option<String> {
    let n = e.string(body, "now", "now")?;
    if !is_rfc3339(&n) {
        e.push(
            "now",
            "must be an RFC 3339 timestamp like 2026-01-01T12:00:00Z",
        );
    }
    Some(n)
}

/// An RFC 7230 token of at most `max` bytes.
fn is_http_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A DNS name, IPv4 address or (bracketless) IPv6 address, lower-case.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:".contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` with plausible field ranges.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    }
}

impl Described {
    /// The principal to simulate as: the registered agent's, with the token's scopes
    /// when a token is described (`exp` defaults to `now_secs + ttl_secs`).
    fn principal(&self, base: &Principal, now_secs: u64, ttl_secs: u64) -> Principal {
        let mut p = base.clone();
        if let Some((scopes, exp)) = &self.token {
            p.scopes = Arc::from(scopes.clone());
            p.token = Some(Arc::new(TokenInfo {
                scopes: scopes.clone(),
                exp: exp.unwrap_or_else(|| now_secs.saturating_add(ttl_secs)),
                jti: "simulated".to_owned(),
            }));
        }
        p
    }

    /// The input document, built by the data plane's builder, without `now` unless the
    /// description fixed it (the engine fills in its own clock).
    fn to_doc(&self, principal: &Principal) -> Value {
        let input = build_input(&ExchangeFacts {
            kind: self.kind,
            principal,
            subagent: self.subagent.as_deref(),
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            llm: self.inspected.llm.as_ref(),
            body: self.inspected.body.as_ref(),
            usage: self.usage,
            credential: self.credential.as_deref(),
            mcp: self.mcp.as_ref().map(|m| {
                McpFacts::of(
                    &m.server,
                    m.message.as_ref(),
                    m.session_id.as_deref(),
                    m.protocol_version.as_deref(),
                    m.batch_size,
                )
            }),
        });
        let mut doc = input.to_json(SystemTime::now());
        if let Some(obj) = doc.as_object_mut() {
            match &self.now {
                Some(n) => {
                    obj.insert("now".into(), Value::String(n.clone()));
                }
                None => {
                    obj.remove("now");
                }
            }
        }
        doc
    }
}

impl What {
    /// The input document to evaluate for `principal` (the registered agent's; its token
    /// expiry defaults from `now_secs + ttl_secs`), credential headers removed.
    pub(crate) fn to_doc(&self, principal: &Principal, now_secs: u64, ttl_secs: u64) -> Value {
        match self {
            What::Request(d) => d.to_doc(&d.principal(principal, now_secs, ttl_secs)),
            What::Input(raw) => {
                let mut doc = with_principal(Value::Object(raw.clone()), principal);
                strip_credential_headers(&mut doc);
                doc
            }
        }
    }
}

/// Removes credential headers from `request.headers` of a raw input document.
fn strip_credential_headers(doc: &mut Value) {
    let headers = doc
        .get_mut("request")
        .and_then(|r| r.get_mut("headers"))
        .and_then(Value::as_object_mut);
    if let Some(h) = headers {
        h.retain(|name, _| !is_credential_header(name));
    }
}

#[cfg(test)]
#[path = "sim_request_tests.rs"]
mod tests;
