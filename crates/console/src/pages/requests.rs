//! The Requests page (the console's home): the operator's audit records, newest first,
//! the last 24 hours unless the URL says otherwise, filters kept in the URL, a live
//! refresh of the first page, and the detail of one record.

use crate::layout::{render, Ctx, ErrorView, Layout};
use crate::view::{self, VERDICTS};
use crate::web::Form;
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ops::{decisions, insights};
use portcullis_audit::parse_time;
use portcullis_core::{ApiError, ErrorSource, Status, RECORD_FIELDS};
use portcullis_store::{ConsoleRecord, Cursor, RequestFilter};
use serde_json::Value;

/// Rows per page.
const PAGE: u32 = 50;
/// The count stops here ("10,000+").
const COUNT_CAP: u64 = 10_000;
/// Default look-back.
const DEFAULT_SINCE: &str = "24h";
/// Longest filter value accepted.
const MAX_FILTER_LEN: usize = 512;

/// The filters as typed (echoed back into the form and links).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filters {
    pub(crate) agent: String,
    pub(crate) subagent: String,
    pub(crate) verdict: String,
    pub(crate) policy: String,
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) host: String,
    pub(crate) status: String,
    pub(crate) since: String,
    pub(crate) until: String,
}

impl Filters {
    fn of(q: &Form) -> Self {
        let get = |k: &str| {
            q.get(k)
                .map(|v| v.chars().take(MAX_FILTER_LEN).collect())
                .unwrap_or_default()
        };
        Self {
            agent: get("agent"),
            subagent: get("subagent"),
            verdict: get("verdict"),
            policy: get("policy"),
            provider: get("provider"),
            model: get("model"),
            host: get("host"),
            status: get("status"),
            since: q
                .get("since")
                .map_or_else(|| DEFAULT_SINCE.to_owned(), str::to_owned),
            until: get("until"),
        }
    }

    /// The filters as URL parameters.
    fn params(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("agent", &self.agent),
            ("subagent", &self.subagent),
            ("verdict", &self.verdict),
            ("policy", &self.policy),
            ("provider", &self.provider),
            ("model", &self.model),
            ("host", &self.host),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
        ]
    }

    /// The store filter, or the reason the filters are refused.
    fn to_filter(&self, now_ms: i64) -> Result<RequestFilter, ApiError> {
        let invalid = |field: &str, reason: String| {
            ApiError::new(
                Status::Unprocessable,
                "validation_error",
                format!("{field}: {reason}"),
                ErrorSource::Client,
            )
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if !self.verdict.is_empty() && !VERDICTS.contains(&self.verdict.as_str()) {
            return Err(invalid(
                "verdict",
                format!("must be one of {}", VERDICTS.join(", ")),
            ));
        }
        let status = if self.status.is_empty() {
            None
        } else {
            match self.status.parse::<u16>() {
                Ok(s) if (100..=599).contains(&s) => Some(s),
                _ => return Err(invalid("status", "must be an HTTP status (100-599)".into())),
            }
        };
        let since =
            parse_time("since", &self.since, now_ms).map_err(|e| invalid("since", e.reason))?;
        let until = if self.until.is_empty() {
            None
        } else {
            Some(parse_time("until", &self.until, now_ms).map_err(|e| invalid("until", e.reason))?)
        };
        if until.is_some_and(|u| u < since) {
            return Err(invalid("until", "must not be before since".into()));
        }
        Ok(RequestFilter {
            agent_id: opt(&self.agent),
            subagent: opt(&self.subagent),
            verdict: opt(&self.verdict),
            policy: opt(&self.policy),
            provider: opt(&self.provider),
            model: opt(&self.model),
            host: opt(&self.host),
            status,
            since_ms: since,
            until_ms: until,
        })
    }
}

/// One row of the table.
pub(crate) struct Row {
    pub(crate) href: String,
    pub(crate) time: String,
    pub(crate) agent: String,
    pub(crate) subagent: String,
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) verdict: String,
    pub(crate) verdict_class: &'static str,
    pub(crate) policy: String,
    pub(crate) status: String,
    pub(crate) latency: String,
    pub(crate) tokens: String,
    pub(crate) fresh: bool,
}

