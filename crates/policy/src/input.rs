//! The input document (`input`) of DESIGN §4, built once per request from borrowed facts.
//!
//! The proxy fills a [`PolicyInput`] with references to what it already holds; the engine
//! turns it into a regorus value only on a cache miss, and hashes only the fields the
//! applicable policies can read to form the cache key.

use crate::mask::FieldMask;
use portcullis_core::{AgentMode, Principal, RiskLevel, TokenInfo};
use regorus::Value;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

pub use portcullis_core::RequestKind;

/// The request line facts (`input.request`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// Method, e.g. `GET`, `CONNECT`.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Destination host (lower-case, no port).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// Path without the query; empty for CONNECT.
    pub path: &'a str,
    /// Raw query string without `?`; parsed into `input.request.query`.
    pub query: Option<&'a str>,
    /// Request headers; credentials are removed when building the input.
    pub headers: Option<&'a http::HeaderMap>,
    /// Parsed JSON body, when the body was inspected.
    pub body: Option<&'a Json>,
}

/// LLM classification (`input.llm`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LlmFacts<'a> {
    /// Provider, e.g. `openai`.
    pub provider: &'a str,
    /// API, e.g. `chat.completions`, `messages`.
    pub api: &'a str,
    /// Requested model.
    pub model: Option<&'a str>,
    /// Whether the request streams.
    pub stream: bool,
    /// Requested output token cap.
    pub max_tokens: Option<u64>,
}

/// Usage counters (`input.usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UsageFacts {
    /// Requests by this agent in the last minute.
    pub requests_last_minute: u64,
    /// LLM tokens used by this agent today.
    pub tokens_today: u64,
    /// MCP tool calls by this agent in the last minute (before this request).
    pub mcp_calls_last_minute: u64,
    /// LLM spend of this agent today, micro-dollars (`usage.usd_today`, in dollars).
    pub usd_today_micros: u64,
    /// LLM spend of this agent this month, micro-dollars (`usage.usd_month`, in dollars).
    pub usd_month_micros: u64,
}

impl<'a> McpFacts<'a> {
    /// The facts of `message` (`None`: a GET or DELETE of the endpoint) sent to `server`.
    pub fn of(
        server: &'a str,
        message: Option<&'a portcullis_mcp::Message>,
        session_id: Option<&'a str>,
        protocol_version: Option<&'a str>,
        batch_size: usize,
    ) -> Self {
        Self {
            server,
            method: message.and_then(|m| m.method.as_deref()),
            kind: message.map(|m| m.kind.as_str()),
            tool: message.and_then(|m| m.tool.as_deref()),
            name: message.and_then(|m| m.name.as_deref()),
            arguments: message.and_then(portcullis_mcp::Message::arguments),
            params: message.and_then(|m| m.params.as_ref()),
            session_id,
            protocol_version,
            batch_size,
        }
    }
}

/// One MCP message (`input.mcp`): a JSON-RPC message of a POST to a `[[mcp.servers]]`
/// endpoint, or a GET/DELETE of that endpoint (then `method` and `kind` are absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct McpFacts<'a> {
    /// The `[[mcp.servers]]` name.
    pub server: &'a str,
    /// The method exactly as sent (case and Unicode kept: an unknown method is unknown).
    pub method: Option<&'a str>,
    /// `request`, `notification` or `response`.
    pub kind: Option<&'a str>,
    /// The tool of an exact `tools/call` (`params.name`).
    pub tool: Option<&'a str>,
    /// `params.name` of tools/call and prompts/get, `params.uri` of resources/read,
    /// resources/subscribe and resources/unsubscribe.
    pub name: Option<&'a str>,
    /// `params.arguments` (parsed JSON).
    pub arguments: Option<&'a Json>,
    /// `params` (parsed JSON).
    pub params: Option<&'a Json>,
    /// `Mcp-Session-Id`, when sent.
    pub session_id: Option<&'a str>,
    /// `MCP-Protocol-Version`, when sent.
    pub protocol_version: Option<&'a str>,
    /// Messages in the body (1 unless a batch; 0 for GET/DELETE).
    pub batch_size: usize,
}

