//! Absolute-form forwarding (`GET http://host:port/path`): every method, bodies
//! streamed both ways, WebSocket upgrades relayed and spliced.

use crate::body::{
    full, is_body_read_timeout, BodyEnd, BodyReadTimeout, FrameTap, Metered, ProxyBody, ReadTimeout,
};
use crate::conn::ConnCtx;
use crate::dial::check_literal;
use crate::headers::{check_request, strip_hop_by_hop, strip_portcullis_headers, wants_upgrade};
use crate::inspect::{read_prefix, rejoin, Prefix};
use crate::path::canonical_path;
use crate::pipeline::{RequestFacts, RequestKind};
use crate::record::Pending;
use crate::respond::set_rate_headers;
use crate::server::Shared;
use crate::target::{parse_host_port, Target, TargetError};
use crate::upstream::find_dial_error;
use http::header::CONTENT_TYPE;
use http::header::{HeaderValue, CONNECTION, HOST, PROXY_AUTHORIZATION};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use portcullis_core::{ApiError, ErrorSource, Principal, Status};
use portcullis_llm::{RequestHead, UsageTap};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tracing::debug;

/// Handles one absolute-form request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    ctx: &ConnCtx,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    process(shared, ctx.client_addr, req, None).await
}

/// The CONNECT a request arrived in, for requests inside an intercepted tunnel.
pub(crate) struct Tunnel {
    /// The CONNECT destination; every inner request must target it.
    pub(crate) target: Target,
    /// `https` (TLS intercepted) or `http` (plaintext inside CONNECT).
    pub(crate) scheme: &'static str,
    /// Who opened the tunnel (re-checked per inner request).
    pub(crate) principal: Principal,
    /// The sub-agent named on the CONNECT, if any.
    pub(crate) subagent: Option<String>,
}