fn row(r: &ConsoleRecord, seen: Option<&Cursor>) -> Row {
    let v = &r.record;
    let verdict = view::s(v, "verdict").to_owned();
    let fresh =
        seen.is_some_and(|c| (r.cursor.ts_ms, r.cursor.id.as_str()) > (c.ts_ms, c.id.as_str()));
    let host = match (view::s(v, "host"), view::n(v, "port")) {
        ("", _) => String::new(),
        (h, Some(p)) if p != 80 && p != 443 => format!("{h}:{p}"),
        (h, _) => h.to_owned(),
    };
    Row {
        href: format!("/ui/requests/{}", view::segment(&r.cursor.id)),
        time: view::time_ms(r.cursor.ts_ms),
        agent: view::s(v, "agent_id").to_owned(),
        subagent: view::s(v, "subagent").to_owned(),
        method: view::s(v, "method").to_owned(),
        host,
        path: view::s(v, "path").to_owned(),
        verdict_class: view::verdict_class(&verdict),
        verdict,
        policy: view::s(v, "policy").to_owned(),
        status: view::n(v, "status")
            .map(|s| s.to_string())
            .unwrap_or_default(),
        latency: view::n(v, "latency_ms")
            .map(|l| format!("{l} ms"))
            .unwrap_or_default(),
        tokens: view::tokens(v).map(view::thousands).unwrap_or_default(),
        fresh,
    }
}

fn cursor_text(c: &Cursor) -> String {
    format!("{}.{}", c.ts_ms, c.id)
}

fn parse_cursor(s: &str) -> Option<Cursor> {
    let (ts, id) = s.split_once('.')?;
    let ts_ms = ts.parse().ok()?;
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| Cursor {
        ts_ms,
        id: id.to_owned(),
    })
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage {
    layout: Layout,
    f: Filters,
    verdict_options: Vec<view::Opt>,
    range: String,
    count: String,
    rows: Vec<Row>,
    older: Option<String>,
    newest: Option<String>,
    live: Option<String>,
    live_every: u64,
    filter_error: Option<ErrorView>,
}

#[derive(Template)]
#[template(path = "requests_rows.html")]
struct RowsFragment {
    rows: Vec<Row>,
    live: Option<String>,
    live_every: u64,
}

/// The live URL for the first page of `f`, marking rows after `seen` as new.
fn live_url(f: &Filters, seen: Option<&Cursor>) -> String {
    let seen = seen.map(cursor_text).unwrap_or_default();
    let mut params = f.params();
    params.push(("seen", &seen));
    view::url("/ui/requests/live", &params)
}

fn range_text(f: &RequestFilter, raw: &Filters) -> String {
    let until = match f.until_ms {
        Some(u) => view::time_ms(u),
        None => "now".to_owned(),
    };
    let preset = if raw.until.is_empty() && !raw.since.contains('T') {
        format!(" (last {})", raw.since)
    } else {
        String::new()
    };
    format!("{} → {} UTC{preset}", view::time_ms(f.since_ms), until)
}

