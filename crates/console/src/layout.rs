//! What every page shares: the context of a signed-in request, the frame around each page
//! (navigation, who is signed in, the overview strip), and the error page.

use crate::assets;
use crate::session::Session;
use crate::view;
use crate::web;
use crate::Console;
use askama::Template;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::{ControlPlane, Operator, PolicyApi};
use portcullis_core::ApiError;
use serde_json::Value;
use tracing::warn;

/// A signed-in request: who, with what, at what time.
pub(crate) struct Ctx<'a> {
    pub(crate) console: &'a Console,
    pub(crate) cp: &'a ControlPlane,
    pub(crate) policy: Option<&'a PolicyApi>,
    pub(crate) session: Session,
    pub(crate) now_ms: i64,
}

impl Ctx<'_> {
    pub(crate) fn op(&self) -> &Operator {
        &self.session.operator
    }

    /// The frame of a page under navigation item `nav`.
    pub(crate) fn layout(&self, nav: &'static str, title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            nav,
            css: assets::url("console"),
            js: assets::url("htmx"),
            license: assets::url("htmx-license"),
            subject: self.session.subject.clone(),
            tenant: self.op().tenant.clone(),
            role: self.op().role.as_str(),
            can_write: self.op().can_write(),
            csrf: self.session.csrf.clone(),
            overview: self.overview(),
            flash: None,
            error: None,
        }
    }

    fn overview(&self) -> OverviewView {
        let o = &self.console.overview;
        let (policy, policy_ok) = match self.policy {
            Some(p) => {
                let st = p.engine().reload_status();
                let text = if st.ok {
                    format!("v{} · {} policies", st.version, st.policies)
                } else {
                    format!("v{} · {} errors", st.version, st.errors.len())
                };
                (text, st.ok)
            }
            None => ("off".to_owned(), false),
        };
        let agents = self
            .cp
            .registry()
            .snapshot()
            .agents()
            .iter()
            .filter(|a| a.tenant == self.op().tenant && a.parent.is_none())
            .count();
        let (audit, audit_ok) = match &o.audit {
            Some((m, sinks)) => {
                let mut ok = true;
                let parts: Vec<String> = sinks
                    .iter()
                    .map(|k| {
                        let failed = m.failed(*k) + m.dropped(*k);
                        ok &= m.dropped(*k) == 0;
                        if failed == 0 {
                            format!("{} ok", k.as_str())
                        } else {
                            format!("{} {} failed", k.as_str(), view::thousands(failed))
                        }
                    })
                    .collect();
                (
                    format!("{} · queue {}", parts.join(", "), m.queue_depth()),
                    ok,
                )
            }
            None => ("not reported".to_owned(), true),
        };
        OverviewView {
            version: o.version.clone(),
            proxy: o.proxy.to_string(),
            admin: o.admin.to_string(),
            store: o.store.clone(),
            intercept: o.intercept.clone(),
            policy,
            policy_ok,
            agents: agents.to_string(),
            audit,
            audit_ok,
        }
    }

    /// The error page for a failed operation (status and detail of `e`; field errors
    /// listed).
    pub(crate) fn error_page(&self, nav: &'static str, e: &ApiError) -> Response<Full<Bytes>> {
        let mut layout = self.layout(nav, "Not done");
        layout.error = Some(ErrorView::of(e));
        render(
            StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &ErrorPage { layout },
        )
    }
}

/// The frame every page is drawn in.
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) nav: &'static str,
    pub(crate) css: String,
    pub(crate) js: String,
    pub(crate) license: String,
    pub(crate) subject: String,
    pub(crate) tenant: String,
    pub(crate) role: &'static str,
    pub(crate) can_write: bool,
    pub(crate) csrf: String,
    pub(crate) overview: OverviewView,
    pub(crate) flash: Option<String>,
    pub(crate) error: Option<ErrorView>,
}

/// The overview strip: what the startup banner says.
pub(crate) struct OverviewView {
    pub(crate) version: String,
    pub(crate) proxy: String,
    pub(crate) admin: String,
    pub(crate) store: String,
    pub(crate) intercept: String,
    pub(crate) policy: String,
    pub(crate) policy_ok: bool,
    pub(crate) agents: String,
    pub(crate) audit: String,
    pub(crate) audit_ok: bool,
}

/// An operation's refusal, as shown.
pub(crate) struct ErrorView {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) detail: String,
    pub(crate) fields: Vec<(String, String)>,
}

impl ErrorView {
    pub(crate) fn of(e: &ApiError) -> Self {
        let fields = e
            .extra
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            view::s(f, "field").to_owned(),
                            view::s(f, "reason").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status: e.status_code(),
            code: e.code.to_string(),
            detail: e.detail.to_string(),
            fields,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
}

/// Renders `t` as a page with `status`; a rendering failure is a plain 500.
pub(crate) fn render(status: StatusCode, t: &impl Template) -> Response<Full<Bytes>> {
    match t.render() {
        Ok(html) => web::page(status, html),
        Err(e) => {
            warn!(error = %e, "console page rendering failed");
            web::text(StatusCode::INTERNAL_SERVER_ERROR, "page rendering failed\n")
        }
    }
}