/// Everything a decision depends on, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// `http`, `connect` or `token`.
    pub kind: RequestKind,
    /// The authenticated agent.
    pub principal: &'a Principal,
    /// Sub-agent name from `X-Portcullis-Subagent`.
    pub subagent: Option<&'a str>,
    /// Token claims; defaults to the principal's token. For `kind = token`, the token
    /// being requested (its scopes are the requested scopes).
    pub token: Option<&'a TokenInfo>,
    /// Request facts.
    pub request: RequestFacts<'a>,
    /// LLM classification, when classified.
    pub llm: Option<LlmFacts<'a>>,
    /// Usage counters.
    pub usage: UsageFacts,
    /// Name of the credential that would be injected, if any.
    pub credential: Option<&'a str>,
    /// The MCP message, for requests to MCP servers.
    pub mcp: Option<McpFacts<'a>>,
    /// Decision time; the engine's clock when `None`.
    pub now: Option<SystemTime>,
}

impl<'a> PolicyInput<'a> {
    /// An input with empty request facts; fill the rest with struct update or setters.
    pub fn new(kind: RequestKind, principal: &'a Principal) -> Self {
        Self {
            kind,
            principal,
            subagent: None,
            token: principal.token.as_deref(),
            request: RequestFacts::default(),
            llm: None,
            usage: UsageFacts::default(),
            credential: None,
            mcp: None,
            now: None,
        }
    }

    /// Sets the MCP message.
    pub fn with_mcp(mut self, mcp: McpFacts<'a>) -> Self {
        self.mcp = Some(mcp);
        self
    }

    /// Sets the request facts.
    pub fn with_request(mut self, request: RequestFacts<'a>) -> Self {
        self.request = request;
        self
    }

