//! The Agents page: every agent of the tenant with status, mode, risk, groups, limits and
//! live usage; create (secret shown once with the proxy line), suspend, activate, revoke
//! and rotate behind a confirmation, config edits, and the sub-agents seen.

use crate::layout::{render, Ctx, Layout};
use crate::view::{self, Opt};
use crate::web::{self, Form};
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ops::agents::{self as ops, Action};
use portcullis_admin::ops::insights;
use portcullis_core::{Agent, AgentStatus};
use portcullis_store::AgentActivity;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Sub-agents seen over this long are listed.
const SUBAGENTS_WINDOW_MS: i64 = 7 * 86_400_000;
/// Most sub-agents listed.
const MAX_SUBAGENTS: u32 = 200;
const LIMIT_KEYS: [(&str, &str); 4] = [
    ("rpm", "requests / min"),
    ("tpm", "tokens / min"),
    ("tokens_per_day", "tokens / day"),
    ("max_concurrent", "concurrent"),
];

/// One agent row.
pub(crate) struct AgentRow {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) status: String,
    pub(crate) status_class: &'static str,
    pub(crate) mode: String,
    pub(crate) risk: String,
    pub(crate) groups: String,
    pub(crate) limits: String,
    pub(crate) last_minute: String,
    pub(crate) tokens_today: String,
    pub(crate) budget: Option<u8>,
    pub(crate) source: String,
    pub(crate) revoked: bool,
    pub(crate) suspended: bool,
}

/// A sub-agent seen in the records.
pub(crate) struct SubRow {
    pub(crate) agent: String,
    pub(crate) name: String,
    pub(crate) requests: String,
    pub(crate) last: String,
    pub(crate) href: String,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    layout: Layout,
    agents: Vec<AgentRow>,
    subagents: Vec<SubRow>,
    modes: Vec<Opt>,
    risks: Vec<Opt>,
}

#[derive(Template)]
#[template(path = "agent_detail.html")]
struct AgentPage {
    layout: Layout,
    row: AgentRow,
    scopes: String,
    groups: String,
    token_ttl: String,
    generation: u64,
    created: String,
    updated: String,
    modes: Vec<Opt>,
    risks: Vec<Opt>,
    limits: Vec<(String, String, String, String)>,
    subagents: Vec<SubRow>,
    attributes: String,
}

#[derive(Template)]
#[template(path = "agent_secret.html")]
struct SecretPage {
    layout: Layout,
    id: String,
    secret: String,
    proxy_line: String,
    created: bool,
}

fn status_class(s: AgentStatus) -> &'static str {
    match s {
        AgentStatus::Active => "v-allow",
        AgentStatus::Suspended => "v-would",
        AgentStatus::Revoked => "v-deny",
    }
}

fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The effective limit `i` (override, else the `[limits]` default).
fn effective(ctx: &Ctx<'_>, a: &Agent, i: usize) -> Option<u64> {
    a.limits.entries()[i]
        .1
        .or(ctx.console.overview.default_limits[i])
}

fn row(ctx: &Ctx<'_>, a: &Agent, activity: &BTreeMap<String, AgentActivity>) -> AgentRow {
    let act = activity.get(&a.id).cloned().unwrap_or_default();
    let limits: Vec<String> = LIMIT_KEYS
        .iter()
        .enumerate()
        .filter_map(|(i, (_, name))| {
            effective(ctx, a, i).map(|v| format!("{} {name}", view::thousands(v)))
        })
        .collect();
    let day = effective(ctx, a, 2);
    let budget = day.filter(|d| *d > 0).map(|d| {
        let pct = act.tokens_today.saturating_mul(100) / d;
        u8::try_from(pct.min(100)).unwrap_or(100)
    });
    let rpm = effective(ctx, a, 0);
    AgentRow {
        href: format!("/ui/agents/{}", view::segment(&a.id)),
        id: a.id.clone(),
        status: label(&a.status),
        status_class: status_class(a.status),
        mode: label(&a.mode),
        risk: label(&a.risk_level),
        groups: a.groups.join(", "),
        limits: if limits.is_empty() {
            "unlimited".into()
        } else {
            limits.join(" · ")
        },
        last_minute: match rpm {
            Some(r) => format!("{} / {}", act.requests_last_minute, view::thousands(r)),
            None => act.requests_last_minute.to_string(),
        },
        tokens_today: match day {
            Some(d) => format!(
                "{} / {}",
                view::thousands(act.tokens_today),
                view::thousands(d)
            ),
            None => view::thousands(act.tokens_today),
        },
        budget,
        source: label(&a.source),
        revoked: a.status == AgentStatus::Revoked,
        suspended: a.status == AgentStatus::Suspended,
    }
}

fn start_of_day_ms(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(86_400_000)
}

