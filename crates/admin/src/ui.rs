//! The hook through which the admin listener serves the operator console: the console
//! lives in its own crate (which builds on [`crate::ops`]), so the listener only knows
//! this trait and hands it every `/ui` request.

use crate::Admin;
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// What [`Ui::handle`] returns.
pub type UiFuture<'a> = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>>;

/// A web interface served under `/ui` on the admin listener.
pub trait Ui: Send + Sync + 'static {
    /// Answers one request whose path is `/ui` or starts with `/ui/`, from the client at
    /// `peer`, with `admin`'s control plane and policy API.
    fn handle<'a>(
        &'a self,
        admin: &'a Admin,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> UiFuture<'a>;
}

/// `/` → 303 `/ui/`.
pub(crate) fn redirect_to_ui() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/ui/"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
