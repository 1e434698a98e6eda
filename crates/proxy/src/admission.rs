//! The one admission sequence, shared by CONNECT, absolute-form requests and requests inside
//! intercepted tunnels:
//!
//! authenticate → sub-agent → target and port (and address literals against the SSRF guard)
//! → canonical path → concurrency slot → classify (the body read, bounded and timed) →
//! authorize → audit admission → limits → credential.
//!
//! What differs between the entry points is data ([`Entry`]): where the agent and the target
//! come from, and which steps apply (a CONNECT has no path, body or limits). Each step tells the
//! exchange what it learned, so a refusal at any step is recorded with everything known.

use crate::body::{full, ProxyBody, ReadTimeout};
use crate::dial::check_literal;
use crate::exchange::Exchange;
use crate::headers::{check_request, SUBAGENT_HEADER};
use crate::inspect::{read_prefix, rejoin, Prefix};
use crate::path::canonical_path;
use crate::phases::RequestFacts;
use crate::refusal::{Denial, Malformed, Refusal};
use crate::state::Shared;
use crate::target::{parse_authority, parse_host_port, Target};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, PROXY_AUTHORIZATION};
use http::request::Parts;
use http::{HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portcullis_core::Injection;
use portcullis_core::{Decision, Principal, RequestKind};
use portcullis_limits::{Admission, Permit, UsageSnapshot};
use portcullis_llm::{Classification, RequestHead};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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

/// Where an exchange entered the data plane.
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// `CONNECT host:port`: no path, no body, no request limits.
    Connect,
    /// An absolute-form request (`GET http://host/path`).
    Forward,
    /// A request inside an intercepted tunnel: the tunnel's agent, re-checked, and its target.
    Inner(&'a Tunnel),
}

impl Entry<'_> {
    /// The scheme the exchange speaks.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Entry::Connect => "https",
            Entry::Forward => "http",
            Entry::Inner(t) => t.scheme,
        }
    }

    fn is_request(&self) -> bool {
        !matches!(self, Entry::Connect)
    }
}

/// What admission found out about an admitted exchange: everything forwarding needs.
pub(crate) struct Admitted {
    pub(crate) principal: Principal,
    pub(crate) target: Target,
    /// The canonical path when it differs from the request's.
    pub(crate) canonical: Option<String>,
    pub(crate) llm: Option<Classification>,
    /// The request body (the inspected prefix replayed first), `None` for CONNECT.
    pub(crate) body: Option<ProxyBody>,
    /// Turns true when the body stalled for `body_read_timeout` while it was forwarded.
    pub(crate) body_timed_out: Arc<AtomicBool>,
    pub(crate) permit: Option<Permit>,
    pub(crate) injection: Option<Injection>,
    pub(crate) subagent: Option<String>,
    /// What the answer to an MCP request needs (outcome scan, `tools/list` filter).
    pub(crate) mcp: Option<crate::mcp_answer::McpAdmitted>,
}

/// The request's body and the decision inputs read from it.
struct Classified {
    llm: Option<Classification>,
    json: Option<serde_json::Value>,
    body: Option<ProxyBody>,
    body_len: u64,
}