async fn activity(ctx: &Ctx<'_>) -> BTreeMap<String, AgentActivity> {
    insights::activity(
        ctx.cp,
        ctx.op(),
        ctx.now_ms - 60_000,
        start_of_day_ms(ctx.now_ms),
    )
    .await
    .map(|v| v.into_iter().collect())
    .unwrap_or_default()
}

async fn subagents(ctx: &Ctx<'_>, only: Option<&str>) -> Vec<SubRow> {
    let seen = insights::subagents(
        ctx.cp,
        ctx.op(),
        ctx.now_ms - SUBAGENTS_WINDOW_MS,
        MAX_SUBAGENTS,
    )
    .await
    .unwrap_or_default();
    seen.into_iter()
        .filter(|s| only.is_none_or(|a| a == s.agent_id))
        .map(|s| SubRow {
            href: view::url(
                "/ui/",
                &[
                    ("agent", &s.agent_id),
                    ("subagent", &s.subagent),
                    ("since", "7d"),
                ],
            ),
            agent: s.agent_id,
            name: s.subagent,
            requests: view::thousands(s.requests),
            last: view::time_ms(s.last_ms),
        })
        .collect()
}

const MODES: [&str; 3] = ["active", "shadow", "disabled"];
const RISKS: [&str; 4] = ["LOW", "MEDIUM", "HIGH", "CRITICAL"];

fn flash(q: &Form) -> Option<String> {
    let agent = q.get("agent").unwrap_or("");
    let what = match q.get("done")? {
        "suspend" => "suspended: its next request is refused (407)",
        "activate" => "activated",
        "revoke" => "revoked (permanently)",
        "updated" => "updated",
        _ => return None,
    };
    Some(format!("Agent {agent} {what}."))
}

/// `GET /ui/agents`.
pub(crate) async fn list(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let agents = match ops::list(ctx.cp, ctx.op()).await {
        Ok(a) => a,
        Err(e) => return ctx.error_page("agents", &e),
    };
    let act = activity(ctx).await;
    let mut layout = ctx.layout("agents", "Agents");
    layout.flash = flash(q);
    let page = AgentsPage {
        layout,
        agents: agents
            .iter()
            .filter(|a| a.parent.is_none())
            .map(|a| row(ctx, a, &act))
            .collect(),
        subagents: subagents(ctx, None).await,
        modes: view::options(&MODES, "active", None),
        risks: view::options(&RISKS, "LOW", None),
    };
    render(StatusCode::OK, &page)
}

/// `GET /ui/agents/{id}`.
pub(crate) async fn detail(ctx: &Ctx<'_>, id: &str, q: &Form) -> Response<Full<Bytes>> {
    let a = match ops::get(ctx.cp, ctx.op(), id).await {
        Ok(a) => a,
        Err(e) => return ctx.error_page("agents", &e),
    };
    let act = activity(ctx).await;
    let mut layout = ctx.layout("agents", format!("Agent {}", a.id));
    layout.flash = flash(q);
    let limits = LIMIT_KEYS
        .iter()
        .enumerate()
        .map(|(i, (key, name))| {
            let own = a.limits.entries()[i]
                .1
                .map(|v| v.to_string())
                .unwrap_or_default();
            let default = ctx.console.overview.default_limits[i]
                .map_or_else(|| "unlimited".to_owned(), view::thousands);
            ((*key).to_owned(), (*name).to_owned(), own, default)
        })
        .collect();
    let page = AgentPage {
        layout,
        scopes: a.allowed_scopes.join(" "),
        groups: a.groups.join(", "),
        token_ttl: a.token_ttl_secs.to_string(),
        generation: a.generation,
        created: view::time_secs(a.created_at),
        updated: view::time_secs(a.updated_at),
        modes: view::options(&MODES, &label(&a.mode), None),
        risks: view::options(&RISKS, &label(&a.risk_level), None),
        limits,
        subagents: subagents(ctx, Some(&a.id)).await,
        attributes: serde_json::to_string_pretty(&a.attributes).unwrap_or_default(),
        row: row(ctx, &a, &act),
    };
    render(StatusCode::OK, &page)
}

