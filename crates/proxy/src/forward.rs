//! Forwarding HTTP requests — absolute-form, and inside intercepted tunnels — after the one
//! admission sequence: the upstream request is prepared (hop-by-hop and gateway headers
//! stripped, the credential injected, the canonical path), sent through the pooled client, and
//! the response streamed back frame by frame while the usage tap reads a copy; WebSocket
//! upgrades are relayed and spliced.

use crate::admission::{
    admit, allowed_upgrade, default_port, is_allowed_upgrade, Admitted, Entry, Tunnel,
};
use crate::body::{BoxError, Metered, ProxyBody};
use crate::exchange::{Exchange, Outcome};
use crate::headers::{strip_hop_by_hop, strip_portcullis_headers};
use crate::io::{totals, Tally};
use crate::refusal::{Refusal, Upstream};
use crate::respond::set_rate_headers;
use crate::state::Shared;
use crate::tap::{body_outcome, SharedTap};
use crate::upstream::find_dial_error;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portcullis_core::{ErrorEnvelope, RequestKind};
use portcullis_limits::Permit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::debug;

/// Serves one absolute-form request (`GET http://host/path`).
pub(crate) async fn absolute(
    shared: &Arc<Shared>,
    client_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    serve(shared, client_addr, Entry::Forward, req).await
}

/// Serves one request inside an intercepted tunnel.
pub(crate) async fn inner(
    shared: &Arc<Shared>,
    client_addr: SocketAddr,
    tunnel: &Tunnel,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    serve(shared, client_addr, Entry::Inner(tunnel), req).await
}

async fn serve(
    shared: &Arc<Shared>,
    client_addr: SocketAddr,
    entry: Entry<'_>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let mut ex = Exchange::new(
        shared,
        RequestKind::Http,
        req.method().as_str(),
        client_addr,
    );
    note_request(&mut ex, &req, entry);
    ex.continue_trace(req.headers());
    let upgrade = allowed_upgrade(req.headers(), req.version(), &shared.cfg.allowed_upgrades);
    let on_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let admitted = match admit(
        shared,
        &mut ex,
        entry,
        &parts,
        Some(body),
        upgrade.is_some(),
        client_addr,
    )
    .await
    {
        Ok(a) => a,
        Err(denied) => return ex.answer(denied),
    };
    let envelope = admitted.llm.as_ref().map(|c| c.error_envelope());
    Outbound::new(shared, &mut ex, entry, parts, upgrade, admitted)
        .send(ex, on_upgrade, envelope)
        .await
}

/// What the exchange knows from the request line alone, before admission (so a refusal of a
/// malformed request still records where it was going).
fn note_request(ex: &mut Exchange, req: &Request<Incoming>, entry: Entry<'_>) {
    ex.set_scheme(entry.scheme());
    ex.set_path(req.uri().path());
    match entry {
        Entry::Inner(t) => {
            // Inside a tunnel the agent is known from the CONNECT: every refusal is
            // attributed to it.
            ex.set_principal(&t.principal);
            ex.set_subagent(t.subagent.as_deref());
            if t.scheme == "https" {
                ex.set_tls_intercepted();
            }
            ex.set_host_as_sent(req.uri().host(), req.uri().port_u16());
        }
        Entry::Forward | Entry::Connect => {
            ex.set_host_as_sent(req.uri().host(), Some(req.uri().port_u16().unwrap_or(80)));
        }
    }
}

/// An admitted request on its way upstream.
struct Outbound {
    shared: Arc<Shared>,
    request: Request<ProxyBody>,
    bytes_in: Arc<AtomicU64>,
    admitted: AdmittedRest,
}

/// What forwarding keeps of the admission once the request is built.
struct AdmittedRest {
    llm: Option<portcullis_llm::Classification>,
    mcp: Option<crate::mcp_answer::McpAdmitted>,
    permit: Option<Permit>,
    timed_out: Arc<std::sync::atomic::AtomicBool>,
    upgrade: bool,
}

