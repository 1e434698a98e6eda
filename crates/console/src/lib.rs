//! The Portcullis operator console: server-rendered pages served by the admin listener
//! under `/ui/` (the binary hands it to [`portcullis_admin::Admin::set_ui`]).
//!
//! - **Stack**: askama templates (checked at compile time, HTML-escaped by default), htmx
//!   (vendored, for live updates only), charts drawn as SVG on the server, one style
//!   sheet. Every asset is embedded and served with a content hash in its name; nothing is
//!   fetched at run time and the build needs no Node toolchain.
//! - **No logic of its own**: every read and change calls [`portcullis_admin::ops`], the
//!   functions behind the JSON API, which check the role and the tenant themselves.
//! - **Sessions** live in the store (every gateway on a shared store knows them): a random
//!   256-bit id in an `HttpOnly; SameSite=Strict; Path=/ui` cookie (`Secure` with
//!   `console.secure_cookie`), only its SHA-256 stored, bounded lifetime and idle timeout.
//!   Sign-in takes an operator API key (checked, never kept) or, from configured source
//!   addresses only, an authenticating proxy's headers.
//! - **CSRF**: every state-changing request carries the session's token (hidden field or
//!   `X-CSRF-Token`) and, from a browser, a same-origin `Origin`/`Sec-Fetch-Site`.
//! - **Headers**: a strict Content-Security-Policy (no inline script or style),
//!   `nosniff`, `no-referrer`, `frame-ancestors 'none'`, `no-store` on every page.
#![warn(missing_docs)]

mod assets;
mod chart;
mod layout;
mod pages;
mod session;
mod settings;
mod view;
mod web;

pub use settings::{ConsoleSettings, Overview, TrustedHeaders};

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, SET_COOKIE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use hyper::body::Incoming;
use layout::Ctx;
use portcullis_admin::ops::agents::Action;
use portcullis_admin::{Admin, Ui, UiFuture};
use portcullis_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, warn};
use web::Form;

/// How often expired and idle sessions are deleted from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// The console. Build it once with [`Console::new`] and give it to the admin listener.
#[derive(Debug)]
pub struct Console {
    settings: ConsoleSettings,
    overview: Overview,
}

