//! What every request of a connection goes through, on the listener and inside intercepted
//! tunnels alike, around its routing: a head whose framing was ambiguous on the wire is
//! refused (and the connection closed); the connection's activity knows the request is in
//! flight until its response body ends; a CONNECT or `Upgrade` answer tells the framing
//! scanner whether the connection became a tunnel.

use crate::body::{Metered, ProxyBody};
use crate::conn::{Activity, InFlight};
use crate::exchange::Exchange;
use crate::refusal::{Malformed, Refusal};
use crate::state::Shared;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_core::{Principal, RequestKind};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves one request of a connection, `route` deciding what it is.
///
/// `agent`: who the connection is known to belong to already (an intercepted tunnel's
/// agent), so a refusal before authentication is still attributed.
pub(crate) async fn request<F, Fut>(
    shared: &Arc<Shared>,
    activity: &Arc<Activity>,
    client_addr: SocketAddr,
    agent: Option<&Principal>,
    req: Request<Incoming>,
    route: F,
) -> Response<ProxyBody>
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    let in_flight = InFlight::start(activity.clone());
    let is_connect = req.method() == Method::CONNECT;
    let upgrade_asked = is_connect || req.headers().contains_key(http::header::UPGRADE);
    let resp = match activity.take_framing_flaw(in_flight.number()) {
        Some(flaw) => {
            let mut ex = Exchange::new(
                shared,
                RequestKind::Http,
                req.method().as_str(),
                client_addr,
            );
            ex.set_path(req.uri().path());
            if let Some(p) = agent {
                ex.set_principal(p);
            }
            ex.refuse(Refusal::Malformed(Malformed::Framing(flaw)), None)
        }
        None => route(req).await,
    };
    if upgrade_asked {
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (is_connect && resp.status().is_success());
        activity.upgrade_answered(upgraded);
    }
    // The request stays in flight until its response body is done.
    let (parts, body) = resp.into_parts();
    let body = Metered::new(body, Box::new(move |_, _| drop(in_flight))).boxed();
    Response::from_parts(parts, body)
}
