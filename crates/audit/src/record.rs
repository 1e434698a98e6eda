//! The audit record: one per request, passthrough tunnel or token request (DESIGN §5).

use crate::timefmt::format_rfc3339_ms;
use portcullis_core::Verdict;
use portcullis_llm::{Usage, UsageSource};
use portcullis_store::AuditRow;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKind {
    /// A plain or intercepted HTTP request.
    Http,
    /// A `CONNECT` refused or failed before a tunnel was established.
    Connect,
    /// A passthrough tunnel, recorded when it closes.
    Tunnel,
    /// A token request at the token endpoint.
    Token,
}

impl AuditKind {
    /// The label stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Http => "http",
            AuditKind::Connect => "connect",
            AuditKind::Tunnel => "tunnel",
            AuditKind::Token => "token",
        }
    }
}

/// Normalised token usage as audited: the same meaning for every provider (DESIGN §5).
///
/// When the response reported no usage (`source = missing`) every count is `None`,
/// serialised as `null`: the tokens spent are unknown, and a sum over records (SQL `SUM`
/// skips `NULL`) must not count them as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUsage {
    /// All prompt tokens, cache reads and writes included.
    pub input_tokens: Option<u64>,
    /// Generated tokens, reasoning included.
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    pub cached_input_tokens: Option<u64>,
    /// Reasoning tokens, when reported (0 when the provider reports none).
    pub reasoning_tokens: Option<u64>,
    /// `input_tokens + output_tokens`.
    pub total_tokens: Option<u64>,
    /// `provider` when the response reported the counts, `missing` otherwise (never a
    /// silent zero).
    pub source: UsageSource,
}

impl From<Usage> for AuditUsage {
    fn from(u: Usage) -> Self {
        let c = u.counts();
        let at = |i: usize| c.map(|c| c[i]);
        Self {
            input_tokens: at(0),
            output_tokens: at(1),
            cached_input_tokens: at(2),
            reasoning_tokens: at(3),
            total_tokens: at(4),
            source: u.source,
        }
    }
}

/// The record's JSON fields: DESIGN §5's, plus `credential` (a name, for a later issue).
pub const RECORD_FIELDS: [&str; 31] = [
    "id",
    "ts",
    "tenant",
    "agent_id",
    "subagent",
    "kind",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "provider",
    "api",
    "model",
    "stream",
    "verdict",
    "policy",
    "reasons",
    "would_deny",
    "decision_id",
    "status",
    "error",
    "latency_ms",
    "policy_us",
    "upstream_ttfb_ms",
    "bytes_in",
    "bytes_out",
    "usage",
    "tls_intercepted",
    "client_addr",
    "credential",
];