/// Runs the admission sequence for one exchange. `parts` is the request head; `body` its body
/// (`None` for CONNECT); `upgrade`: the request is an allowed protocol upgrade (its body is
/// never buffered).
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    ex: &mut Exchange,
    entry: Entry<'_>,
    parts: &Parts,
    body: Option<Incoming>,
    upgrade: bool,
    client_addr: SocketAddr,
) -> Result<Admitted, Denial> {
    let steps = Steps {
        shared,
        entry,
        parts,
        client_addr,
    };
    steps.check_head()?;
    let principal = steps.authenticate(ex)?;
    let subagent = steps.subagent(ex, &principal)?;
    let target = steps.target(ex)?;
    let canonical = steps.path(ex)?;
    let slot = steps.slot(&principal).await?;
    let body_timed_out = Arc::new(AtomicBool::new(false));
    let mut classified = steps
        .classify(
            ex,
            &target,
            canonical.as_deref(),
            body,
            upgrade,
            &body_timed_out,
        )
        .await?;
    let mcp = steps
        .mcp(&principal, &target, canonical.as_deref(), &mut classified)
        .await?;
    let credential = steps.bound_credential(&principal, &target);
    let host = target.host_str();
    let facts = Facts {
        host: &host,
        principal: &principal,
        subagent: subagent.as_deref(),
        target: &target,
        path: canonical.as_deref(),
        classified: &classified,
        credential: credential.as_deref(),
    };
    let usage = match &slot {
        Some(admission) => admission.usage(),
        None => steps.usage(&principal).await,
    };
    match &mcp {
        Some(req) => steps.authorize_mcp(ex, &facts, req, usage)?,
        None => steps.authorize(ex, &facts, usage)?,
    }
    let envelope = classified.llm.as_ref().map(Classification::error_envelope);
    let refuse = |r: Refusal| Denial::Refuse(r, envelope);
    if let Err(why) = shared.pipeline.recorder.admit().await {
        return Err(refuse(Refusal::AuditUnavailable(why)));
    }
    let permit = steps
        .limits(&principal, &classified, slot)
        .await
        .map_err(refuse)?;
    if let (Some(gate), Some(req)) = (&shared.pipeline.mcp, &mcp) {
        let own = shared
            .pipeline
            .limits
            .as_ref()
            .and_then(|l| l.mcp_calls_per_minute(&principal));
        crate::mcp::count_calls(gate, &principal.agent_id, own, req).map_err(refuse)?;
    }
    let injection = steps.injection(credential.as_deref()).map_err(refuse)?;
    let mcp = mcp.map(|req| {
        let base = steps.request_facts(&facts, usage);
        crate::mcp_answer::McpAdmitted::new(shared, req, &base)
    });
    Ok(Admitted {
        principal,
        target,
        canonical,
        llm: classified.llm,
        body: classified.body,
        body_timed_out,
        permit,
        injection,
        subagent,
        mcp,
    })
}

/// Borrowed facts handed to the authorizer.
struct Facts<'a> {
    host: &'a str,
    principal: &'a Principal,
    subagent: Option<&'a str>,
    target: &'a Target,
    path: Option<&'a str>,
    classified: &'a Classified,
    credential: Option<&'a str>,
}

/// The steps, each small and in order; `admit` calls them.
struct Steps<'a> {
    shared: &'a Arc<Shared>,
    entry: Entry<'a>,
    parts: &'a Parts,
    client_addr: SocketAddr,
}

