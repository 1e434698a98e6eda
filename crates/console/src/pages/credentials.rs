//! The Credentials page: provider credentials the gateway injects (names, hosts, who may
//! use them, last rotation); create, rotate and delete stored ones. The secret is
//! write-only: a password field that is never filled back, never in an answer.

use crate::layout::{render, Ctx, Layout};
use crate::view;
use crate::web::{self, Form};
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ops::credentials as ops;
use serde_json::{json, Map, Value};

/// One credential.
pub(crate) struct CredRow {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) hosts: String,
    pub(crate) header: String,
    pub(crate) who: String,
    pub(crate) mode: String,
    pub(crate) rotated: String,
    pub(crate) stored: bool,
    pub(crate) rotate: String,
    pub(crate) delete: String,
}

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    layout: Layout,
    rows: Vec<CredRow>,
    unavailable: Option<String>,
}

fn row(v: &Value) -> CredRow {
    let name = view::s(v, "name").to_owned();
    let mut who = Vec::new();
    for (k, label) in [
        ("agents", "agents"),
        ("groups", "groups"),
        ("tenants", "tenants"),
    ] {
        let l = view::strings(v, k);
        if !l.is_empty() {
            who.push(format!("{label}: {}", l.join(", ")));
        }
    }
    let source = view::s(v, "source").to_owned();
    CredRow {
        rotate: format!("/ui/credentials/{}/rotate", view::segment(&name)),
        delete: format!("/ui/credentials/{}/delete", view::segment(&name)),
        hosts: view::strings(v, "hosts").join(", "),
        header: format!("{}: {}", view::s(v, "header"), view::s(v, "format")),
        who: if who.is_empty() {
            "no one (bind agents, groups or tenants)".into()
        } else {
            who.join("; ")
        },
        mode: view::text(v.get("mode")),
        rotated: view::n(v, "updated_at")
            .map(view::time_secs)
            .unwrap_or_else(|| "config file".into()),
        stored: source == "store",
        source,
        name,
    }
}

fn flash(q: &Form) -> Option<String> {
    let name = q.get("name").unwrap_or("");
    let what = match q.get("done")? {
        "created" => "created",
        "rotated" => "rotated: the new secret applies to the next request",
        "deleted" => "deleted",
        _ => return None,
    };
    Some(format!("Credential {name} {what}."))
}

/// `GET /ui/credentials`.
pub(crate) async fn page(ctx: &Ctx<'_>, q: &Form) -> Response<Full<Bytes>> {
    let mut layout = ctx.layout("credentials", "Credentials");
    layout.flash = flash(q);
    let (rows, unavailable) = match ops::list(ctx.cp, ctx.op()).await {
        Ok(items) => (items.iter().map(row).collect(), None),
        Err(e) if e.code == "credentials_disabled" => (Vec::new(), Some(e.detail.to_string())),
        Err(e) => return ctx.error_page("credentials", &e),
    };
    render(
        StatusCode::OK,
        &CredentialsPage {
            layout,
            rows,
            unavailable,
        },
    )
}

fn list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `POST /ui/credentials`: a new stored credential (name, hosts, header, format, who, mode,
/// secret).
pub(crate) async fn create(ctx: &Ctx<'_>, form: &Form) -> Response<Full<Bytes>> {
    let name = form.get("name").unwrap_or("").to_owned();
    let mut m = Map::new();
    m.insert("hosts".into(), json!(list(form.get("hosts"))));
    for key in ["header", "format", "mode"] {
        if let Some(v) = form.get(key) {
            m.insert(key.into(), json!(v));
        }
    }
    for key in ["agents", "groups"] {
        m.insert(key.into(), json!(list(form.get(key))));
    }
    if form.get("tenant_wide").is_some() {
        m.insert("tenants".into(), json!([ctx.op().tenant]));
    }
    m.insert("secret".into(), json!(form.raw("secret").unwrap_or("")));
    let body = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    if name.is_empty() || !portcullis_core::is_valid_id(&name) {
        let e = portcullis_core::ApiError::new(
            portcullis_core::Status::Unprocessable,
            "validation_error",
            "name: must match ^[a-z][a-z0-9_]{1,63}$",
            portcullis_core::ErrorSource::Client,
        );
        return ctx.error_page("credentials", &e);
    }
    match ops::put(ctx.cp, ctx.op(), &name, &body).await {
        Ok(_) => web::see_other(&view::url(
            "/ui/credentials",
            &[("done", "created"), ("name", &name)],
        )),
        Err(e) => ctx.error_page("credentials", &e),
    }
}

/// `POST /ui/credentials/{name}/rotate` with a new `secret`.
pub(crate) async fn rotate(ctx: &Ctx<'_>, raw: &str, form: &Form) -> Response<Full<Bytes>> {
    let name = portcullis_admin::ops::decisions::percent_decode(raw, false).unwrap_or_default();
    let secret = form.raw("secret").unwrap_or("");
    match ops::rotate_secret(ctx.cp, ctx.op(), &name, secret).await {
        Ok(_) => web::see_other(&view::url(
            "/ui/credentials",
            &[("done", "rotated"), ("name", &name)],
        )),
        Err(e) => ctx.error_page("credentials", &e),
    }
}

/// `POST /ui/credentials/{name}/delete`.
pub(crate) async fn delete(ctx: &Ctx<'_>, raw: &str) -> Response<Full<Bytes>> {
    let name = portcullis_admin::ops::decisions::percent_decode(raw, false).unwrap_or_default();
    match ops::delete(ctx.cp, ctx.op(), &name).await {
        Ok(()) => web::see_other(&view::url(
            "/ui/credentials",
            &[("done", "deleted"), ("name", &name)],
        )),
        Err(e) => ctx.error_page("credentials", &e),
    }
}
