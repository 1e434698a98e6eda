//! The Policies page: each policy with its mode, bindings and file, the last reload and
//! its errors (file:line:col), the shadow report (would-be denials per policy over a
//! window, with examples) and, for platform admins, mode changes (shadow → active).

use crate::layout::{render, Ctx, Layout};
use crate::view::{self, Opt};
use crate::web::{self, Form};
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ops::{insights, policies};
use portcullis_audit::parse_time;
use portcullis_core::{ApiError, ErrorSource, Status};
use serde_json::{json, Value};

/// Example records per shadow policy.
const EXAMPLES: u32 = 3;
const WINDOWS: [&str; 4] = ["1h", "24h", "7d", "30d"];

/// One policy row.
pub(crate) struct PolicyRow {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) mode: String,
    pub(crate) mode_class: &'static str,
    pub(crate) overridden: bool,
    pub(crate) bindings: Vec<String>,
    pub(crate) flags: String,
    pub(crate) href: String,
    pub(crate) action: String,
    pub(crate) modes: Vec<Opt>,
}

/// One reload error.
pub(crate) struct LoadError {
    pub(crate) at: String,
    pub(crate) stage: String,
    pub(crate) message: String,
}

/// One line of the shadow report.
pub(crate) struct ShadowLine {
    pub(crate) policy: String,
    pub(crate) count: String,
    pub(crate) examples: Vec<(String, String)>,
    pub(crate) shadow_now: bool,
    pub(crate) action: String,
    pub(crate) requests: String,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    layout: Layout,
    enabled: bool,
    version: String,
    default: String,
    on_block: String,
    reload_ok: bool,
    reload_at: String,
    errors: Vec<LoadError>,
    warnings: Vec<String>,
    policies: Vec<PolicyRow>,
    platform_admin: bool,
    platform: bool,
    windows: Vec<Opt>,
    window: String,
    shadow: Vec<ShadowLine>,
}

#[derive(Template)]
#[template(path = "policy_source.html")]
struct SourcePage {
    layout: Layout,
    name: String,
    file: String,
    source: String,
}

fn mode_class(m: &str) -> &'static str {
    match m {
        "active" => "v-allow",
        "shadow" => "v-would",
        _ => "v-other",
    }
}

fn binding_text(b: &Value) -> String {
    let list = |k: &str| view::strings(b, k).join(", ");
    let mut who = Vec::new();
    for (k, label) in [
        ("agents", "agents"),
        ("groups", "groups"),
        ("tenants", "tenants"),
    ] {
        let l = list(k);
        if !l.is_empty() {
            who.push(format!("{label}: {l}"));
        }
    }
    let who = if who.is_empty() {
        "everyone".to_owned()
    } else {
        who.join("; ")
    };
    format!("{} → {}", who, view::s(b, "mode"))
}