impl Outbound {
    /// The upstream request: hop-by-hop and gateway headers stripped, only allowed upgrade
    /// protocols offered, the credential injected, `Host` and the URI rebuilt with the
    /// canonical path and the query as sent.
    fn new(
        shared: &Arc<Shared>,
        ex: &mut Exchange,
        entry: Entry<'_>,
        mut parts: http::request::Parts,
        upgrade: Option<HeaderValue>,
        a: Admitted,
    ) -> Self {
        strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        strip_portcullis_headers(&mut parts.headers);
        if let Some(tp) = ex.upstream_traceparent() {
            parts.headers.insert(crate::trace::TRACEPARENT, tp);
        }
        if let Some(v) = &upgrade {
            parts.headers.insert(http::header::UPGRADE, v.clone());
        }
        if let Some(inj) = &a.injection {
            if inj.apply(&mut parts.headers) {
                shared
                    .metrics
                    .credential_injections
                    .with_label_values(&[&inj.name])
                    .inc();
                ex.set_credential(&inj.name);
            }
        }
        let scheme = entry.scheme();
        let authority = a.target.to_string();
        let host = if a.target.port == default_port(scheme) {
            a.target.host.to_string()
        } else {
            authority.clone()
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert(HOST, v);
        }
        parts.uri = upstream_uri(&parts.uri, scheme, &authority, a.canonical.as_deref())
            .unwrap_or_else(|| parts.uri.clone());
        parts.version = Version::HTTP_11;
        let bytes_in = Arc::new(AtomicU64::new(0));
        let counter = bytes_in.clone();
        let body = a.body.unwrap_or_else(crate::body::empty);
        let body = Metered::new(
            body,
            Box::new(move |n, _| counter.store(n, Ordering::Relaxed)),
        )
        .boxed();
        Self {
            shared: shared.clone(),
            request: Request::from_parts(parts, body),
            bytes_in,
            admitted: AdmittedRest {
                llm: a.llm,
                mcp: a.mcp,
                permit: a.permit,
                timed_out: a.body_timed_out,
                upgrade: upgrade.is_some(),
            },
        }
    }

    /// Sends the request and answers with the upstream's response (or the refusal).
    async fn send(
        self,
        mut ex: Exchange,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
        envelope: Option<ErrorEnvelope>,
    ) -> Response<ProxyBody> {
        let Outbound {
            shared,
            request,
            bytes_in,
            admitted,
        } = self;
        let resp = match shared.client.request(request).await {
            Ok(r) => r,
            Err(e) => return refuse_upstream(&shared, ex, &e, admitted, envelope),
        };
        ex.set_ttfb();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Relayed only for an upgrade the client asked for, to a protocol it offered.
            let accepted = upgrade_accepted(&resp, &shared.cfg.allowed_upgrades);
            return match (on_upgrade, accepted && admitted.upgrade) {
                (Some(client), true) => switch_protocols(ex, resp, client, admitted.permit),
                _ => ex.refuse(Refusal::Upstream(Upstream::BadUpgrade), envelope),
            };
        }
        respond(ex, resp, bytes_in, admitted)
    }
}

/// The upstream request failed: give the token reservation back when nothing reached the
/// provider (the dial failed), and answer.
fn refuse_upstream(
    shared: &Shared,
    ex: Exchange,
    e: &hyper_util::client::legacy::Error,
    admitted: AdmittedRest,
    envelope: Option<ErrorEnvelope>,
) -> Response<ProxyBody> {
    if admitted.timed_out.load(Ordering::Acquire) {
        let r = crate::refusal::body_refusal(
            &crate::body::BodyReadTimeout(shared.cfg.body_read_timeout),
            shared.cfg.body_read_timeout,
        );
        return ex.refuse(r, envelope);
    }
    let dial = find_dial_error(e);
    if dial.is_some() {
        if let Some(p) = admitted.permit {
            p.settle(Some(0));
        }
    }
    let refusal = match dial {
        Some(d) => Refusal::from(d.clone()),
        None => {
            debug!(error = %e, "upstream request failed");
            Refusal::Upstream(Upstream::Protocol)
        }
    };
    ex.refuse(refusal, envelope)
}

