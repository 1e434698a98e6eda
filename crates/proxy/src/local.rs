//! Origin-form requests addressed to the gateway itself on the proxy port: `/healthz`, and the
//! endpoints of the [`LocalService`](crate::phases::LocalService) (the token endpoint and the
//! public keys). An audited endpoint's request is an exchange of its own, recorded once.

use crate::body::{full, ProxyBody};
use crate::exchange::{Exchange, Outcome};
use crate::phases::{LocalAudit, LocalRequest, LocalResponse, LocalRoute, MAX_LOCAL_BODY};
use crate::refusal::{Malformed, Refusal};
use crate::state::Shared;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_core::{RequestKind, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves an origin-form request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if let (&Method::GET | &Method::HEAD, "/healthz") = (req.method(), req.uri().path()) {
        return json(StatusCode::OK, &[], &serde_json::json!({"status": "ok"}));
    }
    let service = shared.pipeline.local.as_ref();
    let route = service.map_or(LocalRoute::NotServed, |s| {
        s.route(req.method(), req.uri().path())
    });
    let mut ex = match route {
        LocalRoute::Audited(kind) => Some(Exchange::new(
            shared,
            kind,
            req.method().as_str(),
            client_addr,
        )),
        LocalRoute::NotServed => Some(Exchange::new(
            shared,
            RequestKind::Http,
            req.method().as_str(),
            client_addr,
        )),
        LocalRoute::Unaudited => None,
    };
    if let Some(ex) = ex.as_mut() {
        ex.set_scheme("http");
        ex.set_path(req.uri().path());
    }
    let Some(service) = service.filter(|_| route != LocalRoute::NotServed) else {
        return refuse(ex, Refusal::NotFound);
    };
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_LOCAL_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return refuse(ex, Malformed::LocalBodyTooLarge(MAX_LOCAL_BODY).into()),
    };
    let bytes_in = body.len() as u64;
    let (resp, audit) = service.handle(LocalRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
        client_addr,
    });
    if let Some(ex) = ex {
        record(ex, &resp, audit, bytes_in);
    }
    json(resp.status, &resp.headers, &resp.body)
}

fn refuse(ex: Option<Exchange>, refusal: Refusal) -> Response<ProxyBody> {
    match ex {
        Some(ex) => ex.refuse(refusal, None),
        None => crate::respond::refusal_response(&refusal, None),
    }
}

/// Records an audited endpoint's exchange with what the endpoint said of it.
fn record(mut ex: Exchange, resp: &LocalResponse, audit: LocalAudit, bytes_in: u64) {
    if let Some(p) = &audit.principal {
        ex.set_principal(p);
    }
    let decided = audit.decision.is_some();
    if let Some(d) = audit.decision {
        ex.set_decision(d);
    }
    let mut outcome = Outcome {
        status: resp.status.as_u16(),
        error: None,
        bytes_in,
        bytes_out: 0,
        usage: None,
    };
    match audit.refused {
        None => ex.finish(outcome),
        Some(r) => {
            outcome.error = Some(r.code);
            let verdict = if r.denied || decided {
                Verdict::Deny
            } else {
                Verdict::Error
            };
            ex.finish_as(outcome, verdict);
        }
    }
}

fn json(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: &serde_json::Value,
) -> Response<ProxyBody> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*k, v);
        }
    }
    r
}