/// `GET /ui/policies?window=24h`.
pub(crate) async fn page(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let mut layout = ctx.layout("policies", "Policies");
    if let (Some("mode"), Some(p)) = (q.get("done"), q.get("policy")) {
        layout.flash = Some(format!("Mode of policy {p} changed."));
    }
    let window = q
        .get("window")
        .filter(|w| WINDOWS.contains(w))
        .unwrap_or("24h")
        .to_owned();
    let mut page = PoliciesPage {
        layout,
        enabled: false,
        version: String::new(),
        default: String::new(),
        on_block: String::new(),
        reload_ok: true,
        reload_at: String::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        policies: Vec::new(),
        platform_admin: false,
        platform: false,
        windows: view::options(&WINDOWS, &window, None),
        window: window.clone(),
        shadow: Vec::new(),
    };
    let Some(api) = ctx.policy else {
        return render(StatusCode::OK, &page);
    };
    page.enabled = true;
    let op = ctx.op();
    page.platform = api.is_platform_operator(op);
    page.platform_admin = page.platform && op.can_write();
    let v = policies::list(ctx.cp, api, op);
    page.version = view::text(v.get("version"));
    page.default = view::text(v.get("default"));
    page.on_block = view::text(v.get("on_block"));
    let reload = v.get("reload").cloned().unwrap_or(Value::Null);
    page.reload_ok = reload.get("ok").and_then(Value::as_bool).unwrap_or(false);
    page.reload_at = view::n(&reload, "at")
        .map(view::time_secs)
        .unwrap_or_default();
    page.errors = reload
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| LoadError {
                    at: format!(
                        "{}:{}:{}",
                        view::s(e, "file"),
                        view::n(e, "row").unwrap_or(0),
                        view::n(e, "col").unwrap_or(0)
                    ),
                    stage: view::text(e.get("stage")),
                    message: view::s(e, "message").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    page.warnings = view::strings(&reload, "warnings");
    let mut modes_now = std::collections::BTreeMap::new();
    page.policies = v
        .get("policies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let name = view::s(p, "name").to_owned();
                    let mode = view::text(p.get("mode"));
                    modes_now.insert(name.clone(), mode.clone());
                    let mut flags = Vec::new();
                    if p.get("cacheable").and_then(Value::as_bool) == Some(false) {
                        flags.push("not cached".to_owned());
                    }
                    let nd = view::strings(p, "non_deterministic");
                    if !nd.is_empty() {
                        flags.push(format!("uses {}", nd.join(", ")));
                    }
                    let current = if p.get("mode_override").is_some_and(|m| !m.is_null()) {
                        mode.clone()
                    } else {
                        String::new()
                    };
                    let mut modes =
                        view::options(&["active", "shadow", "disabled"], &current, None);
                    modes.push(Opt {
                        value: "clear".into(),
                        label: "as declared (no override)".into(),
                        selected: current.is_empty(),
                    });
                    PolicyRow {
                        href: format!("/ui/policies/{}", view::segment(&name)),
                        action: format!("/ui/policies/{}/mode", view::segment(&name)),
                        file: view::s(p, "file").to_owned(),
                        mode_class: mode_class(&mode),
                        overridden: !current.is_empty(),
                        bindings: p
                            .get("bindings")
                            .and_then(Value::as_array)
                            .map(|b| b.iter().map(binding_text).collect())
                            .unwrap_or_default(),
                        flags: flags.join(" · "),
                        modes,
                        mode,
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let since = parse_time("window", &window, ctx.now_ms).unwrap_or(ctx.now_ms - 86_400_000);
    let report = match insights::shadow(ctx.cp, op, since, ctx.now_ms + 1, EXAMPLES).await {
        Ok(r) => r,
        Err(e) => return ctx.error_page("policies", &e),
    };
    page.shadow = report
        .into_iter()
        .map(|r| ShadowLine {
            shadow_now: modes_now.get(&r.policy).is_some_and(|m| m == "shadow"),
            action: format!("/ui/policies/{}/mode", view::segment(&r.policy)),
            requests: view::url("/ui/", &[("verdict", "would_deny"), ("since", &window)]),
            count: view::thousands(r.count),
            examples: r
                .examples
                .iter()
                .map(|e| {
                    (
                        format!("/ui/requests/{}", view::segment(view::s(e, "id"))),
                        format!(
                            "{} {} {}{}",
                            view::s(e, "agent_id"),
                            view::s(e, "method"),
                            view::s(e, "host"),
                            view::s(e, "path")
                        ),
                    )
                })
                .collect(),
            policy: r.policy,
        })
        .collect();
    render(StatusCode::OK, &page)
}

/// `GET /ui/policies/{name}`: the policy's Rego file (platform tenant only).
pub(crate) fn source(ctx: &Ctx<'_>, raw: &str) -> Response<Full<Bytes>> {
    let Some(api) = ctx.policy else {
        return ctx.error_page("policies", &disabled());
    };
    let name = portcullis_admin::ops::decisions::percent_decode(raw, false).unwrap_or_default();
    match policies::source(api, ctx.op(), &name) {
        Ok((file, source)) => render(
            StatusCode::OK,
            &SourcePage {
                layout: ctx.layout("policies", format!("Policy {name}")),
                name,
                file,
                source,
            },
        ),
        Err(e) => ctx.error_page("policies", &e),
    }
}

/// `POST /ui/policies/{name}/mode` with `mode` = active | shadow | disabled | clear.
pub(crate) async fn set_mode(ctx: &Ctx<'_>, raw: &str, form: &Form) -> Response<Full<Bytes>> {
    let Some(api) = ctx.policy else {
        return ctx.error_page("policies", &disabled());
    };
    let name = portcullis_admin::ops::decisions::percent_decode(raw, false).unwrap_or_default();
    let mode = match form.get("mode") {
        Some("clear") => Value::Null,
        Some(m) => json!(m),
        None => json!(""),
    };
    let body = serde_json::to_vec(&json!({ "mode": mode })).unwrap_or_default();
    match policies::set_mode(ctx.cp, api, ctx.op(), &name, &body).await {
        Ok(_) => web::see_other(&view::url(
            "/ui/policies",
            &[("done", "mode"), ("policy", &name)],
        )),
        Err(e) => ctx.error_page("policies", &e),
    }
}

fn disabled() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "policy_disabled",
        "the policy engine is not enabled on this gateway",
        ErrorSource::Client,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_read_plainly() {
        let b = json!({"agents": ["a", "b"], "groups": [], "tenants": ["acme"], "mode": "shadow"});
        assert_eq!(binding_text(&b), "agents: a, b; tenants: acme → shadow");
        assert_eq!(
            binding_text(&json!({"mode": "active"})),
            "everyone → active"
        );
    }
}