/// A console page or action, recognised from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Home,
    Live,
    Request(&'a str),
    Login,
    Logout,
    Agents,
    Agent(&'a str),
    AgentConfig(&'a str),
    AgentAction(&'a str, Action),
    Policies,
    Policy(&'a str),
    PolicyMode(&'a str),
    Simulate,
    Usage,
    Credentials,
    CredentialRotate(&'a str),
    CredentialDelete(&'a str),
}

impl<'a> Route<'a> {
    /// Parses a path under `/ui/` (without the prefix); `None` is 404.
    fn parse(rest: &'a str) -> Option<Self> {
        let parts: Vec<&str> = rest.split('/').collect();
        let route = match parts.as_slice() {
            [""] => Route::Home,
            ["requests", "live"] => Route::Live,
            ["requests", id] if !id.is_empty() => Route::Request(id),
            ["login"] => Route::Login,
            ["logout"] => Route::Logout,
            ["agents"] => Route::Agents,
            ["agents", id] if !id.is_empty() => Route::Agent(id),
            ["agents", id, "config"] if !id.is_empty() => Route::AgentConfig(id),
            ["agents", id, action] if !id.is_empty() => {
                Route::AgentAction(id, Action::parse(action)?)
            }
            ["policies"] => Route::Policies,
            ["policies", name] if !name.is_empty() => Route::Policy(name),
            ["policies", name, "mode"] if !name.is_empty() => Route::PolicyMode(name),
            ["simulate"] => Route::Simulate,
            ["usage"] => Route::Usage,
            ["credentials"] => Route::Credentials,
            ["credentials", name, "rotate"] if !name.is_empty() => Route::CredentialRotate(name),
            ["credentials", name, "delete"] if !name.is_empty() => Route::CredentialDelete(name),
            _ => return None,
        };
        Some(route)
    }

    /// The methods the route answers.
    fn allows(self, m: &Method) -> bool {
        let get = *m == Method::GET || *m == Method::HEAD;
        match self {
            Route::Login | Route::Agents | Route::Simulate | Route::Credentials => {
                get || *m == Method::POST
            }
            Route::Home
            | Route::Live
            | Route::Request(_)
            | Route::Agent(_)
            | Route::Policies
            | Route::Policy(_)
            | Route::Usage => get,
            Route::Logout
            | Route::AgentConfig(_)
            | Route::AgentAction(..)
            | Route::PolicyMode(_)
            | Route::CredentialRotate(_)
            | Route::CredentialDelete(_) => *m == Method::POST,
        }
    }
}

impl Console {
    /// A console with `settings`, showing `overview` in its strip.
    pub fn new(settings: ConsoleSettings, overview: Overview) -> Arc<Self> {
        Arc::new(Self { settings, overview })
    }

    /// Deletes expired and idle sessions from `store` every few minutes until `shutdown`.
    pub async fn sweep_sessions(&self, store: Store, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            }
            match store
                .prune_console_sessions(now_secs(), self.settings.idle_timeout.as_secs())
                .await
            {
                Ok(0) => {}
                Ok(n) => debug!(sessions = n, "expired console sessions deleted"),
                Err(e) => warn!(error = %e, "console session sweep failed"),
            }
        }
    }

    /// Answers one request under `/ui` from `peer`, with `admin`'s control plane and
    /// policy API. Any body type works (the listener's, or a test's).
    pub async fn handle<B>(
        &self,
        admin: &Admin,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        if path == "/ui" {
            return web::see_other("/ui/");
        }
        let Some(rest) = path.strip_prefix("/ui/") else {
            return web::text(StatusCode::NOT_FOUND, "not found\n");
        };
        if let Some(name) = rest.strip_prefix("assets/") {
            return asset(name, &parts.method, &parts.headers);
        }
        let Some(cp) = admin.control_plane() else {
            return web::text(
                StatusCode::NOT_FOUND,
                "the console needs the operator API (a store), which this gateway runs without\n",
            );
        };
        let Some(route) = Route::parse(rest) else {
            return web::text(StatusCode::NOT_FOUND, "no such page\n");
        };
        if !route.allows(&parts.method) {
            let mut r = web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            return r;
        }
        let post = parts.method == Method::POST;
        let form = if post {
            if !web::same_origin(&parts.headers) {
                return pages::login::refused_origin();
            }
            match web::read_body(&parts.headers, body).await {
                Ok(b) => Form::parse(&b),
                Err(e) => return web::text(e.status(), e.message()),
            }
        } else {
            Form::default()
        };
        let query = Form::parse(parts.uri.query().unwrap_or("").as_bytes());
        let now = cp.clock().unix_secs();

        let mut session =
            match session::current(cp.store(), &parts.headers, &self.settings, now).await {
                Ok(s) => s,
                Err(e) => return pages::login::unavailable(&e),
            };
        let mut new_cookie = None;
        if let Some(t) = &self.settings.trusted_header {
            match session::asserted(t, &parts.headers, peer) {
                Ok(Some(a)) => {
                    let same = session.as_ref().is_some_and(|s| {
                        s.subject == a.subject
                            && s.operator.tenant == a.tenant
                            && s.operator.role == a.role
                    });
                    if !same {
                        if let Some(old) = &session {
                            let _ = session::sign_out(cp.store(), old).await;
                        }
                        match session::sign_in_asserted(cp.store(), &a, &self.settings, now, peer)
                            .await
                        {
                            Ok((id, s)) => {
                                new_cookie = Some(session::set_cookie(&id, &self.settings));
                                session = Some(s);
                            }
                            Err(e) => return pages::login::unavailable(&e),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => return pages::login::forbidden(&e),
            }
        }

        let mut resp = match (route, session) {
            (Route::Login, s) => {
                pages::login::handle(self, cp, s.as_ref(), post, &form, &query, now, peer).await
            }
            (_, None) if post => pages::login::signed_out(),
            (_, None) => {
                let here = match parts.uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                web::see_other(&view::url("/ui/login", &[("next", &here)]))
            }
            (route, Some(s)) => {
                if post {
                    let given = form.get("csrf").or_else(|| {
                        parts
                            .headers
                            .get("x-csrf-token")
                            .and_then(|v| v.to_str().ok())
                    });
                    if !session::csrf_ok(&s, given) {
                        warn!(operator = %s.operator.key_id, client = %peer, "console request refused: CSRF token missing or wrong");
                        return pages::login::refused_csrf();
                    }
                }
                let ctx = Ctx {
                    console: self,
                    cp,
                    policy: admin.policy(),
                    session: s,
                    now_ms: i64::try_from(now)
                        .unwrap_or(i64::MAX / 1000)
                        .saturating_mul(1000),
                };
                dispatch(&ctx, route, post, &form, &query).await
            }
        };
        if let Some(c) = new_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().append(SET_COOKIE, c);
        }
        resp
    }
}

async fn dispatch(
    ctx: &Ctx<'_>,
    route: Route<'_>,
    post: bool,
    form: &Form,
    query: &Form,
) -> Response<Full<Bytes>> {
    use pages::*;
    match route {
        Route::Home => requests::page(ctx, query).await,
        Route::Live => requests::live(ctx, query).await,
        Route::Request(id) => requests::detail(ctx, id).await,
        Route::Logout => login::sign_out(ctx).await,
        Route::Agents if post => agents::create(ctx, form).await,
        Route::Agents => agents::list(ctx, query).await,
        Route::Agent(id) => agents::detail(ctx, id, query).await,
        Route::AgentConfig(id) => agents::update(ctx, id, form).await,
        Route::AgentAction(id, action) => agents::action(ctx, id, action).await,
        Route::Policies => policies::page(ctx, query).await,
        Route::Policy(name) => policies::source(ctx, name),
        Route::PolicyMode(name) => policies::set_mode(ctx, name, form).await,
        Route::Simulate => simulate::page(ctx, post, form, query).await,
        Route::Usage => usage::page(ctx, query).await,
        Route::Credentials if post => credentials::create(ctx, form).await,
        Route::Credentials => credentials::page(ctx, query).await,
        Route::CredentialRotate(name) => credentials::rotate(ctx, name, form).await,
        Route::CredentialDelete(name) => credentials::delete(ctx, name).await,
        Route::Login => web::see_other("/ui/"),
    }
}

/// An embedded asset: cached for a year (its name changes with its content).
fn asset(name: &str, method: &Method, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    if *method != Method::GET && *method != Method::HEAD {
        return web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let Some(a) = assets::find(name) else {
        return web::text(StatusCode::NOT_FOUND, "no such asset\n");
    };
    let fresh = headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == a.etag.as_bytes());
    let mut r = Response::new(Full::new(if fresh {
        Bytes::new()
    } else {
        Bytes::from_static(a.body)
    }));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(ETAG, v);
    }
    web::secure(h);
    r
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ui for Console {
    fn handle<'a>(
        &'a self,
        admin: &'a Admin,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> UiFuture<'a> {
        Box::pin(Console::handle(self, admin, req, peer))
    }
}

#[cfg(test)]
mod tests;