    /// Sets the LLM classification.
    pub fn with_llm(mut self, llm: LlmFacts<'a>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Sets the usage counters.
    pub fn with_usage(mut self, usage: UsageFacts) -> Self {
        self.usage = usage;
        self
    }

    /// Sets the sub-agent.
    pub fn with_subagent(mut self, subagent: &'a str) -> Self {
        self.subagent = Some(subagent);
        self
    }

    /// Sets the credential name.
    pub fn with_credential(mut self, credential: &'a str) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Sets the decision time.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = Some(now);
        self
    }

    /// Builds the regorus input value.
    pub fn to_value(&self, now: SystemTime) -> Value {
        self.build_value(now, FieldMask::ALL)
    }

    /// Builds the input value with only the expensive fields (`request.headers`,
    /// `request.body`, `agent.attributes`) that `mask` selects: a field no applicable policy
    /// reads is left out, which no policy can observe.
    pub(crate) fn build_value(&self, now: SystemTime, mask: FieldMask) -> Value {
        let p = self.principal;
        let mut root = BTreeMap::new();
        root.insert(key(Key::Kind), s(self.kind.as_str()));
        let mut agent = BTreeMap::new();
        agent.insert(key(Key::Id), s(&p.agent_id));
        agent.insert(key(Key::Tenant), s(&p.tenant));
        agent.insert(key(Key::Groups), strings(p.groups.iter()));
        agent.insert(key(Key::RiskLevel), s(risk_str(p.risk_level)));
        agent.insert(key(Key::Mode), s(agent_mode_str(p.mode)));
        if mask.has(FieldMask::AGENT) && !p.attributes.is_empty() {
            agent.insert(
                key(Key::Attributes),
                Value::from(Json::Object((*p.attributes).clone())),
            );
        } else {
            agent.insert(key(Key::Attributes), Value::new_object());
        }
        agent.insert(key(Key::Scopes), strings(p.scopes.iter()));
        root.insert(key(Key::Agent), Value::from(agent));
        root.insert(
            key(Key::Subagent),
            self.subagent.map(s).unwrap_or(Value::Null),
        );
        if let Some(t) = self.token {
            let mut tok = BTreeMap::new();
            tok.insert(key(Key::Scopes), strings(t.scopes.iter()));
            tok.insert(key(Key::Exp), Value::from(t.exp));
            tok.insert(key(Key::Jti), s(&t.jti));
            root.insert(key(Key::Token), Value::from(tok));
        }
        let r = &self.request;
        let mut req = BTreeMap::new();
        req.insert(key(Key::Method), s(r.method));
        if let Some(m) = r.method_override() {
            req.insert(key(Key::MethodOverride), Value::from(m));
        }
        req.insert(key(Key::Scheme), s(r.scheme));
        req.insert(key(Key::Host), s(r.host));
        req.insert(key(Key::Port), Value::from(u64::from(r.port)));
        req.insert(key(Key::Path), s(r.path));
        req.insert(key(Key::Query), query_value(r.query.unwrap_or("")));
        let mut headers = BTreeMap::new();
        if let Some(h) = r.headers.filter(|_| mask.has(FieldMask::HEADERS)) {
            for name in h.keys() {
                if is_credential_header(name.as_str()) {
                    continue;
                }
                headers.insert(s(name.as_str()), s(&joined_header(h, name)));
            }
        }
        req.insert(key(Key::Headers), Value::from(headers));
        if let Some(body) = r.body.filter(|_| mask.has(FieldMask::BODY)) {
            req.insert(key(Key::Body), Value::from(body.clone()));
        }
        root.insert(key(Key::Request), Value::from(req));
        if let Some(l) = &self.llm {
            let mut llm = BTreeMap::new();
            llm.insert(key(Key::Provider), s(l.provider));
            llm.insert(key(Key::Api), s(l.api));
            llm.insert(key(Key::Model), l.model.map(s).unwrap_or(Value::Null));
            llm.insert(key(Key::Stream), Value::from(l.stream));
            llm.insert(
                key(Key::MaxTokens),
                l.max_tokens.map(Value::from).unwrap_or(Value::Null),
            );
            root.insert(key(Key::Llm), Value::from(llm));
        }
        let mut usage = BTreeMap::new();
        usage.insert(
            key(Key::RequestsLastMinute),
            Value::from(self.usage.requests_last_minute),
        );
        usage.insert(key(Key::TokensToday), Value::from(self.usage.tokens_today));
        usage.insert(
            key(Key::McpCallsLastMinute),
            Value::from(self.usage.mcp_calls_last_minute),
        );
        let dollars = |micros: u64| Value::from(micros as f64 / 1_000_000.0);
        usage.insert(key(Key::UsdToday), dollars(self.usage.usd_today_micros));
        usage.insert(key(Key::UsdMonth), dollars(self.usage.usd_month_micros));
        root.insert(key(Key::Usage), Value::from(usage));
        if let Some(m) = &self.mcp {
            root.insert(key(Key::Mcp), mcp_value(m));
        }
        root.insert(
            key(Key::Credential),
            self.credential.map(s).unwrap_or(Value::Null),
        );
        root.insert(key(Key::Now), s(&rfc3339(now)));
        Value::from(root)
    }

    /// The input document as JSON (for traces and the simulator).
    pub fn to_json(&self, now: SystemTime) -> Json {
        value_to_json(&self.to_value(now))
    }

    /// Hashes the fields selected by `mask` (plus the identity fields bindings use).
    pub(crate) fn hash_into<H: Hasher>(&self, mask: FieldMask, h: &mut H) {
        let p = self.principal;
        p.agent_id.hash(h);
        p.tenant.hash(h);
        p.groups.hash(h);
        (p.mode as u8).hash(h);
        if mask.has(FieldMask::KIND) {
            self.kind.hash(h);
        }
        if mask.has(FieldMask::AGENT) {
            (p.risk_level as u8).hash(h);
            hash_json_map(&p.attributes, h);
            p.scopes.hash(h);
        }
        if mask.has(FieldMask::SUBAGENT) {
            self.subagent.hash(h);
        }
        if mask.has(FieldMask::TOKEN) {
            match self.token {
                Some(t) => {
                    1u8.hash(h);
                    t.scopes.hash(h);
                    t.exp.hash(h);
                    t.jti.hash(h);
                }
                None => 0u8.hash(h),
            }
        }
        let r = &self.request;
        if mask.has(FieldMask::METHOD) {
            r.method.hash(h);
        }
        if mask.has(FieldMask::METHOD_OVERRIDE) {
            r.method_override().hash(h);
        }
        if mask.has(FieldMask::SCHEME) {
            r.scheme.hash(h);
        }
        if mask.has(FieldMask::HOST) {
            r.host.hash(h);
        }
        if mask.has(FieldMask::PORT) {
            r.port.hash(h);
        }
        if mask.has(FieldMask::PATH) {
            r.path.hash(h);
        }
        if mask.has(FieldMask::QUERY) {
            r.query.hash(h);
        }
        if mask.has(FieldMask::HEADERS) {
            if let Some(hm) = r.headers {
                for (name, value) in hm.iter() {
                    if !is_credential_header(name.as_str()) {
                        name.as_str().hash(h);
                        value.as_bytes().hash(h);
                    }
                }
            }
            0xffu8.hash(h);
        }
        if mask.has(FieldMask::BODY) {
            match r.body {
                Some(b) => {
                    1u8.hash(h);
                    hash_json(b, h);
                }
                None => 0u8.hash(h),
            }
        }
        if mask.has(FieldMask::LLM) {
            match &self.llm {
                Some(l) => {
                    1u8.hash(h);
                    l.provider.hash(h);
                    l.api.hash(h);
                    l.model.hash(h);
                    l.stream.hash(h);
                    l.max_tokens.hash(h);
                }
                None => 0u8.hash(h),
            }
        }
        if mask.has(FieldMask::USAGE) {
            self.usage.hash(h);
        }
        if mask.has(FieldMask::CREDENTIAL) {
            self.credential.hash(h);
        }
        if mask.has(FieldMask::MCP) {
            match &self.mcp {
                Some(m) => {
                    1u8.hash(h);
                    (m.server, m.method, m.kind, m.tool, m.name).hash(h);
                    (m.session_id, m.protocol_version, m.batch_size).hash(h);
                    for v in [m.arguments, m.params] {
                        match v {
                            Some(v) => {
                                1u8.hash(h);
                                hash_json(v, h);
                            }
                            None => 0u8.hash(h),
                        }
                    }
                }
                None => 0u8.hash(h),
            }
        }
    }

    /// 128-bit cache key over the fields selected by `mask`, with two keyed hashers.
    pub(crate) fn cache_key(
        &self,
        mask: FieldMask,
        keys: &(
            std::collections::hash_map::RandomState,
            std::collections::hash_map::RandomState,
        ),
    ) -> u128 {
        let mut a = keys.0.build_hasher();
        let mut b = keys.1.build_hasher();
        self.hash_into(mask, &mut a);
        self.hash_into(mask, &mut b);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }
}

/// Interned object keys of the input document: cloning an interned key is a reference
/// count increment instead of an allocation.
#[derive(Clone, Copy)]
enum Key {
    Agent,
    Api,
    Attributes,
    Body,
    Credential,
    Exp,
    Groups,
    Headers,
    Host,
    Id,
    Jti,
    Kind,
    Llm,
    MaxTokens,
    Mcp,
    McpCallsLastMinute,
    Method,
    MethodOverride,
    Mode,
    Model,
    Now,
    Path,
    Port,
    Provider,
    Query,
    Request,
    RequestsLastMinute,
    RiskLevel,
    Scheme,
    Scopes,
    Stream,
    Subagent,
    Tenant,
    Token,
    TokensToday,
    Usage,
    UsdMonth,
    UsdToday,
}

const KEY_NAMES: &[&str] = &[
    "agent",
    "api",
    "attributes",
    "body",
    "credential",
    "exp",
    "groups",
    "headers",
    "host",
    "id",
    "jti",
    "kind",
    "llm",
    "max_tokens",
    "mcp",
    "mcp_calls_last_minute",
    "method",
    "method_override",
    "mode",
    "model",
    "now",
    "path",
    "port",
    "provider",
    "query",
    "request",
    "requests_last_minute",
    "risk_level",
    "scheme",
    "scopes",
    "stream",
    "subagent",
    "tenant",
    "token",
    "tokens_today",
    "usage",
    "usd_month",
    "usd_today",
];

static KEYS: std::sync::LazyLock<Vec<Value>> =
    std::sync::LazyLock::new(|| KEY_NAMES.iter().map(|k| Value::from(*k)).collect());

fn key(k: Key) -> Value {
    KEYS.get(k as usize).cloned().unwrap_or(Value::Undefined)
}

fn mcp_value(m: &McpFacts<'_>) -> Value {
    let opt = |v: Option<&str>| v.map(s).unwrap_or(Value::Null);
    let json = |v: Option<&Json>| v.map(|j| Value::from(j.clone())).unwrap_or(Value::Null);
    let mut o = BTreeMap::new();
    o.insert(s("server"), s(m.server));
    o.insert(s("method"), opt(m.method));
    o.insert(s("kind"), opt(m.kind));
    o.insert(s("tool"), opt(m.tool));
    o.insert(s("name"), opt(m.name));
    o.insert(s("arguments"), json(m.arguments));
    o.insert(s("params"), json(m.params));
    o.insert(s("session_id"), opt(m.session_id));
    o.insert(s("protocol_version"), opt(m.protocol_version));
    o.insert(s("batch_size"), Value::from(m.batch_size as u64));
    Value::from(o)
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn strings<'x>(it: impl Iterator<Item = &'x String>) -> Value {
    Value::from(it.map(|x| Value::from(x.as_str())).collect::<Vec<_>>())
}

pub(crate) fn risk_str(r: RiskLevel) -> &'static str {
    match r {
        RiskLevel::Low => "LOW",
        RiskLevel::Medium => "MEDIUM",
        RiskLevel::High => "HIGH",
        RiskLevel::Critical => "CRITICAL",
    }
}

