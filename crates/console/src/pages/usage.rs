//! The Usage page: requests per verdict and tokens per agent, model or provider over time
//! (SVG charts drawn on the server), top agents, models and providers, refusals by cause.

use crate::chart;
use crate::layout::{render, Ctx, Layout};
use crate::view::{self, Opt};
use crate::web::Form;
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ops::insights;
use portcullis_store::{Dimension, TopRow};
use std::collections::BTreeMap;

/// Windows offered: (name, length, bucket).
const WINDOWS: [(&str, i64, i64); 4] = [
    ("1h", 3_600_000, 60_000),
    ("24h", 86_400_000, 3_600_000),
    ("7d", 7 * 86_400_000, 6 * 3_600_000),
    ("30d", 30 * 86_400_000, 86_400_000),
];
const DIMS: [&str; 3] = ["agent", "model", "provider"];
/// Lines drawn; the rest are summed into "other".
const MAX_LINES: usize = 5;

/// One row of a top list.
pub(crate) struct TopLine {
    pub(crate) key: String,
    pub(crate) requests: String,
    pub(crate) tokens: String,
    pub(crate) refused: String,
    pub(crate) href: String,
}

/// One cause of refusals.
pub(crate) struct Cause {
    pub(crate) verdict: String,
    pub(crate) class: &'static str,
    pub(crate) cause: String,
    pub(crate) count: String,
    pub(crate) href: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    layout: Layout,
    windows: Vec<Opt>,
    dims: Vec<Opt>,
    window: String,
    requests_chart: String,
    tokens_chart: String,
    total_requests: String,
    total_tokens: String,
    top_agents: Vec<TopLine>,
    top_models: Vec<TopLine>,
    top_providers: Vec<TopLine>,
    refusals: Vec<Cause>,
}

fn top(rows: &[TopRow], filter: &str, window: &str) -> Vec<TopLine> {
    rows.iter()
        .map(|r| TopLine {
            href: view::url("/ui/", &[(filter, &r.key), ("since", window)]),
            key: if r.key.is_empty() {
                "(none)".into()
            } else {
                r.key.clone()
            },
            requests: view::thousands(r.requests),
            tokens: view::thousands(r.tokens),
            refused: view::thousands(r.refused),
        })
        .collect()
}

/// `GET /ui/usage?window=24h&by=agent`.
pub(crate) async fn page(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let (window, len, step) = q
        .get("window")
        .and_then(|w| WINDOWS.iter().find(|(n, _, _)| *n == w))
        .copied()
        .unwrap_or(WINDOWS[1]);
    let by = q.get("by").filter(|d| DIMS.contains(d)).unwrap_or("agent");
    let dim = match by {
        "model" => Dimension::Model,
        "provider" => Dimension::Provider,
        _ => Dimension::Agent,
    };
    // Buckets aligned to the step, the last one holding now.
    let end = ctx.now_ms - ctx.now_ms.rem_euclid(step) + step;
    let start = end - len;
    let n = usize::try_from(len / step).unwrap_or(0);
    let u = match insights::usage(ctx.cp, ctx.op(), start, end, step, dim).await {
        Ok(u) => u,
        Err(e) => return ctx.error_page("usage", &e),
    };
    let series: Vec<(&'static str, &str)> = view::VERDICTS
        .iter()
        .map(|v| (view::verdict_class(v), *v))
        .collect();
    let mut values = vec![vec![0u64; series.len()]; n];
    let mut total_requests = 0;
    for b in &u.verdicts {
        let i = usize::try_from((b.start_ms - start) / step).unwrap_or(usize::MAX);
        let k = view::VERDICTS.iter().position(|v| *v == b.verdict);
        if let (Some(slot), Some(k)) = (values.get_mut(i), k) {
            slot[k] += b.requests;
        }
        total_requests += b.requests;
    }
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut total_tokens = 0;
    for b in &u.tokens {
        let i = usize::try_from((b.start_ms - start) / step).unwrap_or(usize::MAX);
        let v = per_key.entry(b.key.clone()).or_insert_with(|| vec![0; n]);
        if let Some(slot) = v.get_mut(i) {
            *slot += b.tokens;
        }
        total_tokens += b.tokens;
    }
    let mut ranked: Vec<(String, Vec<u64>)> = per_key.into_iter().collect();
    ranked.sort_by(|a, b| {
        b.1.iter()
            .sum::<u64>()
            .cmp(&a.1.iter().sum::<u64>())
            .then(a.0.cmp(&b.0))
    });
    if ranked.len() > MAX_LINES {
        let rest = ranked.split_off(MAX_LINES - 1);
        let mut other = vec![0; n];
        for (_, v) in rest {
            for (o, x) in other.iter_mut().zip(v) {
                *o += x;
            }
        }
        ranked.push(("other".into(), other));
    }
    let requests_chart = chart::bars(
        "chart-requests",
        format!("Requests per {} by verdict", step_name(step)),
        &series,
        &values,
        start,
        step,
    );
    let tokens_chart = chart::lines(
        "chart-tokens",
        format!("Tokens per {} by {by}", step_name(step)),
        &ranked,
        start,
        step,
    );
    let page = UsagePage {
        layout: ctx.layout("usage", "Usage"),
        windows: view::options(&WINDOWS.map(|w| w.0), window, None),
        dims: view::options(&DIMS, by, None),
        window: window.to_owned(),
        requests_chart: askama::Template::render(&requests_chart).unwrap_or_default(),
        tokens_chart: askama::Template::render(&tokens_chart).unwrap_or_default(),
        total_requests: view::thousands(total_requests),
        total_tokens: view::thousands(total_tokens),
        top_agents: top(&u.top_agents, "agent", window),
        top_models: top(&u.top_models, "model", window),
        top_providers: top(&u.top_providers, "provider", window),
        refusals: u
            .refusals
            .iter()
            .map(|r| {
                let cause = match (&r.policy, &r.code) {
                    (Some(p), _) if r.verdict == "deny" => format!("policy {p}"),
                    (_, Some(c)) => c.clone(),
                    (Some(p), None) => format!("policy {p}"),
                    (None, None) => "(unspecified)".into(),
                };
                Cause {
                    href: view::url(
                        "/ui/",
                        &[
                            ("verdict", &r.verdict),
                            ("policy", r.policy.as_deref().unwrap_or("")),
                            ("since", window),
                        ],
                    ),
                    class: view::verdict_class(&r.verdict),
                    verdict: r.verdict.clone(),
                    cause,
                    count: view::thousands(r.count),
                }
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

fn step_name(step: i64) -> &'static str {
    match step {
        60_000 => "minute",
        3_600_000 => "hour",
        86_400_000 => "day",
        _ => "6 hours",
    }
}
