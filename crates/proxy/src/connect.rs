//! CONNECT: decide before answering — the admission sequence (authenticate, port, SSRF guard
//! for literals, policy, audit admission), then resolve, check and dial — and only then 200;
//! the tunnel that follows is intercepted or spliced (`tunnel.rs`).

use crate::admission::{admit, Entry, Tunnel};
use crate::body::{empty, ProxyBody};
use crate::conn::ConnCtx;
use crate::dial::dial;
use crate::exchange::Exchange;
use crate::refusal::Refusal;
use crate::state::Shared;
use http::{Request, Response};
use hyper::body::Incoming;
use portcullis_core::RequestKind;
use std::sync::Arc;

/// Handles one CONNECT request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut ex = Exchange::new(shared, RequestKind::Connect, "CONNECT", ctx.client_addr);
    ex.set_scheme("https");
    ex.continue_trace(req.headers());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let entry = Entry::Connect;
    let admitted = match admit(shared, &mut ex, entry, &parts, None, false, ctx.client_addr).await {
        Ok(a) => a,
        Err(denied) => return ex.answer(denied),
    };
    let upstream = match dial(&admitted.target, &shared.guard, shared.cfg.connect_timeout).await {
        Ok((s, _)) => s,
        Err(e) => return ex.refuse(Refusal::from(e), None),
    };
    ex.set_ttfb();
    let intercepted = shared.intercepts(&admitted.target.host_str());
    let tunnel = Tunnel {
        target: admitted.target,
        scheme: "https",
        principal: admitted.principal,
        subagent: admitted.subagent,
    };
    tokio::spawn(crate::tunnel::after_connect(
        shared.clone(),
        ctx,
        ex.into_tunnel(),
        on_upgrade,
        upstream,
        tunnel,
        intercepted,
    ));
    Response::new(empty())
}