pub(crate) fn agent_mode_str(m: AgentMode) -> &'static str {
    match m {
        AgentMode::Active => "active",
        AgentMode::Shadow => "shadow",
        AgentMode::Disabled => "disabled",
    }
}

/// Header names whose values are credentials and never reach policy input.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key" | "api-key"
    ) || n.contains("token")
        || n.contains("secret")
        || n.contains("password")
        || n.contains("api-key")
        || n.contains("apikey")
        || n.contains("auth")
        || n.contains("session")
        || n.contains("signature")
        || n.starts_with("x-portcullis-")
}

fn joined_header(h: &http::HeaderMap, name: &http::header::HeaderName) -> String {
    let mut out = String::new();
    for (i, v) in h.get_all(name).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    out
}

/// Parses a raw query string into `{key: "value"}` or `{key: ["v1", "v2"]}` for repeated keys.
pub fn parse_query(raw: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    out
}

fn query_value(raw: &str) -> Value {
    let mut map = BTreeMap::new();
    for (k, mut vs) in parse_query(raw) {
        let v = if vs.len() == 1 {
            Value::from(vs.pop().unwrap_or_default())
        } else {
            Value::from(vs.into_iter().map(Value::from).collect::<Vec<_>>())
        };
        map.insert(Value::from(k), v);
    }
    Value::from(map)
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hash_json_map<H: Hasher>(m: &serde_json::Map<String, Json>, h: &mut H) {
    m.len().hash(h);
    for (k, v) in m {
        k.hash(h);
        hash_json(v, h);
    }
}

fn hash_json<H: Hasher>(v: &Json, h: &mut H) {
    match v {
        Json::Null => 0u8.hash(h),
        Json::Bool(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        Json::Number(n) => {
            2u8.hash(h);
            n.to_string().hash(h);
        }
        Json::String(s) => {
            3u8.hash(h);
            s.hash(h);
        }
        Json::Array(a) => {
            4u8.hash(h);
            a.len().hash(h);
            for x in a {
                hash_json(x, h);
            }
        }
        Json::Object(m) => {
            5u8.hash(h);
            hash_json_map(m, h);
        }
    }
}

/// Converts a regorus value to JSON (sets become arrays).
pub fn value_to_json(v: &Value) -> Json {
    v.to_json_str()
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Json::Null)
}

/// Formats a time as RFC 3339 UTC with second precision, e.g. `2026-11-23T21:40:50Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days → civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn principal() -> Principal {
        let mut p = Principal::anonymous();
        p.agent_id = Arc::from("demo");
        p.groups = Arc::from(vec!["research".to_owned()]);
        p.scopes = Arc::from(vec!["openai:chat:create".to_owned()]);
        p
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_468_850)),
            "2026-11-23T21:20:50Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn query_parsing() {
        let q = parse_query("a=1&b=x%20y&a=2&c&d=%zz&e=a+b");
        assert_eq!(q["a"], vec!["1", "2"]);
        assert_eq!(q["b"], vec!["x y"]);
        assert_eq!(q["c"], vec![""]);
        assert_eq!(q["d"], vec!["%zz"]);
        assert_eq!(q["e"], vec!["a b"]);
        let v = value_to_json(&query_value("a=1&a=2&b=3"));
        assert_eq!(v, serde_json::json!({"a": ["1", "2"], "b": "3"}));
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn input_document_shape_and_credentials_removed() {
        let p = principal();
        let mut h = http::HeaderMap::new();
        h.insert("Authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("x-api-key", "sk-ant".parse().unwrap());
        h.insert("cookie", "s=1".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.append("accept", "a".parse().unwrap());
        h.append("accept", "b".parse().unwrap());
        let body = serde_json::json!({"model": "gpt-4o"});
        let input = PolicyInput::new(RequestKind::Http, &p)
            .with_request(RequestFacts {
                method: "POST",
                scheme: "https",
                host: "api.openai.com",
                port: 443,
                path: "/v1/chat/completions",
                query: Some("x=1"),
                headers: Some(&h),
                body: Some(&body),
            })
            .with_llm(LlmFacts {
                provider: "openai",
                api: "chat.completions",
                model: Some("gpt-4o"),
                stream: false,
                max_tokens: Some(10),
            });
        let j = input.to_json(UNIX_EPOCH);
        assert_eq!(j["kind"], "http");
        assert_eq!(j["agent"]["id"], "demo");
        assert_eq!(j["agent"]["groups"], serde_json::json!(["research"]));
        assert_eq!(j["agent"]["risk_level"], "LOW");
        assert_eq!(j["subagent"], Json::Null);
        assert!(j.get("token").is_none());
        assert_eq!(j["request"]["port"], 443);
        assert_eq!(j["request"]["query"], serde_json::json!({"x": "1"}));
        assert_eq!(
            j["request"]["headers"],
            serde_json::json!({"content-type": "application/json", "accept": "a, b"})
        );
        assert_eq!(j["request"]["body"]["model"], "gpt-4o");
        assert_eq!(j["llm"]["max_tokens"], 10);
        assert_eq!(j["usage"]["tokens_today"], 0);
        assert_eq!(j["credential"], Json::Null);
        assert_eq!(j["now"], "1970-01-01T00:00:00Z");
        let text = j.to_string();
        assert!(!text.contains("sk-secret") && !text.contains("sk-ant") && !text.contains("s=1"));
    }

    #[test]
    fn cache_key_ignores_unread_fields_and_now() {
        let p = principal();
        let keys = Default::default();
        let a = PolicyInput::new(RequestKind::Http, &p).with_request(RequestFacts {
            host: "a.example",
            path: "/x",
            ..Default::default()
        });
        let b = PolicyInput {
            request: RequestFacts {
                path: "/y",
                ..a.request
            },
            now: Some(UNIX_EPOCH),
            ..a
        };
        let host_only = FieldMask(FieldMask::HOST);
        assert_eq!(a.cache_key(host_only, &keys), b.cache_key(host_only, &keys));
        let with_path = FieldMask(FieldMask::HOST | FieldMask::PATH);
        assert_ne!(a.cache_key(with_path, &keys), b.cache_key(with_path, &keys));
        let mut other = principal();
        other.agent_id = Arc::from("other");
        let c = PolicyInput {
            principal: &other,
            ..a
        };
        assert_ne!(a.cache_key(host_only, &keys), c.cache_key(host_only, &keys));
    }
}