/// `GET /ui/`.
pub(crate) async fn page(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let f = Filters::of(q);
    let mut p = RequestsPage {
        layout: ctx.layout("requests", "Requests"),
        verdict_options: Vec::new(),
        range: String::new(),
        count: String::new(),
        rows: Vec::new(),
        older: None,
        newest: None,
        live: None,
        live_every: ctx.console.settings.live_interval_secs,
        filter_error: None,
        f,
    };
    p.verdict_options = view::options(&VERDICTS, &p.f.verdict, Some("any verdict"));
    let filter = match p.f.to_filter(ctx.now_ms) {
        Ok(x) => x,
        Err(e) => {
            p.filter_error = Some(ErrorView::of(&e));
            return render(StatusCode::UNPROCESSABLE_ENTITY, &p);
        }
    };
    let before = q.get("before").and_then(parse_cursor);
    let op = ctx.op();
    let records = match insights::requests(ctx.cp, op, &filter, before.as_ref(), PAGE).await {
        Ok(r) => r,
        Err(e) => return ctx.error_page("requests", &e),
    };
    let total = match insights::count(ctx.cp, op, &filter, COUNT_CAP).await {
        Ok(n) => n,
        Err(e) => return ctx.error_page("requests", &e),
    };
    p.range = range_text(&filter, &p.f);
    p.count = if total >= COUNT_CAP {
        format!("{}+ records", view::thousands(COUNT_CAP))
    } else {
        format!("{} records", view::thousands(total))
    };
    if records.len() == PAGE as usize {
        if let Some(last) = records.last() {
            let c = cursor_text(&last.cursor);
            let mut params = p.f.params();
            params.push(("before", &c));
            p.older = Some(view::url("/ui/", &params));
        }
    }
    if before.is_some() {
        p.newest = Some(view::url("/ui/", &p.f.params()));
    } else if filter.until_ms.is_none() {
        p.live = Some(live_url(&p.f, records.first().map(|r| &r.cursor)));
    }
    p.rows = records.iter().map(|r| row(r, None)).collect();
    render(StatusCode::OK, &p)
}

/// `GET /ui/requests/live?...&seen=`: the first page's rows again (polled by htmx), new
/// ones since `seen` marked, and the element that keeps polling.
pub(crate) async fn live(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let f = Filters::of(q);
    let filter = match f.to_filter(ctx.now_ms) {
        Ok(x) => x,
        Err(e) => return ctx.error_page("requests", &e),
    };
    let seen = q.get("seen").and_then(parse_cursor);
    let records = match insights::requests(ctx.cp, ctx.op(), &filter, None, PAGE).await {
        Ok(r) => r,
        Err(e) => return ctx.error_page("requests", &e),
    };
    let newest = records.first().map(|r| r.cursor.clone()).or(seen.clone());
    render(
        StatusCode::OK,
        &RowsFragment {
            rows: records.iter().map(|r| row(r, seen.as_ref())).collect(),
            live: Some(live_url(&f, newest.as_ref())),
            live_every: ctx.console.settings.live_interval_secs,
        },
    )
}

/// One labelled value of the detail page.
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) value: String,
}

/// One line of the decision trace.
pub(crate) struct TraceLine {
    pub(crate) policy: String,
    pub(crate) result: &'static str,
    pub(crate) class: &'static str,
    pub(crate) reasons: Vec<String>,
}

#[derive(Template)]
#[template(path = "request_detail.html")]
struct DetailPage {
    layout: Layout,
    id: String,
    verdict: String,
    verdict_class: &'static str,
    summary: String,
    fields: Vec<Field>,
    trace: Vec<TraceLine>,
    reasons: Vec<String>,
    usage: Vec<Field>,
    timings: Vec<Field>,
    credential: String,
    simulate: String,
    json: String,
}

/// The recorded decision as a trace: the deciding policy with its result and reasons,
/// then each shadow policy that would have denied.
fn trace(v: &Value) -> Vec<TraceLine> {
    let verdict = view::s(v, "verdict");
    let mut out = Vec::new();
    let policy = view::s(v, "policy");
    if !policy.is_empty() {
        let (result, class) = match verdict {
            "deny" => ("denied", "v-deny"),
            "error" => ("failed", "v-error"),
            _ => ("allowed", "v-allow"),
        };
        let reasons = if verdict == "deny" || verdict == "error" {
            view::strings(v, "reasons")
        } else {
            Vec::new()
        };
        out.push(TraceLine {
            policy: policy.to_owned(),
            result,
            class,
            reasons,
        });
    }
    for p in view::strings(v, "would_deny") {
        out.push(TraceLine {
            policy: p,
            result: "would deny (shadow)",
            class: "v-would",
            reasons: if verdict == "would_deny" {
                view::strings(v, "reasons")
            } else {
                Vec::new()
            },
        });
    }
    out
}

