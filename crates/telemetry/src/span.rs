//! One span per finished request, built from its audit record under the OpenTelemetry
//! GenAI semantic conventions (plus `portcullis.*` attributes). Pure: no I/O, no clock.

use crate::attr::{double, int, string, Attrs};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use portcullis_core::{from_hex, AuditRecord, RequestKind, UsageSource, Verdict};

/// Trace flag "sampled": every governed request is recorded.
const SAMPLED: u32 = 0x01;

/// The GenAI operation of a record: `chat`, `text_completion`, `embeddings`, `execute_tool`
/// (an MCP `tools/call`), or `None` for a request that is not a model or tool call.
pub fn operation(r: &AuditRecord) -> Option<&'static str> {
    if r.mcp
        .as_ref()
        .is_some_and(|m| m.method.as_deref() == Some("tools/call"))
    {
        return Some("execute_tool");
    }
    r.provider.as_ref()?;
    match r.api.as_deref()? {
        "chat.completions" | "messages" | "responses" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// The `portcullis.rate_limit` outcome: `limited` (a limit refused), `unavailable` (the
/// limits backend could not decide) or `passed` (the request was admitted).
fn rate_limit(r: &AuditRecord) -> Option<&'static str> {
    match r.error.as_deref() {
        Some("rate_limited") => Some("limited"),
        Some("limits_unavailable") => Some("unavailable"),
        _ if matches!(r.verdict, Verdict::Allow | Verdict::WouldDeny) => Some("passed"),
        _ => None,
    }
}