/// Words of a list field (commas and spaces separate).
fn words(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A number field: absent → `None`, a number → it, anything else → the text (so the
/// operation reports it as invalid, like the API would).
fn number(s: Option<&str>) -> Option<Value> {
    s.map(|v| {
        v.parse::<u64>()
            .map_or_else(|_| Value::from(v), Value::from)
    })
}

fn secret_page(ctx: &Ctx<'_>, a: &Agent, secret: String, created: bool) -> Response<Full<Bytes>> {
    let proxy = ctx.console.overview.proxy;
    let proxy_line = format!(
        "export HTTP_PROXY=http://{id}:{secret}@{proxy} HTTPS_PROXY=http://{id}:{secret}@{proxy} NO_PROXY=localhost,127.0.0.1,::1",
        id = a.id
    );
    let page = SecretPage {
        layout: ctx.layout("agents", format!("Agent {}", a.id)),
        id: a.id.clone(),
        secret,
        proxy_line,
        created,
    };
    render(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &page,
    )
}

/// `POST /ui/agents`: creates an agent and shows its secret once.
pub(crate) async fn create(ctx: &Ctx<'_>, form: &Form) -> Response<Full<Bytes>> {
    let mut m = Map::new();
    m.insert("id".into(), json!(form.get("id").unwrap_or("")));
    for (field, key) in [("mode", "mode"), ("risk_level", "risk_level")] {
        if let Some(v) = form.get(field) {
            m.insert(key.into(), json!(v));
        }
    }
    let groups = words(form.get("groups"));
    if !groups.is_empty() {
        m.insert("groups".into(), json!(groups));
    }
    let scopes = words(form.get("scopes"));
    if !scopes.is_empty() {
        m.insert("allowed_scopes".into(), json!(scopes));
    }
    if let Some(t) = number(form.get("token_ttl")) {
        m.insert("token_ttl".into(), t);
    }
    let mut limits = Map::new();
    for (key, _) in LIMIT_KEYS {
        if let Some(v) = number(form.get(key)) {
            limits.insert(key.into(), v);
        }
    }
    if !limits.is_empty() {
        m.insert("limits".into(), Value::Object(limits));
    }
    match ops::create(ctx.cp, ctx.op(), m).await {
        Ok(created) => secret_page(ctx, &created.agent, created.secret, true),
        Err(e) => ctx.error_page("agents", &e),
    }
}

/// `POST /ui/agents/{id}/config`: mode, risk, scopes, groups, token TTL, limits (an empty
/// limit removes the override).
pub(crate) async fn update(ctx: &Ctx<'_>, id: &str, form: &Form) -> Response<Full<Bytes>> {
    let mut m = Map::new();
    for key in ["mode", "risk_level"] {
        if let Some(v) = form.get(key) {
            m.insert(key.into(), json!(v));
        }
    }
    if form.raw("groups").is_some() {
        m.insert("groups".into(), json!(words(form.get("groups"))));
    }
    if form.raw("scopes").is_some() {
        m.insert("scopes".into(), json!(words(form.get("scopes"))));
    }
    if let Some(t) = number(form.get("token_ttl")) {
        m.insert("token_ttl".into(), t);
    }
    let mut limits = Map::new();
    for (key, _) in LIMIT_KEYS {
        if form.raw(key).is_some() {
            limits.insert(key.into(), number(form.get(key)).unwrap_or(Value::Null));
        }
    }
    if !limits.is_empty() {
        m.insert("limits".into(), Value::Object(limits));
    }
    let body = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    match ops::update_config(ctx.cp, ctx.op(), id, &body).await {
        Ok(a) => web::see_other(&view::url(
            &format!("/ui/agents/{}", view::segment(&a.id)),
            &[("done", "updated"), ("agent", &a.id)],
        )),
        Err(e) => ctx.error_page("agents", &e),
    }
}

/// `POST /ui/agents/{id}/{suspend|activate|revoke|rotate}`.
pub(crate) async fn action(ctx: &Ctx<'_>, id: &str, action: Action) -> Response<Full<Bytes>> {
    match ops::lifecycle(ctx.cp, ctx.op(), id, action).await {
        Ok((a, Some(secret))) => secret_page(ctx, &a, secret, false),
        Ok((a, None)) => web::see_other(&view::url(
            "/ui/agents",
            &[("done", action.as_str()), ("agent", &a.id)],
        )),
        Err(e) => ctx.error_page("agents", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_fields_and_numbers() {
        assert_eq!(words(Some("a, b  c\nd")), vec!["a", "b", "c", "d"]);
        assert!(words(None).is_empty());
        assert_eq!(number(Some("60")), Some(json!(60)));
        assert_eq!(number(Some("lots")), Some(json!("lots")));
        assert_eq!(number(None), None);
        assert_eq!(start_of_day_ms(86_400_000 + 5), 86_400_000);
    }

    #[test]
    fn flash_names_known_outcomes_only() {
        let f = Form::parse(b"done=suspend&agent=bot");
        assert_eq!(
            flash(&f).as_deref(),
            Some("Agent bot suspended: its next request is refused (407).")
        );
        assert_eq!(flash(&Form::parse(b"done=<script>")), None);
    }

    #[test]
    fn modes_are_offered() {
        assert_eq!(
            view::options(&MODES, "shadow", None)
                .iter()
                .filter(|o| o.selected)
                .count(),
            1
        );
    }
}