impl Steps<'_> {
    /// Head limits and framing (requests), and what cannot be served inside a tunnel.
    fn check_head(&self) -> Result<(), Refusal> {
        if !self.entry.is_request() {
            return Ok(());
        }
        let cfg = &self.shared.cfg;
        check_request(self.parts, cfg.max_header_bytes, cfg.max_headers)?;
        if matches!(self.entry, Entry::Inner(_)) && self.parts.method == Method::CONNECT {
            return Err(Malformed::Method.into());
        }
        Ok(())
    }

    fn authenticate(&self, ex: &mut Exchange) -> Result<Principal, Refusal> {
        let auth = &self.shared.pipeline.authenticator;
        let principal = match self.entry {
            Entry::Inner(t) => auth.recheck(&t.principal)?,
            Entry::Connect | Entry::Forward => auth.authenticate(
                self.parts.headers.get(PROXY_AUTHORIZATION),
                self.client_addr,
            )?,
        };
        ex.set_principal(&principal);
        Ok(principal)
    }

    fn subagent(
        &self,
        ex: &mut Exchange,
        principal: &Principal,
    ) -> Result<Option<String>, Refusal> {
        let named = match self.parts.headers.get(SUBAGENT_HEADER) {
            Some(v) => Some(self.shared.pipeline.authenticator.subagent(principal, v)?),
            None => match self.entry {
                Entry::Inner(t) => t.subagent.clone(),
                Entry::Connect | Entry::Forward => None,
            },
        };
        ex.set_subagent(named.as_deref());
        Ok(named)
    }

    /// Where the exchange goes: parsed, bound to the tunnel's destination for inner requests,
    /// on an allowed port, and (for address literals) allowed by the SSRF guard.
    fn target(&self, ex: &mut Exchange) -> Result<Target, Refusal> {
        let target = match self.entry {
            Entry::Connect => connect_target(&self.parts.uri)?,
            Entry::Forward => absolute_target(&self.parts.uri)?,
            Entry::Inner(t) => inner_target(self.parts, t)?,
        };
        ex.set_target(&target);
        if !self.shared.cfg.allowed_ports.contains(&target.port) {
            return Err(Refusal::Port(target.port));
        }
        check_literal(&target, &self.shared.guard)?;
        Ok(target)
    }

    /// One canonical path for classification, policy, audit and the upstream request.
    fn path(&self, ex: &mut Exchange) -> Result<Option<String>, Refusal> {
        if !self.entry.is_request() {
            return Ok(None);
        }
        match canonical_path(self.parts.uri.path(), self.shared.cfg.allow_encoded_slashes) {
            Ok(Cow::Borrowed(_)) => Ok(None),
            Ok(Cow::Owned(p)) => {
                ex.set_path(&p);
                Ok(Some(p))
            }
            Err(e) => Err(Malformed::Path(e).into()),
        }
    }

    /// The concurrency slot covers the whole exchange, body upload included.
    async fn slot(&self, principal: &Principal) -> Result<Option<Admission>, Refusal> {
        match (&self.shared.pipeline.limits, self.entry.is_request()) {
            (Some(limits), true) => limits
                .admit(principal)
                .await
                .map(Some)
                .map_err(Refusal::from),
            _ => Ok(None),
        }
    }

    /// The agent's usage for the policy input of an exchange without a slot (a CONNECT).
    async fn usage(&self, principal: &Principal) -> UsageSnapshot {
        match &self.shared.pipeline.limits {
            Some(limits) => limits.usage(principal).await,
            None => UsageSnapshot::default(),
        }
    }

    /// Classifies a request to a known LLM provider, reading its JSON body (bounded, and cut
    /// when it stalls) so policy sees model, stream, max_tokens and the body itself.
    async fn classify(
        &self,
        ex: &mut Exchange,
        target: &Target,
        canonical: Option<&str>,
        body: Option<Incoming>,
        upgrade: bool,
        timed_out: &Arc<AtomicBool>,
    ) -> Result<Classified, Refusal> {
        let cfg = &self.shared.cfg;
        let body: Option<ProxyBody> = body.map(|b| {
            ReadTimeout::new(
                b.map_err(Into::into),
                cfg.body_read_timeout,
                timed_out.clone(),
            )
            .boxed()
        });
        let declared = self
            .parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let mut out = Classified {
            llm: None,
            json: None,
            body,
            body_len: declared,
        };
        let Some(classifier) = self.shared.pipeline.classifier.as_ref() else {
            return Ok(out);
        };
        let content_type = self
            .parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let host = target.host_str();
        let head = RequestHead {
            method: self.parts.method.as_str(),
            host: &host,
            port: target.port,
            path: canonical.unwrap_or(self.parts.uri.path()),
            content_type,
        };
        let Some(mut c) = classifier.classify_head(&head) else {
            return Ok(out);
        };
        if !upgrade && classifier.wants_body(&head) {
            if let Some(body) = out.body.take() {
                out.body = Some(self.inspect(&mut c, &mut out, body, content_type).await?);
            }
        }
        ex.set_llm(&c);
        out.llm = Some(c);
        Ok(out)
    }

    /// Reads up to `max_inspect_body` of the body into the classification; returns the body to
    /// forward (the bytes read replayed first).
    async fn inspect(
        &self,
        c: &mut Classification,
        out: &mut Classified,
        body: ProxyBody,
        content_type: Option<&str>,
    ) -> Result<ProxyBody, Refusal> {
        let max = self.shared.cfg.max_inspect_body;
        match read_prefix(body, max).await {
            Ok(Prefix::Complete(bytes)) => {
                out.body_len = bytes.len() as u64;
                out.json = c.inspect_json(content_type, &bytes, max);
                Ok(full(bytes))
            }
            Ok(Prefix::Partial(prefix, rest)) => {
                out.body_len = out.body_len.max(prefix.len() as u64);
                c.inspect_body(content_type, &prefix, max);
                Ok(rejoin(prefix, rest))
            }
            Err(e) => Err(crate::refusal::body_refusal(
                e.as_ref(),
                self.shared.cfg.body_read_timeout,
            )),
        }
    }

    /// The credential bound for this agent and host: only for requests whose TLS the gateway
    /// terminates (never plaintext), to the tunnel's own destination.
    fn bound_credential(&self, principal: &Principal, target: &Target) -> Option<Arc<str>> {
        match (&self.shared.pipeline.credentials, self.entry) {
            (Some(c), Entry::Inner(t)) if t.scheme == "https" => {
                c.bound(principal, &target.host_str())
            }
            _ => None,
        }
    }

    /// The facts the Authorizer sees (without an MCP message).
    fn request_facts<'f>(&'f self, f: &'f Facts<'f>, usage: UsageSnapshot) -> RequestFacts<'f> {
        let kind = match self.entry {
            Entry::Connect => RequestKind::Connect,
            Entry::Forward | Entry::Inner(_) => RequestKind::Http,
        };
        let path = match self.entry {
            Entry::Connect => "",
            _ => f.path.unwrap_or(self.parts.uri.path()),
        };
        RequestFacts {
            kind,
            principal: f.principal,
            subagent: f.subagent,
            method: &self.parts.method,
            scheme: self.entry.scheme(),
            host: f.host,
            port: f.target.port,
            path,
            query: self.parts.uri.query(),
            headers: &self.parts.headers,
            client_addr: self.client_addr,
            llm: f.classified.llm.as_ref(),
            body: f.classified.json.as_ref(),
            usage,
            credential: f.credential,
            mcp: None,
        }
    }

    fn authorize(
        &self,
        ex: &mut Exchange,
        f: &Facts<'_>,
        usage: UsageSnapshot,
    ) -> Result<(), Denial> {
        let pipeline = &self.shared.pipeline;
        let authz = pipeline.authorizer.authorize(&self.request_facts(f, usage));
        let decision = Arc::new(authz.decision);
        ex.set_decision(decision.clone());
        if decision.allowed {
            return Ok(());
        }
        Err(denial(
            pipeline,
            decision,
            authz.stub,
            f.classified.llm.as_ref(),
        ))
    }

    /// Decides every message of an MCP request; one denial refuses the whole body.
    fn authorize_mcp(
        &self,
        ex: &mut Exchange,
        f: &Facts<'_>,
        req: &crate::mcp::McpRequest,
        usage: UsageSnapshot,
    ) -> Result<(), Denial> {
        let Some(gate) = self.shared.pipeline.mcp.as_ref() else {
            return self.authorize(ex, f, usage);
        };
        let base = self.request_facts(f, usage);
        let authorizer = &self.shared.pipeline.authorizer;
        crate::mcp::authorize(gate, ex, req, &|m| {
            authorizer.authorize(&crate::mcp::with_mcp(&base, m))
        })
    }

    /// A request to a registered MCP endpoint: its body read whole (bounded) and parsed, its
    /// mirrored headers checked. `None` for every other request.
    async fn mcp(
        &self,
        principal: &Principal,
        target: &Target,
        canonical: Option<&str>,
        classified: &mut Classified,
    ) -> Result<Option<crate::mcp::McpRequest>, Refusal> {
        let Some(gate) = self.shared.pipeline.mcp.as_ref() else {
            return Ok(None);
        };
        if !self.entry.is_request() {
            return Ok(None);
        }
        let path = canonical.unwrap_or(self.parts.uri.path());
        let Some(server) = gate.server(&target.host_str(), path) else {
            return Ok(None);
        };
        let (req, body, len) = crate::mcp::read(
            gate,
            server,
            self.parts,
            classified.body.take(),
            &principal.agent_id,
            self.shared.cfg.body_read_timeout,
        )
        .await?;
        classified.body = body;
        if len > 0 {
            classified.body_len = len;
        }
        Ok(Some(req))
    }

    /// Rate limits and token budgets: the permit is held until the response ends.
    async fn limits(
        &self,
        principal: &Principal,
        classified: &Classified,
        slot: Option<Admission>,
    ) -> Result<Option<Permit>, Refusal> {
        match (&self.shared.pipeline.limits, slot) {
            (Some(limits), Some(slot)) => limits
                .acquire(
                    principal,
                    classified.llm.as_ref(),
                    classified.body_len,
                    slot,
                )
                .await
                .map(Some)
                .map_err(Refusal::from),
            _ => Ok(None),
        }
    }

    /// The credential's secret is read now: a request is never forwarded without the
    /// credential policy was told about.
    fn injection(&self, bound: Option<&str>) -> Result<Option<Injection>, Refusal> {
        match (bound, &self.shared.pipeline.credentials) {
            (Some(name), Some(injector)) => injector
                .injection(name)
                .map(Some)
                .map_err(Refusal::CredentialUnavailable),
            _ => Ok(None),
        }
    }
}