/// The per-request pipeline (authenticate, classify, authorize, stub or block,
/// forward through the pooled client, meter, record), for absolute-form requests
/// (`tunnel` is `None`) and for requests inside an intercepted tunnel.
pub(crate) async fn process(
    shared: &Arc<Shared>,
    client_addr: SocketAddr,
    mut req: Request<Incoming>,
    tunnel: Option<&Tunnel>,
) -> Response<ProxyBody> {
    let mut pending = Pending::from_request(RequestKind::Http, &req, client_addr);
    let scheme = tunnel.map_or("http", |t| t.scheme);
    pending.set_scheme(scheme);
    // Inside a tunnel the agent is known from the CONNECT: every refusal is attributed to it.
    if let Some(t) = tunnel {
        pending.set_tunnel(t);
    }
    let cfg = &shared.cfg;
    if let Err(e) = check_request(&req, cfg.max_header_bytes, cfg.max_headers) {
        // The framing of whatever follows on this connection cannot be trusted:
        // answer and close instead of parsing the rest as further requests.
        let mut resp = shared.refuse(pending, e);
        if req.version() < Version::HTTP_2 {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        return resp;
    }
    if tunnel.is_some() && req.method() == http::Method::CONNECT {
        return shared.refuse(
            pending,
            ApiError::bad_request(
                "bad_method",
                "CONNECT inside an intercepted tunnel is not supported",
            ),
        );
    }
    let target = match tunnel {
        None => absolute_target(req.uri()),
        Some(t) => inner_target(&req, t),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return shared.refuse(pending, e),
    };
    pending.set_target(&target);

    let auth = &shared.pipeline.authenticator;
    let principal = match tunnel {
        None => auth.authenticate(req.headers().get(PROXY_AUTHORIZATION), client_addr),
        Some(t) => auth.recheck(&t.principal),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => return shared.refuse(pending, e),
    };
    pending.set_principal(&principal);
    let subagent = match req.headers().get(crate::headers::SUBAGENT_HEADER) {
        None => tunnel.and_then(|t| t.subagent.clone()),
        Some(v) => match auth.subagent(&principal, v) {
            Ok(s) => Some(s),
            Err(e) => return shared.refuse(pending, e),
        },
    };
    pending.set_subagent(subagent.clone());

    if !cfg.allowed_ports.contains(&target.port) {
        return shared.refuse(pending, port_not_allowed(target.port));
    }
    if let Err(e) = check_literal(&target, &shared.guard) {
        return shared.refuse(pending, e.to_api_error());
    }
    // One canonical path for classification, policy, audit and the upstream request.
    let canonical = match canonical_path(req.uri().path(), cfg.allow_encoded_slashes) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(p)) => Some(p),
        Err(e) => return shared.refuse(pending, ApiError::bad_request(e.code(), e.to_string())),
    };
    if let Some(p) = &canonical {
        pending.set_path(p);
    }
    // The concurrency slot covers the whole exchange, body upload included.
    let admission = match &shared.pipeline.limits {
        None => None,
        Some(limits) => match limits.admit(&principal) {
            Ok(a) => Some(a),
            Err(r) => return shared.rate_limited(pending, &principal.agent_id, &r, None),
        },
    };

    let upgrade = allowed_upgrade(&req, &cfg.allowed_upgrades);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = canonical.as_deref().unwrap_or(parts.uri.path()).to_owned();
    let host = target.host_str();

    // Classify: a request to a known LLM provider has its JSON body (bounded) read
    // so policy sees model, stream, max_tokens and the body itself. A body that stalls is cut.
    let body_timed_out = Arc::new(AtomicBool::new(false));
    let mut body: ProxyBody = ReadTimeout::new(
        body.map_err(Into::into),
        cfg.body_read_timeout,
        body_timed_out.clone(),
    )
    .boxed();
    // Sizes the token reservation: the buffered body, else the declared length.
    let mut body_len = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let mut llm = None;
    let mut body_json = None;
    if let Some(classifier) = &shared.pipeline.classifier {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let head = RequestHead {
            method: parts.method.as_str(),
            host: &host,
            port: target.port,
            path: &path,
            content_type,
        };
        if let Some(mut c) = classifier.classify_head(&head) {
            if upgrade.is_none() && classifier.wants_body(&head) {
                let max = cfg.max_inspect_body;
                match read_prefix(body, max).await {
                    Ok(Prefix::Complete(bytes)) => {
                        body_len = bytes.len() as u64;
                        c.inspect_body(content_type, &bytes, max);
                        if c.body_inspected {
                            body_json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                        }
                        body = full(bytes);
                    }
                    Ok(Prefix::Partial(prefix, rest)) => {
                        body_len = body_len.max(prefix.len() as u64);
                        c.inspect_body(content_type, &prefix, max);
                        body = rejoin(prefix, rest);
                    }
                    Err(e) => return shared.refuse(pending, body_error(e.as_ref())),
                }
            }
            pending.set_llm(&c);
            llm = Some(c);
        }
    }
    let envelope = llm.as_ref().map(|c| c.error_envelope());
    // Only requests whose TLS the gateway terminates get credentials (never plaintext), and
    // only for the tunnel's own destination (inner_target checked it).
    let credential = match (&shared.pipeline.credentials, scheme) {
        (Some(c), "https") => c.bound(&principal, &host),
        _ => None,
    };

    let authz = shared.pipeline.authorizer.authorize(&RequestFacts {
        kind: RequestKind::Http,
        principal: &principal,
        subagent: subagent.as_deref(),
        method: &parts.method,
        scheme,
        host: &host,
        port: target.port,
        path: &path,
        query: parts.uri.query(),
        headers: &parts.headers,
        client_addr,
        llm: llm.as_ref(),
        body: body_json.as_ref(),
        usage: shared.usage(&principal),
        credential: credential.as_deref(),
    });
    let decision = Arc::new(authz.decision);
    pending.set_decision(decision.clone());
    if !decision.allowed {
        if authz.stub {
            if let Some(stub) = llm
                .as_ref()
                .and_then(|c| shared.pipeline.authorizer.stub(&decision, c))
            {
                return shared.stub(pending, &decision, stub);
            }
        }
        return shared.refuse_with(
            pending,
            shared.pipeline.authorizer.blocked(&decision),
            envelope,
        );
    }
    // The credential's secret is read now: a request is never forwarded without the
    // credential policy was told about.
    let injection = match (&credential, &shared.pipeline.credentials) {
        (Some(name), Some(injector)) => match injector.injection(name) {
            Ok(i) => Some(i),
            Err(e) => return shared.refuse_with(pending, e, envelope),
        },
        _ => None,
    };
    // A fail-closed audit trail that cannot take the record refuses before forwarding.
    if let Err(e) = shared.pipeline.recorder.admit().await {
        return shared.refuse_with(pending, e, envelope);
    }
    // Rate limits and token budgets: the permit is held until the response ends.
    let permit = match (&shared.pipeline.limits, admission) {
        (Some(limits), Some(admission)) => {
            match limits.acquire(&principal, llm.as_ref(), body_len, admission) {
                Ok(p) => Some(p),
                Err(r) => return shared.rate_limited(pending, &principal.agent_id, &r, envelope),
            }
        }
        _ => None,
    };

    strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    if let Some(v) = upgrade {
        // Only the allowed protocols are offered upstream.
        parts.headers.insert(http::header::UPGRADE, v);
    }
    strip_portcullis_headers(&mut parts.headers);
    if let Some(inj) = injection {
        if inj.apply(&mut parts.headers) {
            shared
                .metrics
                .credential_injections
                .with_label_values(&[&inj.name])
                .inc();
            pending.set_credential(inj.name);
        }
    }
    let authority = target.to_string();
    let host_header = if target.port == default_port(scheme) {
        target.host.to_string()
    } else {
        authority.clone()
    };
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        parts.headers.insert(HOST, v);
    }
    let pq = match (&canonical, parts.uri.query()) {
        (None, _) => Cow::Borrowed(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
        (Some(p), None) => Cow::Borrowed(p.as_str()),
        (Some(p), Some(q)) => Cow::Owned(format!("{p}?{q}")),
    };
    parts.uri = match Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(pq.as_ref())
        .build()
    {
        Ok(u) => u,
        Err(_) => {
            return shared.refuse(
                pending,
                ApiError::bad_request("bad_target", "invalid request target"),
            )
        }
    };
    parts.version = Version::HTTP_11;

    let bytes_in = Arc::new(AtomicU64::new(0));
    let counter = bytes_in.clone();
    let body = Metered::new(
        body,
        Box::new(move |n, _| counter.store(n, Ordering::Relaxed)),
    )
    .boxed();

    let resp = match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // Nothing reached the provider when the dial failed: give the reservation back.
            // Other failures may come after it started working: keep it.
            if find_dial_error(&e).is_some() {
                if let Some(p) = permit {
                    p.settle(Some(0));
                }
            }
            let err = if body_timed_out.load(Ordering::Acquire) {
                body_error(&BodyReadTimeout(cfg.body_read_timeout))
            } else {
                upstream_error(shared, &e)
            };
            return shared.refuse_with(pending, err, envelope);
        }
    };
    pending.set_ttfb();

    let mut resp = resp;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Relayed only for an upgrade the client asked for, to a protocol it offered.
        return match (
            client_upgrade,
            upgrade_accepted(&resp, &cfg.allowed_upgrades),
        ) {
            (Some(client_upgrade), true) => {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                switch_protocols(
                    shared,
                    pending,
                    resp,
                    client_upgrade,
                    upstream_upgrade,
                    permit,
                )
            }
            _ => shared.refuse_with(pending, bad_upgrade(), envelope),
        };
    }

    let status = resp.status().as_u16();
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // Nothing from an origin may speak for the gateway.
    strip_portcullis_headers(&mut parts.headers);
    if let Some(rate) = permit.as_ref().and_then(|p| p.rate_info()) {
        set_rate_headers(
            &mut parts.headers,
            rate.limit_value,
            rate.remaining,
            rate.reset_unix,
        );
    }
    // The usage tap parses a copy of the frames of classified LLM responses.
    let tap = llm.as_ref().map(|c| {
        let h = |n| {
            parts
                .headers
                .get(n)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        SharedTap(Arc::new(std::sync::Mutex::new(Some(UsageTap::new(
            c.format,
            c.api,
            h(http::header::CONTENT_ENCODING),
            h(CONTENT_TYPE),
        )))))
    });
    let finish_tap = tap.clone();
    let shared2 = shared.clone();
    let body = Metered::new(
        body,
        Box::new(move |n, end| {
            let mut pending = pending;
            let tapped = finish_tap.and_then(|t| t.finish());
            let terminal = tapped.as_ref().is_some_and(|t| t.terminal);
            let usage = tapped.map(|t| t.usage);
            if let Some(p) = permit {
                p.settle(settled_tokens(usage.as_ref()));
            }
            pending.set_usage(usage);
            let (error, completed) = body_outcome(end, terminal);
            pending.finish(
                &shared2,
                status,
                error.map(str::to_owned),
                bytes_in.load(Ordering::Relaxed),
                n,
                completed,
            );
        }),
    );
    let body = match tap {
        Some(t) => body.with_tap(Box::new(t)).boxed(),
        None => body.boxed(),
    };
    Response::from_parts(parts, body)
}