/// The span of one record. Ids come from `r.trace`; a record without them (telemetry was
/// switched on while it was in flight) gets fresh ones from `fresh`.
pub fn build(r: &AuditRecord, fresh: impl FnOnce() -> ([u8; 16], [u8; 8])) -> Span {
    let ids = r.trace.as_ref().and_then(|t| {
        Some((
            from_hex(&t.trace_id).filter(|b| b.len() == 16)?,
            from_hex(&t.span_id).filter(|b| b.len() == 8)?,
            t.parent_span_id
                .as_deref()
                .and_then(from_hex)
                .filter(|b| b.len() == 8)
                .unwrap_or_default(),
        ))
    });
    let (trace_id, span_id, parent_span_id) = ids.unwrap_or_else(|| {
        let (t, s) = fresh();
        (t.to_vec(), s.to_vec(), Vec::new())
    });
    let start = u64::try_from(r.ts).unwrap_or(0).saturating_mul(1_000_000);
    let end = start.saturating_add(r.latency_ms.saturating_mul(1_000_000));
    let op = operation(r);
    let mut a = Attrs::with_capacity(32);
    let name = match op {
        Some("execute_tool") => {
            let tool = r.mcp.as_ref().and_then(|m| m.tool.as_deref()).unwrap_or("");
            a.push(string("gen_ai.operation.name", "execute_tool"));
            a.push(string("gen_ai.tool.name", tool));
            if let Some(m) = &r.mcp {
                a.push(string("portcullis.mcp.server", &m.server));
            }
            format!("execute_tool {tool}")
        }
        Some(op) => {
            a.push(string("gen_ai.operation.name", op));
            a.opt_str("gen_ai.provider.name", r.provider.as_deref());
            a.opt_str("gen_ai.request.model", r.model.as_deref());
            match r.model.as_deref() {
                Some(m) => format!("{op} {m}"),
                None => op.to_owned(),
            }
        }
        None => r
            .method
            .clone()
            .unwrap_or_else(|| r.kind.as_str().to_uppercase()),
    };
    if let Some(u) = r.usage.filter(|u| u.source == UsageSource::Provider) {
        a.push(int("gen_ai.usage.input_tokens", u.input_tokens));
        a.push(int("gen_ai.usage.output_tokens", u.output_tokens));
        a.push(int(
            "gen_ai.usage.cache_read.input_tokens",
            u.cached_input_tokens,
        ));
        a.push(int(
            "gen_ai.usage.reasoning.output_tokens",
            u.reasoning_tokens,
        ));
    }
    a.opt_str("server.address", r.host.as_deref());
    if let Some(p) = r.port {
        a.push(int("server.port", u64::from(p)));
    }
    a.opt_str("http.request.method", r.method.as_deref());
    if r.kind != RequestKind::Tunnel {
        if let Some(s) = r.status {
            a.push(int("http.response.status_code", u64::from(s)));
        }
    }
    a.opt_str("url.scheme", r.scheme.as_deref());
    a.opt_str("error.type", r.error.as_deref());
    a.push(string("portcullis.kind", r.kind.as_str()));
    if !r.agent_id.is_empty() {
        a.push(string("portcullis.agent", &r.agent_id));
    }
    a.opt_str("portcullis.subagent", r.subagent.as_deref());
    if !r.tenant.is_empty() {
        a.push(string("portcullis.tenant", &r.tenant));
    }
    a.push(string("portcullis.verdict", r.verdict.as_str()));
    a.opt_str("portcullis.policy", r.policy.as_deref());
    a.opt_str("portcullis.decision_id", r.decision_id.as_deref());
    a.opt_str("portcullis.policy_revision", r.policy_revision.as_deref());
    a.opt_str("portcullis.rate_limit", rate_limit(r));
    a.opt_str("portcullis.credential", r.credential.as_deref());
    if let Some(cost) = r.cost_usd {
        a.push(double("portcullis.cost_usd", cost.dollars()));
    }
    a.push(string("portcullis.record_id", &r.id));
    if let Some(ms) = r.upstream_ttfb_ms {
        a.push(int("portcullis.upstream_ttfb_ms", ms));
    }
    if let Some(us) = r.policy_us {
        a.push(int("portcullis.policy_us", us));
    }
    let status = match &r.error {
        Some(e) => Status {
            code: StatusCode::Error as i32,
            message: e.clone(),
        },
        None => Status::default(),
    };
    Span {
        trace_id,
        span_id,
        parent_span_id,
        flags: SAMPLED,
        name,
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: a.into_vec(),
        status: Some(status),
        ..Span::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::tests::as_map;
    use portcullis_core::{McpRecord, TraceContext, Usage};
    use std::collections::BTreeMap;

    fn llm_record() -> AuditRecord {
        let mut r = AuditRecord::new(
            "rec1",
            1_700_000_000_123,
            "acme",
            "bot",
            RequestKind::Http,
            Verdict::Allow,
        );
        r.subagent = Some("planner".into());
        r.method = Some("POST".into());
        r.scheme = Some("https".into());
        r.host = Some("api.openai.com".into());
        r.port = Some(443);
        r.provider = Some("openai".into());
        r.api = Some("chat.completions".into());
        r.model = Some("gpt-4o".into());
        r.policy = Some("models".into());
        r.decision_id = Some("dec-1".into());
        r.policy_revision = Some("rev-7".into());
        r.status = Some(200);
        r.latency_ms = 250;
        r.policy_us = Some(40);
        r.upstream_ttfb_ms = Some(120);
        r.usage = Some(Usage::provider(1200, 310, 1024, 64));
        r.credential = Some("openai-prod".into());
        r.cost_usd = Some(portcullis_core::Usd::from_micros(6_180));
        r.trace = Some(TraceContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "0123456789abcdef".into(),
            parent_span_id: Some("00f067aa0ba902b7".into()),
        });
        r
    }

    fn no_ids() -> ([u8; 16], [u8; 8]) {
        panic!("the record carries its ids")
    }

    #[test]
    fn an_llm_call_is_a_genai_client_span_with_exact_attributes() {
        let s = build(&llm_record(), no_ids);
        assert_eq!(s.name, "chat gpt-4o");
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(
            portcullis_core::to_hex(&s.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(portcullis_core::to_hex(&s.span_id), "0123456789abcdef");
        assert_eq!(
            portcullis_core::to_hex(&s.parent_span_id),
            "00f067aa0ba902b7"
        );
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_373_000_000);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(0));
        let want: BTreeMap<String, String> = [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o"),
            ("gen_ai.usage.input_tokens", "1200"),
            ("gen_ai.usage.output_tokens", "310"),
            ("gen_ai.usage.cache_read.input_tokens", "1024"),
            ("gen_ai.usage.reasoning.output_tokens", "64"),
            ("server.address", "api.openai.com"),
            ("server.port", "443"),
            ("http.request.method", "POST"),
            ("http.response.status_code", "200"),
            ("url.scheme", "https"),
            ("portcullis.kind", "http"),
            ("portcullis.agent", "bot"),
            ("portcullis.subagent", "planner"),
            ("portcullis.tenant", "acme"),
            ("portcullis.verdict", "allow"),
            ("portcullis.policy", "models"),
            ("portcullis.decision_id", "dec-1"),
            ("portcullis.policy_revision", "rev-7"),
            ("portcullis.rate_limit", "passed"),
            ("portcullis.credential", "openai-prod"),
            ("portcullis.cost_usd", "0.00618"),
            ("portcullis.record_id", "rec1"),
            ("portcullis.upstream_ttfb_ms", "120"),
            ("portcullis.policy_us", "40"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(as_map(&s.attributes), want);
    }

    #[test]
    fn operations_follow_the_api() {
        let mut r = llm_record();
        for (api, op) in [
            ("messages", "chat"),
            ("responses", "chat"),
            ("embeddings", "embeddings"),
            ("completions", "text_completion"),
        ] {
            r.api = Some(api.into());
            assert_eq!(build(&r, no_ids).name, format!("{op} gpt-4o"));
        }
        r.model = None;
        r.api = Some("embeddings".into());
        assert_eq!(build(&r, no_ids).name, "embeddings");
    }

    #[test]
    fn a_refused_request_carries_the_error_and_the_limit_outcome() {
        let mut r = llm_record();
        r.verdict = Verdict::RateLimited;
        r.error = Some("rate_limited".into());
        r.status = Some(429);
        r.usage = None;
        let s = build(&r, no_ids);
        let m = as_map(&s.attributes);
        assert_eq!(m["error.type"], "rate_limited");
        assert_eq!(m["portcullis.rate_limit"], "limited");
        assert_eq!(m["http.response.status_code"], "429");
        assert!(!m.contains_key("gen_ai.usage.input_tokens"));
        let st = s.status.unwrap();
        assert_eq!(st.code, StatusCode::Error as i32);
        assert_eq!(st.message, "rate_limited");
    }

    #[test]
    fn missing_usage_exports_no_token_counts() {
        let mut r = llm_record();
        r.usage = Some(Usage::missing(true));
        let m = as_map(&build(&r, no_ids).attributes);
        assert!(m.keys().all(|k| !k.starts_with("gen_ai.usage.")), "{m:?}");
    }

    #[test]
    fn a_plain_request_is_an_http_client_span() {
        let mut r = AuditRecord::new("r2", 0, "", "", RequestKind::Http, Verdict::Error);
        r.method = Some("GET".into());
        r.host = Some("example.com".into());
        r.port = Some(80);
        r.status = Some(407);
        r.error = Some("proxy_auth_required".into());
        let s = build(&r, || ([7; 16], [9; 8]));
        assert_eq!(s.name, "GET");
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![9; 8]);
        assert!(s.parent_span_id.is_empty());
        let m = as_map(&s.attributes);
        assert!(m.keys().all(|k| !k.starts_with("gen_ai.")), "{m:?}");
        assert!(!m.contains_key("portcullis.agent"));
        assert!(!m.contains_key("portcullis.rate_limit"));
        assert_eq!(m["error.type"], "proxy_auth_required");
        let mut t = AuditRecord::new("r3", 0, "t", "a", RequestKind::Tunnel, Verdict::Allow);
        t.method = Some("CONNECT".into());
        t.status = Some(200);
        let m = as_map(&build(&t, || ([1; 16], [1; 8])).attributes);
        assert!(!m.contains_key("http.response.status_code"));
        assert_eq!(m["portcullis.kind"], "tunnel");
    }

    #[test]
    fn an_mcp_tool_call_is_an_execute_tool_span() {
        let mut r = llm_record();
        r.provider = None;
        r.api = None;
        r.model = None;
        r.usage = None;
        r.mcp = Some(McpRecord {
            server: "github".into(),
            method: Some("tools/call".into()),
            kind: Some("request".into()),
            tool: Some("create_issue".into()),
            id: Some("7".into()),
            is_error: None,
            arguments: None,
            arguments_sha256: None,
            session: None,
            protocol_version: None,
            batch_size: 1,
            batch_index: 0,
        });
        let s = build(&r, no_ids);
        assert_eq!(s.name, "execute_tool create_issue");
        let m = as_map(&s.attributes);
        assert_eq!(m["gen_ai.operation.name"], "execute_tool");
        assert_eq!(m["gen_ai.tool.name"], "create_issue");
        assert_eq!(m["portcullis.mcp.server"], "github");
    }

    #[test]
    fn malformed_record_ids_get_fresh_ones() {
        let mut r = llm_record();
        r.trace = Some(TraceContext {
            trace_id: "zz".into(),
            span_id: "0123456789abcdef".into(),
            parent_span_id: None,
        });
        let s = build(&r, || ([3; 16], [4; 8]));
        assert_eq!(s.trace_id, vec![3; 16]);
        assert_eq!(s.span_id, vec![4; 8]);
    }
}
