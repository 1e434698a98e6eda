//! The policy simulator: choose an agent and describe a request (method, URL, headers,
//! body), or start from an audit record, and see the decision the data plane would make
//! with every policy's result. It calls the same simulate operation as
//! `POST /v1/policies/simulate`, which builds the input with the data plane's builder.

use crate::layout::{render, Ctx, Layout};
use crate::view::{self, Opt};
use crate::web::Form;
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode, Uri};
use http_body_util::Full;
use portcullis_admin::ops::{agents, decisions, policies};
use portcullis_core::{ApiError, ErrorSource, Status};
use serde_json::{json, Map, Value};

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT",
];
/// Most header lines accepted.
const MAX_HEADER_LINES: usize = 100;

/// The form as typed.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimForm {
    pub(crate) agent: String,
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: String,
    pub(crate) body: String,
    pub(crate) subagent: String,
}

/// One line of the trace.
pub(crate) struct TraceRow {
    pub(crate) policy: String,
    pub(crate) applicable: bool,
    pub(crate) mode: String,
    pub(crate) allow: bool,
    pub(crate) deny: Vec<String>,
    pub(crate) error: String,
    pub(crate) eval_us: String,
}

/// The simulated decision.
pub(crate) struct Outcome {
    pub(crate) verdict: String,
    pub(crate) verdict_class: &'static str,
    pub(crate) policy: String,
    pub(crate) reasons: Vec<String>,
    pub(crate) code: String,
    pub(crate) would_deny: String,
    pub(crate) authenticates: bool,
    pub(crate) agent_status: String,
    pub(crate) version: String,
    pub(crate) eval_us: String,
    pub(crate) trace: Vec<TraceRow>,
    pub(crate) classification: String,
    pub(crate) input: String,
}

#[derive(Template)]
#[template(path = "simulate.html")]
struct SimPage {
    layout: Layout,
    f: SimForm,
    agents: Vec<Opt>,
    methods: Vec<Opt>,
    from: String,
    recorded: Option<(String, &'static str, String, Vec<String>)>,
    outcome: Option<Outcome>,
    enabled: bool,
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::new(
        Status::Unprocessable,
        "validation_error",
        format!("{field}: {reason}"),
        ErrorSource::Client,
    )
    .with("errors", json!([{"field": field, "reason": reason}]))
}

impl SimForm {
    fn of(f: &Form) -> Self {
        Self {
            agent: f.get("agent").unwrap_or("").to_owned(),
            method: f.get("method").unwrap_or("GET").to_ascii_uppercase(),
            url: f.get("url").unwrap_or("").to_owned(),
            headers: f.raw("headers").unwrap_or("").to_owned(),
            body: f.raw("body").unwrap_or("").to_owned(),
            subagent: f.get("subagent").unwrap_or("").to_owned(),
        }
    }