/// What a finished response settles its token reservation with: the provider's count when it
/// reported one for the whole response; otherwise `None`, which keeps the whole reservation
/// (usage missing, a truncated stream, a client abort: what the provider bills is unknown).
fn settled_tokens(usage: Option<&portcullis_llm::Usage>) -> Option<u64> {
    usage
        .filter(|u| u.source == portcullis_llm::UsageSource::Provider && !u.truncated)
        .map(|u| u.total_tokens)
}

/// How a response body's end is recorded: its error code and whether it completed.
///
/// A client that closes once it has the response's terminal event (an SDK stops reading at
/// `data: [DONE]`, `message_stop` or `response.completed`, and the origin has not closed yet)
/// got the whole response: complete, not `client_aborted`. `terminal_delivered` is the tap's
/// word, and the tap only sees a frame when [`Metered`] hands it on to the client's
/// connection (never ahead of it), so a marker it saw was sent to the client. An upstream
/// failure stays an error: the client's HTTP framing broke, whatever it had read.
fn body_outcome(end: BodyEnd, terminal_delivered: bool) -> (Option<&'static str>, bool) {
    match end {
        BodyEnd::Complete => (None, true),
        BodyEnd::Aborted if terminal_delivered => (None, true),
        BodyEnd::Aborted => (Some("client_aborted"), false),
        BodyEnd::Error => (Some("upstream_body_error"), false),
    }
}