/// A denied decision's answer: the provider-shaped stub when the policy asks for one and the
/// API has one, else the refusal in the provider's error envelope.
fn denial(
    pipeline: &crate::phases::Pipeline,
    decision: Arc<Decision>,
    stub: bool,
    llm: Option<&Classification>,
) -> Denial {
    if stub {
        if let Some(s) = llm.and_then(|c| pipeline.authorizer.stub(&decision, c)) {
            return Denial::Stub(s);
        }
    }
    let envelope = llm.map(Classification::error_envelope);
    Denial::Refuse(Refusal::Policy(decision), envelope)
}

fn connect_target(uri: &Uri) -> Result<Target, Malformed> {
    if uri.scheme().is_some()
        || uri
            .path_and_query()
            .is_some_and(|p| !p.as_str().is_empty() && p.as_str() != "/")
    {
        return Err(Malformed::Target(crate::target::TargetError::MissingPort));
    }
    let auth = uri
        .authority()
        .ok_or(Malformed::Target(crate::target::TargetError::MissingPort))?;
    parse_authority(auth.as_str()).map_err(Malformed::Target)
}

fn absolute_target(uri: &Uri) -> Result<Target, Malformed> {
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Malformed::Scheme(
                "https targets must use CONNECT (set HTTPS_PROXY)",
            ))
        }
        _ => return Err(Malformed::Scheme("only http:// targets can be forwarded")),
    }
    let auth = uri.authority().ok_or(Malformed::MissingHost)?;
    parse_host_port(auth.as_str(), Some(80)).map_err(Malformed::Target)
}

