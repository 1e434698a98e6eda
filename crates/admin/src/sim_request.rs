//! The body of `POST /v1/policies/simulate`: parsing and validating a request description
//! (or a raw input document) and turning it into the policy input document for a
//! registered agent. Pure: no engine, no store, no sockets.
//!
//! The format is documented on [`crate::PolicyApi`].

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use portcullis_core::{is_valid_id, is_valid_scope, Principal, TokenInfo};
use portcullis_identity::{validate_subagent, FieldError, ValidationErrors};
use portcullis_policy::{
    is_credential_header, with_principal, LlmFacts, PolicyInput, RequestFacts, RequestKind,
    UsageFacts,
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

/// A validated simulate body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimRequest {
    /// The agent to simulate as (tenant checked by the caller).
    pub(crate) agent: String,
    /// What to evaluate.
    pub(crate) what: What,
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
    body: Option<Value>,
    llm: Option<Llm>,
    usage: UsageFacts,
    token: Option<(Vec<String>, Option<u64>)>,
    subagent: Option<String>,
    credential: Option<String>,
    now: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Llm {
    provider: String,
    api: String,
    model: Option<String>,
    stream: bool,
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
pub(crate) fn parse(body: &Map<String, Value>) -> Result<SimRequest, ValidationErrors> {
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
        None | Some(Value::Null) => What::Request(Box::new(described(body, &mut e))),
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

fn described(body: &Map<String, Value>, e: &mut Errors) -> Described {
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
            RequestKind::Http => "GET".into(),
            RequestKind::Token => String::new(),
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
    let body_json = req.get("body").filter(|v| !v.is_null()).cloned();
    Described {
        kind,
        method,
        scheme,
        host,
        port,
        path,
        query,
        headers,
        body: body_json,
        llm: llm(body, e),
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
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            e.push("llm.stream", "must be a boolean");
            false
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
    e.unknown_fields("usage", u, &["requests_last_minute", "tokens_today"]);
    UsageFacts {
        requests_last_minute: e
            .uint(u, "requests_last_minute", "usage.requests_last_minute")
            .unwrap_or(0),
        tokens_today: e.uint(u, "tokens_today", "usage.tokens_today").unwrap_or(0),
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

    /// The input document, without `now` unless the description fixed it (the engine
    /// fills in its own clock).
    fn to_doc(&self, principal: &Principal) -> Value {
        let mut input = PolicyInput::new(self.kind, principal).with_request(RequestFacts {
            method: &self.method,
            scheme: &self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            query: self.query.as_deref(),
            headers: Some(&self.headers),
            body: self.body.as_ref(),
        });
        if let Some(l) = &self.llm {
            input = input.with_llm(LlmFacts {
                provider: &l.provider,
                api: &l.api,
                model: l.model.as_deref(),
                stream: l.stream,
                max_tokens: l.max_tokens,
            });
        }
        input = input.with_usage(self.usage);
        if let Some(s) = &self.subagent {
            input = input.with_subagent(s);
        }
        if let Some(c) = &self.credential {
            input = input.with_credential(c);
        }
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
mod tests {
    use super::*;
    use portcullis_core::{AgentMode, RiskLevel};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn fields(r: Result<SimRequest, ValidationErrors>) -> Vec<String> {
        match r {
            Ok(_) => Vec::new(),
            Err(v) => v.0.into_iter().map(|e| e.field).collect(),
        }
    }

    fn principal() -> Principal {
        Principal {
            agent_id: Arc::from("bot"),
            tenant: Arc::from("acme"),
            groups: Arc::from(vec!["llm".to_owned()]),
            risk_level: RiskLevel::High,
            mode: AgentMode::Active,
            attributes: Arc::new(Map::new()),
            scopes: Arc::from(vec!["openai:*:*".to_owned()]),
            token: None,
            generation: 1,
        }
    }

    #[test]
    fn full_description_builds_the_design_input() {
        let r = parse(&obj(json!({
            "agent": "bot",
            "request": {"method": "POST", "host": "API.OpenAI.com", "path": "/v1/chat/completions?x=1",
                        "headers": {"Content-Type": "application/json", "Authorization": "Bearer sk-live",
                                    "X-Api-Key": "k", "Cookie": "s=1", "x-multi": ["a", "b"]},
                        "body": {"model": "gpt-4o"}},
            "llm": {"provider": "openai", "api": "chat.completions", "model": "gpt-4o", "stream": true, "max_tokens": 10},
            "usage": {"requests_last_minute": 3},
            "subagent": "planner",
            "now": "2026-01-01T12:00:00Z"
        })))
        .unwrap();
        assert_eq!(r.agent, "bot");
        let doc = r.what.to_doc(&principal(), 100, 600);
        assert_eq!(doc["kind"], "http");
        assert_eq!(doc["agent"]["id"], "bot");
        assert_eq!(doc["agent"]["tenant"], "acme");
        let req = &doc["request"];
        assert_eq!(req["host"], "api.openai.com");
        assert_eq!(req["scheme"], "https");
        assert_eq!(req["port"], 443);
        assert_eq!(req["path"], "/v1/chat/completions");
        assert_eq!(req["query"], json!({"x": "1"}));
        assert_eq!(
            req["headers"],
            json!({"content-type": "application/json", "x-multi": "a, b"})
        );
        assert_eq!(req["body"], json!({"model": "gpt-4o"}));
        assert_eq!(doc["llm"]["stream"], true);
        assert_eq!(doc["usage"]["requests_last_minute"], 3);
        assert_eq!(doc["subagent"], "planner");
        assert_eq!(doc["now"], "2026-01-01T12:00:00Z");
        let text = doc.to_string();
        for secret in ["sk-live", "Bearer", "s=1", "x-api-key"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn defaults_by_kind() {
        let d = |v: Value| parse(&obj(v)).unwrap().what.to_doc(&principal(), 100, 600);
        let c =
            d(json!({"agent": "bot", "request": {"kind": "connect", "host": "api.stripe.com"}}));
        assert_eq!(
            (
                &c["request"]["method"],
                &c["request"]["port"],
                &c["request"]["path"]
            ),
            (&json!("CONNECT"), &json!(443), &json!(""))
        );
        assert!(c.get("now").is_none(), "engine clock fills now");
        let h = d(json!({"agent": "bot", "request": {"host": "example.com", "port": 80}}));
        assert_eq!(h["request"]["scheme"], "http");
        assert_eq!(h["request"]["method"], "GET");
        assert_eq!(h["request"]["path"], "/");
        let t = d(json!({"agent": "bot", "token": {"scopes": ["openai:chat:create"]}}));
        assert_eq!(t["kind"], "token");
        assert_eq!(t["token"]["scopes"], json!(["openai:chat:create"]));
        assert_eq!(t["token"]["exp"], 700);
        assert_eq!(t["agent"]["scopes"], json!(["openai:chat:create"]));
    }

    #[test]
    fn raw_input_keeps_the_document_but_not_the_identity_or_credentials() {
        let r = parse(&obj(json!({
            "agent": "bot",
            "input": {"kind": "http", "agent": {"id": "root", "tenant": "globex"},
                      "request": {"host": "api.stripe.com", "method": "POST",
                                  "headers": {"authorization": "Bearer x", "proxy-authorization": "Basic y", "accept": "*/*"}},
                      "custom": [1, 2]}
        })))
        .unwrap();
        let doc = r.what.to_doc(&principal(), 0, 0);
        assert_eq!(doc["agent"]["id"], "bot");
        assert_eq!(doc["agent"]["tenant"], "acme");
        assert_eq!(doc["request"]["headers"], json!({"accept": "*/*"}));
        assert_eq!(doc["custom"], json!([1, 2]));
    }

    #[test]
    fn invalid_bodies_name_every_bad_field() {
        assert_eq!(fields(parse(&obj(json!({})))), ["agent", "request"]);
        assert_eq!(
            fields(parse(&obj(json!({"agent": 7, "request": {"host": "a.b"}})))),
            ["agent"]
        );
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"host": "a.b"}, "extra": 1})
            ))),
            ["extra"]
        );
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"host": "a.b"}, "input": {}})
            ))),
            ["request"]
        );
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "input": {"kind": "ftp"}})
            ))),
            ["input.kind"]
        );
        assert_eq!(
            fields(parse(&obj(json!({"agent": "bot", "input": []})))),
            ["input"]
        );
        let bad = json!({"agent": "bot",
            "request": {"kind": "gopher", "method": "GE T", "host": "a b", "port": 70000,
                        "scheme": "ftp", "path": "nope", "headers": {"bad name": "x", "x": 1, "y": "a\u{0}b"},
                        "frob": 1},
            "llm": {"model": 3, "stream": "yes", "max_tokens": -1},
            "usage": {"tokens_today": "many"},
            "token": {"scopes": ["Not A Scope"]},
            "subagent": "Bad Name",
            "credential": "../x",
            "now": "yesterday"});
        let f = fields(parse(&obj(bad)));
        for want in [
            "request.frob",
            "request.kind",
            "request.method",
            "request.host",
            "request.port",
            "request.scheme",
            "request.path",
            "request.headers.bad name",
            "request.headers.x",
            "request.headers.y",
            "llm.provider",
            "llm.api",
            "llm.model",
            "llm.stream",
            "llm.max_tokens",
            "usage.tokens_today",
            "token.scopes[0]",
            "subagent",
            "credential",
            "now",
        ] {
            assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
        }
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"kind": "http"}})
            ))),
            ["request.host"]
        );
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"host": "a.b", "path": "/x?a", "query": "b"}})
            ))),
            ["request.query"]
        );
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"kind": "connect", "host": "a.b", "path": "/x"}})
            ))),
            ["request.path"]
        );
    }

    #[test]
    fn header_floods_and_null_request_are_handled() {
        let many: Map<String, Value> = (0..101)
            .map(|i| (format!("x-h{i}"), Value::from("v")))
            .collect();
        assert_eq!(
            fields(parse(&obj(
                json!({"agent": "bot", "request": {"host": "a.b", "headers": many}})
            ))),
            ["request.headers"]
        );
        let r = parse(&obj(
            json!({"agent": "bot", "request": null, "token": {"scopes": []}}),
        ))
        .unwrap();
        assert_eq!(r.what.to_doc(&principal(), 0, 0)["kind"], "token");
    }

    #[test]
    fn rfc3339_shapes() {
        for ok in [
            "2026-01-01T12:00:00Z",
            "2026-01-01t12:00:00z",
            "2026-12-31T23:59:60.123456789+05:30",
            "2026-01-01T00:00:00-00:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+5:30",
            "2026-01-01 00:00:00Z",
            "２０２６-01-01T00:00:00Z",
            "2026-01-01T00:00:00Zjunk",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