/// One audit record, serialised as one JSON object with exactly the fields of DESIGN §5
/// plus `credential` (the name of an injected credential, never its value).
///
/// Absent values serialise as `null` so every record has the same keys. `path` is written
/// without its query string (queries may carry API keys). No field holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Time-ordered unique id (the caller's; sorts like the time it was issued).
    pub id: String,
    /// When the request started, Unix milliseconds; RFC 3339 with milliseconds in JSON.
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub ts: i64,
    /// Tenant of the agent.
    pub tenant: String,
    /// Agent id (`anonymous` when unauthenticated).
    pub agent_id: String,
    /// Sub-agent name, if any.
    pub subagent: Option<String>,
    /// What the record is about.
    pub kind: AuditKind,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Target host.
    pub host: Option<String>,
    /// Target port.
    pub port: Option<u16>,
    /// Request path, without the query string.
    #[serde(serialize_with = "ser_path")]
    pub path: Option<String>,
    /// LLM provider, when classified.
    pub provider: Option<String>,
    /// LLM API (`chat.completions`, `responses`, `messages`, `embeddings`).
    pub api: Option<String>,
    /// LLM model named in the request.
    pub model: Option<String>,
    /// Whether the LLM request asked for a stream.
    pub stream: Option<bool>,
    /// The verdict.
    pub verdict: Verdict,
    /// The deciding policy, if any.
    pub policy: Option<String>,
    /// Human readable reasons of the decision.
    pub reasons: Vec<String>,
    /// Shadow policies that would have denied.
    pub would_deny: Vec<String>,
    /// Id of the policy decision (also answered to the client on denial).
    pub decision_id: Option<String>,
    /// HTTP status answered, if a response was sent.
    pub status: Option<u16>,
    /// Machine code of the error, if the request failed (`upstream_timeout`, `client_abort`, ...).
    pub error: Option<String>,
    /// Total duration, milliseconds.
    pub latency_ms: u64,
    /// Policy evaluation time, microseconds.
    pub policy_us: Option<u64>,
    /// Time to the first upstream response byte, milliseconds.
    pub upstream_ttfb_ms: Option<u64>,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Token usage; `null` when the request is not an LLM request; its counts are `null`
    /// when the response reported none (`source = missing`).
    pub usage: Option<AuditUsage>,
    /// Whether TLS was intercepted.
    pub tls_intercepted: bool,
    /// Client socket address.
    pub client_addr: Option<String>,
    /// Name of the credential injected upstream (never its value).
    pub credential: Option<String>,
}

impl AuditRecord {
    /// A record with the identifying fields set and every other field empty.
    pub fn new(
        id: impl Into<String>,
        ts_ms: i64,
        tenant: impl Into<String>,
        agent_id: impl Into<String>,
        kind: AuditKind,
        verdict: Verdict,
    ) -> Self {
        Self {
            id: id.into(),
            ts: ts_ms,
            tenant: tenant.into(),
            agent_id: agent_id.into(),
            subagent: None,
            kind,
            method: None,
            scheme: None,
            host: None,
            port: None,
            path: None,
            provider: None,
            api: None,
            model: None,
            stream: None,
            verdict,
            policy: None,
            reasons: Vec::new(),
            would_deny: Vec::new(),
            decision_id: None,
            status: None,
            error: None,
            latency_ms: 0,
            policy_us: None,
            upstream_ttfb_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            usage: None,
            tls_intercepted: false,
            client_addr: None,
            credential: None,
        }
    }

    /// The record as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every field is a string, number, bool,
        // list of strings or a nested struct of those, and map keys are static.
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({ "id": self.id, "error": format!("unserialisable: {e}") })
                .to_string()
        })
    }

    /// The store row, consuming the record (no copies of its strings).
    pub fn into_row(self) -> AuditRow {
        let record_json = self.to_json();
        AuditRow {
            id: self.id,
            ts_ms: self.ts,
            tenant: self.tenant,
            agent_id: self.agent_id,
            subagent: self.subagent,
            verdict: self.verdict.as_str().to_owned(),
            policy: self.policy,
            provider: self.provider,
            model: self.model,
            kind: self.kind.as_str().to_owned(),
            status: self.status,
            record_json,
        }
    }

    /// The store row: filterable columns plus the full JSON.
    pub fn to_row(&self) -> AuditRow {
        AuditRow {
            id: self.id.clone(),
            ts_ms: self.ts,
            tenant: self.tenant.clone(),
            agent_id: self.agent_id.clone(),
            subagent: self.subagent.clone(),
            verdict: self.verdict.as_str().to_owned(),
            policy: self.policy.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            kind: self.kind.as_str().to_owned(),
            status: self.status,
            record_json: self.to_json(),
        }
    }
}

fn ser_ts<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_ms(*ms))
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    crate::query::parse_rfc3339_ms(&text).map_err(serde::de::Error::custom)
}

// serde's `serialize_with` hands the field by reference.
#[allow(clippy::ref_option)]
fn ser_path<S: Serializer>(path: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(strip_query(p)),
        None => s.serialize_none(),
    }
}

/// `path` up to (not including) its query string or fragment.
fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}