/// The default port of an inner request's scheme.
pub(crate) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The target of a request inside a tunnel: its `:authority` / absolute-form authority or
/// `Host`, which must name the CONNECT destination (host and port; the scheme's default
/// port may be omitted).
fn inner_target(parts: &Parts, tunnel: &Tunnel) -> Result<Target, Refusal> {
    let authority = match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => parts.headers.get(HOST).and_then(|h| h.to_str().ok()),
    };
    let Some(authority) = authority else {
        return Err(Malformed::MissingHost.into());
    };
    let mismatch = || Refusal::HostMismatch(tunnel.target.to_string());
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
pub(crate) fn allowed_upgrade(
    headers: &http::HeaderMap,
    version: http::Version,
    allowed: &[String],
) -> Option<HeaderValue> {
    if !crate::headers::wants_upgrade(headers) || version != http::Version::HTTP_11 {
        return None;
    }
    let offered: Vec<&str> = headers
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
pub(crate) fn is_allowed_upgrade(token: &str, allowed: &[String]) -> bool {
    let name = token.split('/').next().unwrap_or(token);
    !name.is_empty()
        && allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name) || a.eq_ignore_ascii_case(token))
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

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn code(r: Result<Target, Refusal>) -> &'static str {
        r.unwrap_err().code()
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
            let got = inner_target(&parts(uri, host), &t)
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
                code(inner_target(&parts(uri, host), &t)),
                "host_mismatch",
                "{uri} {host:?}"
            );
        }
        assert_eq!(code(inner_target(&parts("/v1", None), &t)), "bad_target");
    }

    #[test]
    fn default_port_follows_the_inner_scheme() {
        let plain = tunnel("localhost:80", "http");
        assert!(inner_target(&parts("/", Some("localhost")), &plain).is_ok());
        let odd = tunnel("localhost:8080", "https");
        assert_eq!(
            code(inner_target(&parts("/", Some("localhost")), &odd)),
            "host_mismatch"
        );
        assert!(inner_target(&parts("/", Some("localhost:8080")), &odd).is_ok());
    }

    #[test]
    fn only_listed_upgrade_tokens_are_offered() {
        let offer = |upgrade: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(
                "connection",
                HeaderValue::from_static("keep-alive, Upgrade"),
            );
            h.insert("upgrade", HeaderValue::from_str(upgrade).unwrap());
            allowed_upgrade(&h, http::Version::HTTP_11, &["websocket".to_owned()])
        };
        assert_eq!(offer("websocket").unwrap(), "websocket");
        assert_eq!(offer("h2c, WebSocket").unwrap(), "WebSocket");
        assert_eq!(offer("websocket/13").unwrap(), "websocket/13");
        for refused in ["h2c", "TLS/1.2", "websocket2", "", "h2c,"] {
            assert!(offer(refused).is_none(), "{refused}");
        }
    }

    #[test]
    fn target_refusals_have_their_codes() {
        let r = |uri: &str| Refusal::from(absolute_target(&uri.parse().unwrap()).unwrap_err());
        assert_eq!(r("https://x/").code(), "unsupported_scheme");
        assert_eq!(r("ftp://x/").code(), "unsupported_scheme");
        assert_eq!(r("http://user:pw@x/").code(), "credentials_in_url");
        assert_eq!(
            Refusal::from(connect_target(&"http://x:443/".parse().unwrap()).unwrap_err()).code(),
            "bad_target"
        );
    }
}