/// `GET /ui/requests/{id}`.
pub(crate) async fn detail(ctx: &Ctx<'_>, raw_id: &str) -> Response<Full<Bytes>> {
    let Ok(id) = decisions::percent_decode(raw_id, false) else {
        return ctx.error_page("requests", &not_found());
    };
    let v = match decisions::get(ctx.cp, ctx.op(), &id).await {
        Ok(v) => v,
        Err(e) => return ctx.error_page("requests", &e),
    };
    let fields = RECORD_FIELDS
        .iter()
        .map(|&name| Field {
            name,
            value: view::text(v.get(name)),
        })
        .collect();
    let usage = match v.get("usage") {
        Some(Value::Object(u)) => u
            .iter()
            .map(|(k, val)| Field {
                name: usage_label(k),
                value: view::text(Some(val)),
            })
            .collect(),
        _ => Vec::new(),
    };
    let ms = |k: &str| {
        view::n(&v, k)
            .map(|x| format!("{x} ms"))
            .unwrap_or_else(|| "—".into())
    };
    let timings = vec![
        Field {
            name: "policy evaluation",
            value: view::n(&v, "policy_us")
                .map(|x| format!("{x} µs"))
                .unwrap_or_else(|| "—".into()),
        },
        Field {
            name: "upstream first byte",
            value: ms("upstream_ttfb_ms"),
        },
        Field {
            name: "total",
            value: ms("latency_ms"),
        },
    ];
    let verdict = view::s(&v, "verdict").to_owned();
    let summary = format!(
        "{} {}{}",
        view::s(&v, "method"),
        view::s(&v, "host"),
        view::s(&v, "path")
    );
    let page = DetailPage {
        layout: ctx.layout("requests", "Request"),
        simulate: view::url("/ui/simulate", &[("from", &id)]),
        verdict_class: view::verdict_class(&verdict),
        verdict,
        summary,
        trace: trace(&v),
        reasons: view::strings(&v, "reasons"),
        credential: view::s(&v, "credential").to_owned(),
        json: serde_json::to_string_pretty(&v).unwrap_or_default(),
        id,
        fields,
        usage,
        timings,
    };
    render(StatusCode::OK, &page)
}

fn usage_label(k: &str) -> &'static str {
    match k {
        "input_tokens" => "input tokens",
        "output_tokens" => "output tokens",
        "cached_input_tokens" => "cached input tokens",
        "reasoning_tokens" => "reasoning tokens",
        "total_tokens" => "total tokens",
        "source" => "source",
        "truncated" => "truncated",
        _ => "other",
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "not_found",
        "decision not found",
        ErrorSource::Client,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            ts_ms: 17,
            id: "01ABC".into(),
        };
        assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
        for bad in ["", "x.y", "1.", "1.a b", "1.<script>", "1"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_are_validated() {
        let now = 100 * 86_400_000;
        let f = Filters::of(&Form::parse(b"verdict=deny&status=403&host=api.example"));
        let rf = f.to_filter(now).expect("valid");
        assert_eq!(rf.since_ms, now - 86_400_000);
        assert_eq!(rf.status, Some(403));
        assert_eq!(rf.host.as_deref(), Some("api.example"));
        for bad in [
            "verdict=maybe",
            "status=42",
            "status=abc",
            "since=yesterday",
            "since=1h&until=2h",
        ] {
            let f = Filters::of(&Form::parse(bad.as_bytes()));
            assert!(f.to_filter(now).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_trace_lists_the_deciding_and_the_shadow_policies() {
        let r = json!({"verdict": "deny", "policy": "guard", "reasons": ["no"], "would_deny": ["beta"]});
        let t = trace(&r);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].policy.as_str(), t[0].result), ("guard", "denied"));
        assert_eq!(t[0].reasons, vec!["no".to_owned()]);
        assert_eq!((t[1].policy.as_str(), t[1].class), ("beta", "v-would"));
    }
}
