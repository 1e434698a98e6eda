//! The audit record: one per request, tunnel or token request (DESIGN §5). It is assembled
//! in the request's context in the data plane and handed unchanged to every sink.

use crate::decision::Verdict;
use crate::usage::Usage;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What a request, a record and a policy input are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A forwarded HTTP request (absolute-form, or inside an intercepted tunnel).
    Http,
    /// A `CONNECT` (policy input), or one refused before a tunnel was established (record).
    Connect,
    /// A tunnel, recorded when it closes.
    Tunnel,
    /// A request to the token endpoint.
    Token,
    /// A budget alert the gateway fired (`[alerts]`): not a request; `reasons` says which
    /// budget reached which threshold.
    Alert,
}

impl RequestKind {
    /// The label used in policy input, records and the store's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Http => "http",
            RequestKind::Connect => "connect",
            RequestKind::Tunnel => "tunnel",
            RequestKind::Token => "token",
            RequestKind::Alert => "alert",
        }
    }
}

/// The record's JSON fields: DESIGN §5's, plus `credential` (a name, never a value),
/// `policy_revision` (which policy set decided), `mcp` (the JSON-RPC message decided),
/// `trace` (the OpenTelemetry trace and span of the request, when telemetry is on) and
/// `cost_usd` (the call priced in dollars).
pub const RECORD_FIELDS: [&str; 35] = [
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
    "policy_revision",
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
    "mcp",
    "trace",
    "cost_usd",
];

/// One audit record, serialised as one JSON object with exactly [`RECORD_FIELDS`].
///
/// Absent values serialise as `null` so every record has the same keys. `path` is written
/// without its query string (queries may carry API keys). No field holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Time-ordered unique id (sorts like the time it was issued).
    pub id: String,
    /// When the request started, Unix milliseconds; RFC 3339 with milliseconds in JSON.
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub ts: i64,
    /// Tenant of the agent (empty before authentication).
    pub tenant: String,
    /// Agent id (`anonymous` when unauthenticated; empty before authentication).
    pub agent_id: String,
    /// Sub-agent name, if any.
    pub subagent: Option<String>,
    /// What the record is about.
    pub kind: RequestKind,
    /// HTTP method (`CONNECT` for tunnels).
    pub method: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Target host.
    pub host: Option<String>,
    /// Target port.
    pub port: Option<u16>,
    /// Request path (canonical), without the query string.
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
    /// Human readable reasons of the decision (and the limit that refused, if one did).
    pub reasons: Vec<String>,
    /// Shadow policies that would have denied.
    pub would_deny: Vec<String>,
    /// Id of the policy decision (also answered to the client on denial).
    pub decision_id: Option<String>,
    /// Revision of the policy set that decided (the bundle's manifest revision, or a hash of
    /// the policy directory's files), so an operator can tell which policy version allowed a
    /// call. Absent when no policy decided.
    #[serde(default)]
    pub policy_revision: Option<String>,
    /// HTTP status answered, if a response was sent (200 for an established tunnel).
    pub status: Option<u16>,
    /// Machine code of the error, if the request failed or was refused.
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
    pub usage: Option<Usage>,
    /// Whether the gateway terminated the client's TLS.
    pub tls_intercepted: bool,
    /// Client socket address.
    pub client_addr: Option<String>,
    /// Name of the credential injected upstream (never its value).
    pub credential: Option<String>,
    /// The MCP message this record is about (requests to `[[mcp.servers]]`).
    #[serde(default)]
    pub mcp: Option<crate::mcp::McpRecord>,
    /// The trace this request belongs to and the gateway's span in it (`[telemetry]`);
    /// `null` when telemetry is off.
    #[serde(default)]
    pub trace: Option<crate::trace::TraceContext>,
    /// What the LLM call cost in US dollars: its reported `usage` priced with the model's
    /// price on the record's UTC day (`[[llm.prices]]` over the shipped table). `null` when the
    /// usage is missing or no price is known — never a silent zero.
    #[serde(default)]
    pub cost_usd: Option<crate::price::Usd>,
}

impl AuditRecord {
    /// A record with the identifying fields set and every other field empty.
    pub fn new(
        id: impl Into<String>,
        ts_ms: i64,
        tenant: impl Into<String>,
        agent_id: impl Into<String>,
        kind: RequestKind,
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
            policy_revision: None,
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
            mcp: None,
            trace: None,
            cost_usd: None,
        }
    }

    /// The record as one JSON object (no trailing newline): serialised once, for every sink.
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every field is a string, number, bool,
        // list of strings or a nested struct of those, and map keys are static.
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({ "id": self.id, "error": format!("unserialisable: {e}") })
                .to_string()
        })
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Values outside the years
/// 0000–9999 are clamped to that range's ends, so the output is always valid RFC 3339.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = unix_ms.clamp(MIN_MS, MAX_MS);
    // Whole milliseconds, so the well-known format prints exactly three fraction digits
    // (it drops trailing zeros, which is still RFC 3339 but not what records promise).
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return "1970-01-01T00:00:00.000Z".to_owned();
    };
    let secs = t.replace_millisecond(0).unwrap_or(t);
    match secs.format(&Rfc3339) {
        Ok(s) => {
            // `...:SSZ` → `...:SS.mmmZ`
            let base = s.trim_end_matches('Z');
            format!("{base}.{:03}Z", t.millisecond())
        }
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Parses an RFC 3339 timestamp to Unix milliseconds.
pub fn parse_rfc3339_ms(value: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| e.to_string())?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|e| e.to_string())
}

fn ser_ts<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339_ms(*ms))
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = String::deserialize(d)?;
    parse_rfc3339_ms(&text).map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_100),
            "2023-11-14T22:13:20.100Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_back() {
        for ms in [0, 1_700_000_000_123, -1, 253_402_300_799_999] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
        }
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn every_field_is_serialised_and_the_query_is_not() {
        let mut r = AuditRecord::new("id1", 0, "t", "a", RequestKind::Tunnel, Verdict::Allow);
        r.path = Some("/v1/x?key=secret#frag".into());
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = RECORD_FIELDS.to_vec();
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(v["path"], "/v1/x");
        assert_eq!(v["kind"], "tunnel");
        let back: AuditRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back.kind, RequestKind::Tunnel);
    }
}