/// The usage tap, shared between the frame copy and the end-of-body record.
#[derive(Clone)]
struct SharedTap(Arc<std::sync::Mutex<Option<UsageTap>>>);

/// What the tap saw of a response when its body ended.
struct TapEnd {
    usage: portcullis_llm::Usage,
    /// The response's terminal event was among the frames handed to the client.
    terminal: bool,
}

impl SharedTap {
    fn finish(&self) -> Option<TapEnd> {
        let tap = self.0.lock().ok()?.take()?;
        // Read before `finish`, which also parses a last event missing its blank line:
        // a client's SSE parser would not have dispatched that one.
        let terminal = tap.terminal_seen();
        Some(TapEnd {
            terminal,
            usage: tap.finish(),
        })
    }
}

impl FrameTap for SharedTap {
    fn feed(&mut self, data: &[u8]) {
        if let Ok(mut g) = self.0.lock() {
            if let Some(t) = g.as_mut() {
                t.feed(data);
            }
        }
    }
}

/// Relays a 101 to the client and splices the two upgraded connections.
fn switch_protocols(
    shared: &Arc<Shared>,
    pending: Pending,
    resp: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    upstream_upgrade: hyper::upgrade::OnUpgrade,
    permit: Option<portcullis_limits::Permit>,
) -> Response<ProxyBody> {
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    strip_portcullis_headers(&mut parts.headers);
    let shared = shared.clone();
    tokio::spawn(async move {
        // The upgraded connection holds its concurrency slot until it closes.
        let _permit = permit;
        let (c, u) = tokio::join!(client_upgrade, upstream_upgrade);
        match (c, u) {
            (Ok(c), Ok(u)) => {
                let mut c = crate::connect::Counted::new(TokioIo::new(c));
                let mut u = TokioIo::new(u);
                let r = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                let (up, down) = (c.read, c.written);
                pending.finish(
                    &shared,
                    101,
                    r.err().map(|_| "upgrade_io_error".to_owned()),
                    up,
                    down,
                    true,
                );
            }
            _ => pending.finish(&shared, 101, Some("upgrade_failed".to_owned()), 0, 0, false),
        }
    });
    Response::from_parts(parts, crate::body::empty())
}