    /// Prefilled from an audit record: its agent, method, URL, sub-agent and, for an LLM
    /// request, a body stating the recorded model and stream flag.
    fn of_record(r: &Value) -> Self {
        let scheme = match view::s(r, "scheme") {
            "" => "https",
            s => s,
        };
        let host = view::s(r, "host");
        let port = view::n(r, "port");
        let default = if scheme == "http" { 80 } else { 443 };
        let authority = match port {
            Some(p) if p != default => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let method = match view::s(r, "method") {
            "" => "GET",
            m => m,
        };
        let body = if r.get("provider").is_some_and(|p| !p.is_null()) && method == "POST" {
            let mut b = Map::new();
            if let Some(m) = r.get("model").filter(|m| !m.is_null()) {
                b.insert("model".into(), m.clone());
            }
            if let Some(s) = r.get("stream").filter(|s| !s.is_null()) {
                b.insert("stream".into(), s.clone());
            }
            serde_json::to_string_pretty(&Value::Object(b)).unwrap_or_default()
        } else {
            String::new()
        };
        Self {
            agent: view::s(r, "agent_id").to_owned(),
            method: method.to_owned(),
            url: format!("{scheme}://{authority}{}", view::s(r, "path")),
            headers: if body.is_empty() {
                String::new()
            } else {
                "content-type: application/json".to_owned()
            },
            body,
            subagent: view::s(r, "subagent").to_owned(),
        }
    }

    /// The simulate body, as `POST /v1/policies/simulate` takes it.
    fn to_body(&self) -> Result<Map<String, Value>, ApiError> {
        if self.agent.is_empty() {
            return Err(invalid("agent", "choose an agent"));
        }
        let uri: Uri = self.url.parse().map_err(|_| {
            invalid(
                "url",
                "must be an absolute URL like https://api.openai.com/v1/chat/completions",
            )
        })?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => return Err(invalid("url", "must start with http:// or https://")),
        };
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("url", "must name a host"))?;
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let mut headers = Map::new();
        for (i, line) in self.headers.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if i >= MAX_HEADER_LINES {
                return Err(invalid("headers", "at most 100 lines"));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid("headers", "one `Name: value` per line"));
            };
            let name = name.trim().to_ascii_lowercase();
            let value = Value::from(value.trim());
            match headers.get_mut(&name) {
                Some(Value::Array(a)) => a.push(value),
                Some(prev) => *prev = Value::Array(vec![prev.clone(), value]),
                None => {
                    headers.insert(name, value);
                }
            }
        }
        let connect = self.method == "CONNECT";
        let mut req = Map::new();
        req.insert(
            "kind".into(),
            json!(if connect { "connect" } else { "http" }),
        );
        req.insert("method".into(), json!(self.method));
        req.insert("scheme".into(), json!(scheme));
        req.insert("host".into(), json!(host));
        req.insert("port".into(), json!(port));
        if !connect {
            req.insert("path".into(), json!(uri.path()));
            if let Some(q) = uri.query() {
                req.insert("query".into(), json!(q));
            }
            if !headers.is_empty() {
                req.insert("headers".into(), Value::Object(headers));
            }
            if !self.body.trim().is_empty() {
                req.insert("body_raw".into(), json!(self.body));
            }
        }
        let mut m = Map::new();
        m.insert("agent".into(), json!(self.agent));
        m.insert("request".into(), Value::Object(req));
        if !self.subagent.is_empty() {
            m.insert("subagent".into(), json!(self.subagent));
        }
        Ok(m)
    }
}

