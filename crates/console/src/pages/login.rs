//! Signing in and out, and the answers given before a session exists.

use crate::assets;
use crate::layout::{render, Ctx};
use crate::session::{self, Session};
use crate::web::{self, Form};
use crate::Console;
use askama::Template;
use bytes::Bytes;
use http::header::{HeaderValue, SET_COOKIE};
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_admin::ControlPlane;
use portcullis_core::ApiError;
use std::net::SocketAddr;
use tracing::warn;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    css: String,
    message: Option<String>,
    next: String,
    header_sign_in: bool,
}

fn login_page(
    status: StatusCode,
    message: Option<&str>,
    next: &str,
    header: bool,
) -> Response<Full<Bytes>> {
    render(
        status,
        &LoginPage {
            css: assets::url("console"),
            message: message.map(str::to_owned),
            next: next.to_owned(),
            header_sign_in: header,
        },
    )
}

/// Where to go after signing in: a console path only (never another site, never a
/// scheme), else the home page.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui/login")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.bytes().any(|b| b.is_ascii_control()) =>
        {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// `GET|POST /ui/login`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handle(
    console: &Console,
    cp: &ControlPlane,
    current: Option<&Session>,
    post: bool,
    form: &Form,
    query: &Form,
    now: u64,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let header = console.settings.trusted_header.is_some();
    if !post {
        let next = safe_next(query.get("next"));
        if current.is_some() {
            return web::see_other(&next);
        }
        return login_page(StatusCode::OK, None, &next, header);
    }
    let next = safe_next(form.get("next"));
    let Some(key) = form.get("key") else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("Enter an operator API key."),
            &next,
            header,
        );
    };
    match session::sign_in_with_key(cp, key, &console.settings, now, peer).await {
        Ok((id, _)) => {
            if let Some(old) = current {
                let _ = session::sign_out(cp.store(), old).await;
            }
            let mut r = web::see_other(&next);
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, &console.settings)) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
        Err(e) if e.status_code() == 401 => {
            warn!(client = %peer, "console sign-in refused: unknown or revoked key");
            login_page(
                StatusCode::UNAUTHORIZED,
                Some("That key was not accepted: it is unknown or revoked."),
                &next,
                header,
            )
        }
        Err(e) => unavailable(&e),
    }
}

/// `POST /ui/logout`: ends the session everywhere (it is deleted from the store).
pub(crate) async fn sign_out(ctx: &Ctx<'_>) -> Response<Full<Bytes>> {
    if let Err(e) = session::sign_out(ctx.cp.store(), &ctx.session).await {
        return ctx.error_page("requests", &e);
    }
    let mut r = web::see_other("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(&ctx.console.settings)) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// A change requested without a session.
pub(crate) fn signed_out() -> Response<Full<Bytes>> {
    login_page(
        StatusCode::UNAUTHORIZED,
        Some("Your session has ended. Sign in again; nothing was changed."),
        "/ui/",
        false,
    )
}

/// A change requested from another site (Origin or Sec-Fetch-Site).
pub(crate) fn refused_origin() -> Response<Full<Bytes>> {
    web::text(
        StatusCode::FORBIDDEN,
        "refused: this form was not sent from the console itself (cross-site request); nothing was changed\n",
    )
}

/// A change without the session's CSRF token.
pub(crate) fn refused_csrf() -> Response<Full<Bytes>> {
    web::text(
        StatusCode::FORBIDDEN,
        "refused: the form's CSRF token is missing or wrong; reload the page and try again. Nothing was changed\n",
    )
}

/// The store failed while checking the session.
pub(crate) fn unavailable(e: &ApiError) -> Response<Full<Bytes>> {
    warn!(code = %e.code, "console unavailable");
    web::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the console cannot reach the store right now; try again\n",
    )
}

/// A trusted proxy named a user whose groups give no access.
pub(crate) fn forbidden(e: &ApiError) -> Response<Full<Bytes>> {
    login_page(StatusCode::FORBIDDEN, Some(&e.detail), "/ui/", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/ui/agents?x=1")), "/ui/agents?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/ui/\\evil",
            "javascript:alert(1)",
            "/ui/login?next=/x",
            "/other",
            "/ui/\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }
}