fn absolute_target(uri: &Uri) -> Result<Target, ApiError> {
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ApiError::bad_request(
                "unsupported_scheme",
                "https targets must use CONNECT (set HTTPS_PROXY)",
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "unsupported_scheme",
                "only http:// targets can be forwarded",
            ))
        }
    }
    let auth = uri
        .authority()
        .ok_or_else(|| ApiError::bad_request("bad_target", "request target has no host"))?;
    parse_host_port(auth.as_str(), Some(80)).map_err(target_error)
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The target of a request inside a tunnel: its `:authority` / absolute-form
/// authority or `Host`, which must name the CONNECT destination (host and port;
/// the scheme's default port may be omitted).
fn inner_target<B>(req: &Request<B>, tunnel: &Tunnel) -> Result<Target, ApiError> {
    let authority = match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST).and_then(|h| h.to_str().ok()),
    };
    let Some(authority) = authority else {
        return Err(ApiError::bad_request(
            "bad_target",
            "request inside the tunnel has no Host",
        ));
    };
    let mismatch = || {
        ApiError::forbidden(
            "host_mismatch",
            format!("requests inside this tunnel must target {}", tunnel.target),
        )
    };
    let t =
        parse_host_port(authority, Some(default_port(tunnel.scheme))).map_err(|_| mismatch())?;
    if t.host_str() != tunnel.target.host_str() || t.port != tunnel.target.port {
        return Err(mismatch());
    }
    Ok(tunnel.target.clone())
}

/// The `Upgrade` value to offer upstream: the client's protocols that `allowed` lists (case
/// insensitive), or `None` when the request is not an upgrade or offers none of them (then the
/// upgrade is stripped and the request forwarded as an ordinary one).
fn allowed_upgrade<B>(req: &Request<B>, allowed: &[String]) -> Option<HeaderValue> {
    if !wants_upgrade(req) || req.version() != Version::HTTP_11 {
        return None;
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| is_allowed_upgrade(t, allowed))
        .collect();
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered.join(", ")).ok()
}

/// Whether `token` (`name` or `name/version`) names an allowed upgrade protocol.
fn is_allowed_upgrade(token: &str, allowed: &[String]) -> bool {
    let name = token.split('/').next().unwrap_or(token);
    !name.is_empty()
        && allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(token))
}

/// Whether a 101 switches to an allowed protocol.
fn upgrade_accepted<B>(resp: &Response<B>, allowed: &[String]) -> bool {
    resp.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').all(|t| is_allowed_upgrade(t.trim(), allowed)))
}

/// 502 for a 101 the client did not ask for, or to a protocol not allowed.
fn bad_upgrade() -> ApiError {
    ApiError::new(
        Status::BadGateway,
        "upstream_bad_upgrade",
        "the upstream switched to a protocol the request did not ask for or that is not allowed",
        ErrorSource::Upstream,
    )
}

/// Maps a failure to read the request body: 408 when it stalled, else 400.
fn body_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    if is_body_read_timeout(e) {
        ApiError::new(
            Status::RequestTimeout,
            "body_read_timeout",
            e.to_string(),
            ErrorSource::Client,
        )
    } else {
        ApiError::bad_request("bad_request_body", "the request body could not be read")
    }
}