fn outcome(v: &Value) -> Outcome {
    let d = v.get("decision").cloned().unwrap_or(Value::Null);
    let verdict = view::text(d.get("verdict"));
    let trace = v
        .get("trace")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| TraceRow {
                    policy: view::s(t, "policy").to_owned(),
                    applicable: t
                        .get("applicable")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    mode: view::text(t.get("mode")),
                    allow: t.get("allow").and_then(Value::as_bool).unwrap_or(false),
                    deny: view::strings(t, "deny"),
                    error: view::text(t.get("error")),
                    eval_us: view::n(t, "eval_us")
                        .map(|u| format!("{u} µs"))
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Outcome {
        verdict_class: view::verdict_class(&verdict),
        verdict,
        policy: view::text(d.get("policy")),
        reasons: view::strings(&d, "reasons"),
        code: view::text(d.get("code")),
        would_deny: view::strings(&d, "would_deny").join(", "),
        authenticates: v
            .get("authenticates")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        agent_status: v
            .get("agent")
            .map(|a| view::text(a.get("status")))
            .unwrap_or_default(),
        version: view::text(v.get("version")),
        eval_us: view::n(&d, "eval_us")
            .map(|u| format!("{u} µs"))
            .unwrap_or_default(),
        trace,
        classification: match v.get("classification") {
            Some(Value::Null) | None => String::new(),
            Some(c) => serde_json::to_string_pretty(c).unwrap_or_default(),
        },
        input: v
            .get("input")
            .map(|i| serde_json::to_string_pretty(i).unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// `GET /ui/simulate[?from=<record id>]` and `POST /ui/simulate`.
pub(crate) async fn page(
    ctx: &Ctx<'_>,
    post: bool,
    form: &Form,
    q: &Form,
) -> Response<Full<Bytes>> {
    let op = ctx.op();
    let from = q
        .get("from")
        .or_else(|| form.get("from"))
        .unwrap_or("")
        .to_owned();
    let mut recorded = None;
    let mut from_record = None;
    if !from.is_empty() {
        match decisions::get(ctx.cp, op, &from).await {
            Ok(r) => {
                let verdict = view::s(&r, "verdict").to_owned();
                recorded = Some((
                    verdict.clone(),
                    view::verdict_class(&verdict),
                    view::s(&r, "policy").to_owned(),
                    view::strings(&r, "reasons"),
                ));
                from_record = Some(r);
            }
            Err(e) => return ctx.error_page("simulate", &e),
        }
    }
    let f = if post {
        SimForm::of(form)
    } else if let Some(r) = &from_record {
        SimForm::of_record(r)
    } else {
        SimForm {
            method: "POST".into(),
            url: "https://api.openai.com/v1/chat/completions".into(),
            headers: "content-type: application/json".into(),
            body: "{\n  \"model\": \"gpt-4o-mini\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]\n}".into(),
            ..SimForm::default()
        }
    };
    let agent_ids: Vec<String> = agents::list(ctx.cp, op)
        .await
        .map(|a| {
            a.into_iter()
                .filter(|a| a.parent.is_none())
                .map(|a| a.id)
                .collect()
        })
        .unwrap_or_default();
    let refs: Vec<&str> = agent_ids.iter().map(String::as_str).collect();
    let mut page = SimPage {
        layout: ctx.layout("simulate", "Simulator"),
        agents: view::options(&refs, &f.agent, Some("choose an agent")),
        methods: view::options(&METHODS, &f.method, None),
        from,
        recorded,
        outcome: None,
        enabled: ctx.policy.is_some(),
        f,
    };
    let Some(api) = ctx.policy else {
        return render(StatusCode::OK, &page);
    };
    if !post {
        return render(StatusCode::OK, &page);
    }
    let result = match page.f.to_body() {
        Ok(body) => policies::simulate(ctx.cp, api, op, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => {
            page.outcome = Some(outcome(&v));
            render(StatusCode::OK, &page)
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            page.layout.error = Some(crate::layout::ErrorView::of(&e));
            render(status, &page)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_prefills_the_request() {
        let r = json!({"agent_id": "bot", "method": "POST", "scheme": "https", "host": "api.openai.com",
            "port": 443, "path": "/v1/chat/completions", "provider": "openai", "model": "gpt-4o",
            "stream": true, "subagent": "planner"});
        let f = SimForm::of_record(&r);
        assert_eq!(f.url, "https://api.openai.com/v1/chat/completions");
        assert_eq!(f.subagent, "planner");
        let body: Value = serde_json::from_str(&f.body).expect("json");
        assert_eq!(body, json!({"model": "gpt-4o", "stream": true}));
        let b = f.to_body().expect("valid");
        assert_eq!(b["request"]["host"], "api.openai.com");
        assert_eq!(b["request"]["port"], 443);
        assert_eq!(b["request"]["headers"]["content-type"], "application/json");
        let plain = SimForm::of_record(&json!({"agent_id": "a", "method": "GET", "scheme": "http",
            "host": "127.0.0.1", "port": 8080, "path": "/x"}));
        assert_eq!(plain.url, "http://127.0.0.1:8080/x");
        assert!(plain.body.is_empty());
    }

    #[test]
    fn bad_forms_name_the_field() {
        let base = SimForm {
            agent: "a".into(),
            method: "GET".into(),
            url: "https://h/p".into(),
            ..SimForm::default()
        };
        assert!(base.to_body().is_ok());
        for (f, field) in [
            (
                SimForm {
                    agent: String::new(),
                    ..base.clone()
                },
                "agent",
            ),
            (
                SimForm {
                    url: "not a url".into(),
                    ..base.clone()
                },
                "url",
            ),
            (
                SimForm {
                    url: "ftp://h/".into(),
                    ..base.clone()
                },
                "url",
            ),
            (
                SimForm {
                    url: "/relative".into(),
                    ..base.clone()
                },
                "url",
            ),
            (
                SimForm {
                    headers: "no colon".into(),
                    ..base.clone()
                },
                "headers",
            ),
        ] {
            let e = f.to_body().expect_err(field);
            assert_eq!(e.extra["errors"][0]["field"], field);
        }
        let multi = SimForm {
            headers: "X-A: 1\nx-a: 2\n\nAccept: */*".into(),
            ..base
        };
        let b = multi.to_body().expect("valid");
        assert_eq!(b["request"]["headers"]["x-a"], json!(["1", "2"]));
    }
}