/// Streams the upstream's response to the client: hop-by-hop and `x-portcullis-*` headers
/// stripped (an origin cannot speak for the gateway), the gateway's rate headers set, the
/// usage tap on a copy of classified LLM responses, and the exchange finished when the body
/// ends, fails or is abandoned.
fn respond(
    mut ex: Exchange,
    resp: Response<Incoming>,
    bytes_in: Arc<AtomicU64>,
    admitted: AdmittedRest,
) -> Response<ProxyBody> {
    let status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    strip_portcullis_headers(&mut parts.headers);
    let permit = admitted.permit;
    if let Some(rate) = permit.as_ref().and_then(|p| p.rate_info()) {
        set_rate_headers(
            &mut parts.headers,
            rate.limit_value,
            rate.remaining,
            rate.reset_unix,
        );
    }
    let tap = admitted.llm.as_ref().map(|c| {
        let h = |n| {
            parts
                .headers
                .get(n)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        SharedTap::new(c, h(CONTENT_ENCODING), h(CONTENT_TYPE))
    });
    let end_tap = tap.clone();
    let body: ProxyBody = body.map_err(BoxError::from).boxed();
    let (body, mcp_scan) = match &admitted.mcp {
        Some(m) => {
            let (b, scan) = m.wrap(&mut parts.headers, body);
            (b, Some(scan))
        }
        None => (body, None),
    };
    let end_scan = mcp_scan.clone();
    let body = Metered::new(
        body,
        Box::new(move |n, end| {
            if let Some(s) = end_scan {
                ex.set_mcp_outcomes(&s.finish().outcomes);
            }
            let tapped = end_tap.and_then(|t| t.finish());
            let terminal = tapped.as_ref().is_some_and(|t| t.terminal);
            let usage = tapped.map(|t| t.usage);
            if let Some(p) = permit {
                // The permit knows the reservation's price: it settles tokens and dollars.
                p.settle_usage(usage.as_ref());
            }
            let (error, _) = body_outcome(end, terminal);
            ex.finish(Outcome {
                status,
                error,
                bytes_in: bytes_in.load(Ordering::Relaxed),
                bytes_out: n,
                usage,
            });
        }),
    );
    let body = match (tap, mcp_scan) {
        (Some(t), _) => body.with_tap(Box::new(t)).boxed(),
        (None, Some(s)) => body.with_tap(Box::new(s)).boxed(),
        (None, None) => body.boxed(),
    };
    Response::from_parts(parts, body)
}

/// Relays a 101 to the client and splices the two upgraded connections; the exchange is
/// finished when the upgraded connection closes (holding its concurrency slot until then).
fn switch_protocols(
    ex: Exchange,
    mut resp: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    permit: Option<Permit>,
) -> Response<ProxyBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    strip_portcullis_headers(&mut parts.headers);
    tokio::spawn(async move {
        let _permit = permit;
        let (c, u) = tokio::join!(client_upgrade, upstream_upgrade);
        let outcome = match (c, u) {
            (Ok(c), Ok(u)) => {
                let (mut c, counts) = Tally::new(TokioIo::new(c));
                let mut u = TokioIo::new(u);
                let r = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                let (bytes_in, bytes_out) = totals(&counts);
                Outcome {
                    status: 101,
                    error: r.err().map(|_| "upgrade_io_error"),
                    bytes_in,
                    bytes_out,
                    usage: None,
                }
            }
            _ => Outcome {
                status: 101,
                error: Some("upgrade_failed"),
                ..Outcome::default()
            },
        };
        ex.finish(outcome);
    });
    Response::from_parts(parts, crate::body::empty())
}

/// The upstream URI: the scheme and authority of the target, the canonical path when it
/// differs from the request's, the query as sent.
fn upstream_uri(uri: &Uri, scheme: &str, authority: &str, canonical: Option<&str>) -> Option<Uri> {
    let pq = match (canonical, uri.query()) {
        (None, _) => std::borrow::Cow::Borrowed(uri.path_and_query().map_or("/", |p| p.as_str())),
        (Some(p), None) => std::borrow::Cow::Borrowed(p),
        (Some(p), Some(q)) => std::borrow::Cow::Owned(format!("{p}?{q}")),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq.as_ref())
        .build()
        .ok()
}

/// Whether a 101 switches to an allowed protocol.
fn upgrade_accepted<B>(resp: &Response<B>, allowed: &[String]) -> bool {
    resp.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').all(|t| is_allowed_upgrade(t.trim(), allowed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_uri_carries_the_canonical_path_and_the_query_as_sent() {
        let uri: Uri = "http://h:8080//a/./b?q=%2e%2e&x=/../y".parse().unwrap();
        let got = upstream_uri(&uri, "http", "h:8080", Some("/a/b")).unwrap();
        assert_eq!(got, "http://h:8080/a/b?q=%2e%2e&x=/../y");
        let plain: Uri = "/v1/models".parse().unwrap();
        let got = upstream_uri(&plain, "https", "api.example.com", None).unwrap();
        assert_eq!(got, "https://api.example.com/v1/models");
    }

    #[test]
    fn a_101_must_name_an_allowed_protocol() {
        let allowed = vec!["websocket".to_owned()];
        let resp = |up: Option<&str>| {
            let mut b = Response::builder().status(101);
            if let Some(u) = up {
                b = b.header("upgrade", u);
            }
            b.body(()).unwrap()
        };
        assert!(upgrade_accepted(&resp(Some("websocket")), &allowed));
        assert!(upgrade_accepted(&resp(Some("WebSocket")), &allowed));
        assert!(!upgrade_accepted(&resp(Some("h2c")), &allowed));
        assert!(!upgrade_accepted(&resp(Some("websocket, h2c")), &allowed));
        assert!(!upgrade_accepted(&resp(None), &allowed));
    }
}