/// Maps a target parse failure to a 400.
pub(crate) fn target_error(e: TargetError) -> ApiError {
    let code = match e {
        TargetError::Userinfo => "credentials_in_url",
        _ => "bad_target",
    };
    ApiError::bad_request(code, e.to_string())
}

/// 403 for a port outside `proxy.allowed_ports`.
pub(crate) fn port_not_allowed(port: u16) -> ApiError {
    ApiError::forbidden(
        "port_not_allowed",
        format!("destination port {port} is not allowed"),
    )
}

/// Maps an upstream client failure and counts it.
fn upstream_error(shared: &Shared, e: &hyper_util::client::legacy::Error) -> ApiError {
    if let Some(d) = find_dial_error(e) {
        if matches!(d, crate::dial::DialError::Tls { .. }) {
            shared
                .metrics
                .tls_handshake_failures
                .with_label_values(&["upstream"])
                .inc();
        }
        if let Some(kind) = d.metric_kind() {
            shared
                .metrics
                .upstream_errors
                .with_label_values(&[kind])
                .inc();
        }
        return d.to_api_error();
    }
    debug!(error = %e, "upstream request failed");
    shared
        .metrics
        .upstream_errors
        .with_label_values(&["protocol"])
        .inc();
    ApiError::new(
        Status::BadGateway,
        "upstream_error",
        "the upstream closed the connection or sent an invalid response",
        ErrorSource::Upstream,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_authority;

    fn tunnel(authority: &str, scheme: &'static str) -> Tunnel {
        Tunnel {
            target: parse_authority(authority).unwrap(),
            scheme,
            principal: Principal::anonymous(),
            subagent: None,
        }
    }

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    fn code(r: Result<Target, ApiError>) -> String {
        r.unwrap_err().code.into_owned()
    }

    #[test]
    fn inner_requests_must_target_the_connect_destination() {
        let t = tunnel("api.example.com:443", "https");
        for (uri, host) in [
            ("/v1", Some("api.example.com")),
            ("/v1", Some("api.example.com:443")),
            ("/v1", Some("API.Example.com.")),
            // h2: :authority arrives in the URI.
            ("https://api.example.com/v1", None),
            ("https://api.example.com:443/v1", Some("ignored.example")),
        ] {
            let got = inner_target(&req(uri, host), &t)
                .unwrap_or_else(|e| panic!("{uri} {host:?}: {e:?}"));
            assert_eq!(got, t.target);
        }
        for (uri, host) in [
            ("/v1", Some("other.example")),
            ("/v1", Some("api.example.com:8443")),
            ("/v1", Some("api.example.com.evil.test")),
            ("/v1", Some("user@api.example.com")),
            ("https://other.example/v1", Some("api.example.com")),
            ("/v1", Some("api.example.com:443:1")),
        ] {
            assert_eq!(
                code(inner_target(&req(uri, host), &t)),
                "host_mismatch",
                "{uri} {host:?}"
            );
        }
        assert_eq!(code(inner_target(&req("/v1", None), &t)), "bad_target");
    }

    #[test]
    fn settlement_uses_complete_provider_usage_only() {
        use portcullis_llm::{Usage, UsageSource};
        let reported = Usage {
            input_tokens: 30,
            output_tokens: 12,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 42,
            source: UsageSource::Provider,
            truncated: false,
        };
        assert_eq!(settled_tokens(Some(&reported)), Some(42));
        let cut = Usage {
            truncated: true,
            ..reported
        };
        assert_eq!(
            settled_tokens(Some(&cut)),
            None,
            "a cut stream keeps the reservation"
        );
        assert_eq!(settled_tokens(Some(&Usage::missing(false))), None);
        assert_eq!(settled_tokens(None), None);
    }

    #[test]
    fn a_body_ended_after_its_terminal_event_is_complete() {
        let table = [
            (BodyEnd::Complete, false, None, true),
            (BodyEnd::Complete, true, None, true),
            (BodyEnd::Aborted, true, None, true),
            (BodyEnd::Aborted, false, Some("client_aborted"), false),
            (BodyEnd::Error, false, Some("upstream_body_error"), false),
            (BodyEnd::Error, true, Some("upstream_body_error"), false),
        ];
        for (end, terminal, error, completed) in table {
            assert_eq!(
                body_outcome(end, terminal),
                (error, completed),
                "{end:?} terminal={terminal}"
            );
        }
    }

    /// What a body's end recorded: error, completed, usage.
    type EndLog = Arc<std::sync::Mutex<Vec<(Option<&'static str>, bool, portcullis_llm::Usage)>>>;

    /// A body whose origin keeps the connection open after `frames`, metered with the usage
    /// tap; returns the body and what its end recorded.
    fn tapped(frames: &[&'static str]) -> (ProxyBody, EndLog) {
        use futures_util::StreamExt;
        let tap = SharedTap(Arc::new(std::sync::Mutex::new(Some(UsageTap::new(
            portcullis_llm::Format::OpenAi,
            Some(portcullis_llm::Api::ChatCompletions),
            None,
            Some("text/event-stream"),
        )))));
        let frames: Vec<Result<http_body::Frame<bytes::Bytes>, crate::body::BoxError>> = frames
            .iter()
            .map(|f| {
                Ok(http_body::Frame::data(bytes::Bytes::from_static(
                    f.as_bytes(),
                )))
            })
            .collect();
        let held_open = futures_util::stream::iter(frames).chain(futures_util::stream::pending());
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (l, end_tap) = (log.clone(), tap.clone());
        let body = Metered::new(
            http_body_util::StreamBody::new(held_open),
            Box::new(move |_, end| {
                let t = end_tap.finish().expect("tap");
                let (error, completed) = body_outcome(end, t.terminal);
                l.lock().expect("log").push((error, completed, t.usage));
            }),
        )
        .with_tap(Box::new(tap))
        .boxed();
        (body, log)
    }

    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5}}\n\n";

    #[tokio::test]
    async fn the_tap_sees_frames_only_as_they_are_handed_on() {
        // The client read through `[DONE]` and closed; the origin had not closed.
        let (mut body, log) = tapped(&[USAGE, "data: [DONE]\n\n"]);
        for _ in 0..2 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        let got = log.lock().expect("log").clone();
        assert_eq!(got.len(), 1);
        let (error, completed, usage) = got[0];
        assert_eq!((error, completed), (None, true));
        assert_eq!(settled_tokens(Some(&usage)), Some(16));

        // `[DONE]` is waiting upstream but was never handed to the client: an abort, and
        // the reservation is kept.
        let (mut body, log) = tapped(&[USAGE, "data: [DONE]\n\n"]);
        body.frame().await.expect("frame").expect("data");
        drop(body);
        let (error, completed, usage) = log.lock().expect("log")[0];
        assert_eq!((error, completed), (Some("client_aborted"), false));
        assert!(usage.truncated);
        assert_eq!(settled_tokens(Some(&usage)), None);

        // A marker split across frames counts only once its last byte went out.
        let (mut body, log) = tapped(&[USAGE, "data: [DO", "NE]\n", "\n"]);
        for _ in 0..3 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        assert_eq!(log.lock().expect("log")[0].0, Some("client_aborted"));
        let (mut body, log) = tapped(&[USAGE, "data: [DO", "NE]\n", "\n"]);
        for _ in 0..4 {
            body.frame().await.expect("frame").expect("data");
        }
        drop(body);
        assert_eq!(log.lock().expect("log")[0].0, None);
    }

    #[test]
    fn default_port_follows_the_inner_scheme() {
        let plain = tunnel("localhost:80", "http");
        assert!(inner_target(&req("/", Some("localhost")), &plain).is_ok());
        let odd = tunnel("localhost:8080", "https");
        assert_eq!(
            code(inner_target(&req("/", Some("localhost")), &odd)),
            "host_mismatch"
        );
        assert!(inner_target(&req("/", Some("localhost:8080")), &odd).is_ok());
    }
}
