//! Every way the data plane refuses, typed, and the one place each cause becomes a status,
//! a JSON body (with the provider's error envelope for LLM APIs), headers, a verdict, an error
//! code and a metric label. The verdict comes from the cause, never from a status code.

use crate::dial::DialError;
use crate::framing::FramingFlaw;
use crate::metrics::ProxyMetrics;
use crate::path::PathError;
use crate::ssrf::Denied;
use crate::target::TargetError;
use portcullis_core::{Decision, ErrorSource, Status, Verdict};
use portcullis_limits::Refusal as LimitRefusal;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// A provider-shaped answer stating a policy's refusal (`on_block = "stub"`): a chat
/// completion or message whose content says why, so an agent's model reads the reason.
#[derive(Debug, Clone)]
pub struct Stub {
    /// Body bytes.
    pub body: Vec<u8>,
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
}

/// How a refused admission is answered.
#[derive(Debug)]
pub enum Denial {
    /// The refusal, with the provider's error envelope for a recognised LLM API.
    Refuse(Refusal, Option<portcullis_core::ErrorEnvelope>),
    /// A provider-shaped stub stating the policy's refusal.
    Stub(Stub),
    /// An MCP body policy denied, answered like an MCP server (JSON-RPC errors or tool
    /// results for each request, HTTP 200).
    Mcp(McpDenied),
}

/// The answer to an MCP body policy denied.
#[derive(Debug)]
pub struct McpDenied {
    /// JSON or SSE body.
    pub answer: portcullis_mcp::Answer,
    /// The denying decision.
    pub decision: Arc<Decision>,
}

/// A request to an MCP endpoint that cannot be governed: not JSON-RPC, over the bounds, or
/// with `Mcp-Method` / `Mcp-Name` headers that do not match its body. Answered with a
/// JSON-RPC error (id `null`) and HTTP 400 (413 when too large).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpInvalid {
    /// Machine code (`mcp_parse_error`, `mcp_invalid_request`, `mcp_header_mismatch`, ...).
    pub code: &'static str,
    /// JSON-RPC error code.
    pub rpc_code: i64,
    /// Why.
    pub detail: String,
    /// The body is over `mcp.max_body`.
    pub too_large: bool,
}

impl From<Refusal> for Denial {
    fn from(r: Refusal) -> Self {
        Denial::Refuse(r, None)
    }
}

/// Why authentication failed, as the identity phase reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthFailure {
    /// Which answer it gets.
    pub kind: AuthFailureKind,
    /// Machine code (`proxy_auth_required`, `agent_disabled`, `auth_throttled`).
    pub code: &'static str,
    /// Human readable explanation (never a credential).
    pub detail: Cow<'static, str>,
    /// Finer reason (`bad_secret`, `expired`, ...), answered as `reason` and used as the
    /// `portcullis_proxy_auth_failures_total` label.
    pub reason: &'static str,
}

/// The answers an authentication failure can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailureKind {
    /// No or bad credentials: 407 with a `Proxy-Authenticate` challenge.
    Unauthenticated,
    /// The agent exists but may not act (mode `disabled`): 403, a denial.
    Disabled,
    /// Too many failed attempts: 429 with `Retry-After`, credentials not checked.
    Throttled {
        /// Seconds until an attempt may succeed.
        retry_after_secs: u64,
    },
}

/// A request that cannot be processed as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Malformed {
    /// The raw head's framing is ambiguous (seen on the wire, before hyper resolved it).
    Framing(FramingFlaw),
    /// `Content-Length` that is not one decimal number.
    ContentLength,
    /// `Transfer-Encoding` other than exactly `chunked`.
    TransferEncoding,
    /// More headers than `proxy.max_headers`.
    TooManyHeaders {
        /// Headers received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A head larger than `proxy.max_header_bytes`.
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// An unusable request target or CONNECT authority.
    Target(TargetError),
    /// A request inside a tunnel without `Host` or `:authority`.
    MissingHost,
    /// A scheme the proxy does not forward (the detail says what to do instead).
    Scheme(&'static str),
    /// A path that cannot be canonicalised unambiguously.
    Path(PathError),
    /// The request body could not be read.
    Body,
    /// The request body stalled for `proxy.body_read_timeout`.
    BodyStalled(Duration),
    /// An unusable `X-Portcullis-Subagent`.
    Subagent {
        /// `invalid_subagent` or `too_many_subagents`.
        code: &'static str,
        /// Why.
        detail: String,
    },
    /// A method that cannot be served here (CONNECT inside an intercepted tunnel).
    Method,
    /// A body for a gateway-local endpoint over its limit.
    LocalBodyTooLarge(usize),
}

/// The upstream could not be reached or answered unusably.
#[derive(Debug)]
pub enum Upstream {
    /// Resolving, connecting or the TLS handshake failed.
    Dial(DialError),
    /// The upstream closed the connection or sent an invalid response.
    Protocol,
    /// The upstream switched protocols without being asked, or to a protocol not allowed.
    BadUpgrade,
}

/// Every cause of a refusal. [`Refusal::cause`] names it; tests iterate [`Cause::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// [`Refusal::Auth`].
    Auth,
    /// [`Refusal::Malformed`].
    Malformed,
    /// [`Refusal::Port`].
    Port,
    /// [`Refusal::Destination`].
    Destination,
    /// [`Refusal::HostMismatch`].
    HostMismatch,
    /// [`Refusal::Policy`].
    Policy,
    /// [`Refusal::Limited`].
    Limited,
    /// [`Refusal::LimitsUnavailable`].
    LimitsUnavailable,
    /// [`Refusal::AuditUnavailable`].
    AuditUnavailable,
    /// [`Refusal::CredentialUnavailable`].
    CredentialUnavailable,
    /// [`Refusal::Upstream`].
    Upstream,
    /// [`Refusal::NotFound`].
    NotFound,
    /// [`Refusal::SniMismatch`].
    SniMismatch,
    /// [`Refusal::TunnelProtocol`].
    TunnelProtocol,
    /// [`Refusal::Overloaded`].
    Overloaded,
    /// [`Refusal::Mcp`].
    Mcp,
}

impl Cause {
    /// Every cause, once.
    pub const ALL: [Cause; 16] = [
        Cause::Auth,
        Cause::Malformed,
        Cause::Port,
        Cause::Destination,
        Cause::HostMismatch,
        Cause::Policy,
        Cause::Limited,
        Cause::LimitsUnavailable,
        Cause::AuditUnavailable,
        Cause::CredentialUnavailable,
        Cause::Upstream,
        Cause::NotFound,
        Cause::SniMismatch,
        Cause::TunnelProtocol,
        Cause::Overloaded,
        Cause::Mcp,
    ];
}

/// Why the data plane refused an exchange.
#[derive(Debug)]
pub enum Refusal {
    /// Authentication failed.
    Auth(AuthFailure),
    /// The request is malformed.
    Malformed(Malformed),
    /// The destination port is not in `proxy.allowed_ports`.
    Port(u16),
    /// The SSRF guard refused the destination address.
    Destination(Denied),
    /// A request inside a tunnel targets another host than the tunnel's (named here).
    HostMismatch(String),
    /// Policy denied (or the agent is disabled, or evaluation failed: closed).
    Policy(Arc<Decision>),
    /// A rate limit or token budget.
    Limited(LimitRefusal),
    /// The shared limits backend cannot be reached and is set to refuse then
    /// (`limits.on_redis_error = "deny"`).
    LimitsUnavailable(String),
    /// The audit trail cannot take the record (`audit.on_full = "fail_closed"`).
    AuditUnavailable(String),
    /// The credential policy was told about cannot be read.
    CredentialUnavailable(String),
    /// The upstream failed.
    Upstream(Upstream),
    /// An origin-form request for no endpoint of the gateway.
    NotFound,
    /// A TLS ClientHello inside a tunnel names another host than the CONNECT (the tunnel is
    /// closed; no answer is possible).
    SniMismatch,
    /// An intercepted tunnel's first bytes are neither TLS nor HTTP (`undecided`: nothing
    /// decidable arrived in time). The tunnel is closed.
    TunnelProtocol {
        /// Nothing decidable arrived within `header_read_timeout`.
        undecided: bool,
    },
    /// The gateway is at `max_connections`: the connection is answered and closed before any
    /// request is read (so there is no exchange to record; it is counted instead).
    Overloaded,
    /// A request to an MCP endpoint that cannot be governed.
    Mcp(McpInvalid),
}

impl From<DialError> for Refusal {
    fn from(e: DialError) -> Self {
        match e {
            DialError::Denied(d) => Refusal::Destination(d),
            other => Refusal::Upstream(Upstream::Dial(other)),
        }
    }
}

impl From<portcullis_limits::LimitError> for Refusal {
    fn from(e: portcullis_limits::LimitError) -> Self {
        match e {
            portcullis_limits::LimitError::Limited(r) => Refusal::Limited(r),
            portcullis_limits::LimitError::Unavailable(why) => Refusal::LimitsUnavailable(why),
        }
    }
}

impl From<Malformed> for Refusal {
    fn from(m: Malformed) -> Self {
        Refusal::Malformed(m)
    }
}

impl From<AuthFailure> for Refusal {
    fn from(a: AuthFailure) -> Self {
        Refusal::Auth(a)
    }
}

impl Refusal {
    /// The cause, without its data.
    pub fn cause(&self) -> Cause {
        match self {
            Refusal::Auth(_) => Cause::Auth,
            Refusal::Malformed(_) => Cause::Malformed,
            Refusal::Port(_) => Cause::Port,
            Refusal::Destination(_) => Cause::Destination,
            Refusal::HostMismatch(_) => Cause::HostMismatch,
            Refusal::Policy(_) => Cause::Policy,
            Refusal::Limited(_) => Cause::Limited,
            Refusal::LimitsUnavailable(_) => Cause::LimitsUnavailable,
            Refusal::AuditUnavailable(_) => Cause::AuditUnavailable,
            Refusal::CredentialUnavailable(_) => Cause::CredentialUnavailable,
            Refusal::Upstream(_) => Cause::Upstream,
            Refusal::NotFound => Cause::NotFound,
            Refusal::SniMismatch => Cause::SniMismatch,
            Refusal::TunnelProtocol { .. } => Cause::TunnelProtocol,
            Refusal::Overloaded => Cause::Overloaded,
            Refusal::Mcp(_) => Cause::Mcp,
        }
    }

    /// The status answered (and recorded). For tunnel refusals, which close the tunnel
    /// instead of answering, the status recorded: 403 for an SNI mismatch, 200 (the tunnel
    /// was established) for a refused protocol.
    pub fn status(&self) -> Status {
        match self {
            Refusal::Auth(a) => match a.kind {
                AuthFailureKind::Unauthenticated => Status::ProxyAuthRequired,
                AuthFailureKind::Disabled => Status::Forbidden,
                AuthFailureKind::Throttled { .. } => Status::TooManyRequests,
            },
            Refusal::Malformed(m) => m.status(),
            Refusal::Mcp(m) if m.too_large => Status::PayloadTooLarge,
            Refusal::Mcp(_) => Status::BadRequest,
            Refusal::Port(_)
            | Refusal::Destination(_)
            | Refusal::HostMismatch(_)
            | Refusal::Policy(_)
            | Refusal::SniMismatch => Status::Forbidden,
            Refusal::Limited(_) => Status::TooManyRequests,
            Refusal::AuditUnavailable(_)
            | Refusal::LimitsUnavailable(_)
            | Refusal::CredentialUnavailable(_)
            | Refusal::Overloaded => Status::ServiceUnavailable,
            Refusal::Upstream(Upstream::Dial(DialError::Timeout(_))) => Status::GatewayTimeout,
            Refusal::Upstream(_) => Status::BadGateway,
            Refusal::NotFound => Status::NotFound,
            // The tunnel was established (200); it is closed, not answered.
            Refusal::TunnelProtocol { .. } => Status::Ok,
        }
    }

    /// The machine code (JSON `code`, `X-Portcullis-Error`, the record's `error`, the
    /// `portcullis_requests_refused_total{code}` label).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Auth(a) => a.code,
            Refusal::Malformed(m) => m.code(),
            Refusal::Port(_) => "port_not_allowed",
            Refusal::Destination(_) => "destination_forbidden",
            Refusal::HostMismatch(_) => "host_mismatch",
            Refusal::Policy(d) => d.refusal_code(),
            Refusal::Limited(_) => "rate_limited",
            Refusal::LimitsUnavailable(_) => "limits_unavailable",
            Refusal::AuditUnavailable(_) => "audit_unavailable",
            Refusal::CredentialUnavailable(_) => "credential_unavailable",
            Refusal::Upstream(Upstream::Dial(d)) => match d {
                DialError::Dns { .. } | DialError::NoAddress(_) => "dns_failure",
                DialError::Timeout(_) => "upstream_timeout",
                DialError::Tls { .. } => "upstream_tls_error",
                DialError::Connect { .. } | DialError::Denied(_) => "upstream_unreachable",
            },
            Refusal::Upstream(Upstream::Protocol) => "upstream_error",
            Refusal::Upstream(Upstream::BadUpgrade) => "upstream_bad_upgrade",
            Refusal::NotFound => "not_found",
            Refusal::SniMismatch => "sni_mismatch",
            Refusal::TunnelProtocol { undecided: true } => "tunnel_undecided",
            Refusal::TunnelProtocol { undecided: false } => "tunnel_protocol_refused",
            Refusal::Overloaded => "too_many_connections",
            Refusal::Mcp(m) => m.code,
        }
    }

    /// The verdict recorded: a denial for refusals that decide against the agent, the
    /// limit's `rate_limited`, an error for failures before any decision; failures after
    /// an allowing decision keep that decision's verdict (the call was allowed, then failed).
    pub fn verdict(&self, decision: Option<&Decision>) -> Verdict {
        match self {
            Refusal::Auth(AuthFailure {
                kind: AuthFailureKind::Disabled,
                ..
            })
            | Refusal::Port(_)
            | Refusal::Destination(_)
            | Refusal::HostMismatch(_)
            | Refusal::Policy(_)
            | Refusal::SniMismatch => Verdict::Deny,
            Refusal::Limited(_) => Verdict::RateLimited,
            Refusal::Auth(_)
            | Refusal::Malformed(_)
            | Refusal::NotFound
            | Refusal::Overloaded
            | Refusal::Mcp(_) => Verdict::Error,
            Refusal::AuditUnavailable(_)
            | Refusal::LimitsUnavailable(_)
            | Refusal::CredentialUnavailable(_)
            | Refusal::Upstream(_)
            | Refusal::TunnelProtocol { .. } => decision.map_or(Verdict::Error, |d| d.verdict),
        }
    }

    /// What the record adds to its `reasons` (the limit that refused a request policy allowed).
    pub fn reason(&self) -> Option<String> {
        match self {
            Refusal::Limited(r) => Some(r.detail()),
            _ => None,
        }
    }

    /// Whether the connection must close after the answer (its framing cannot be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::Overloaded
                | Refusal::Malformed(
                    Malformed::Framing(_)
                        | Malformed::ContentLength
                        | Malformed::TransferEncoding
                        | Malformed::TooManyHeaders { .. }
                        | Malformed::HeadTooLarge { .. }
                )
        )
    }

    /// Human readable explanation (never a secret).
    pub fn detail(&self) -> Cow<'static, str> {
        match self {
            Refusal::Auth(a) => a.detail.clone(),
            Refusal::Malformed(m) => m.detail(),
            Refusal::Port(p) => format!("destination port {p} is not allowed").into(),
            Refusal::Destination(d) => d.to_string().into(),
            Refusal::HostMismatch(t) => {
                format!("requests inside this tunnel must target {t}").into()
            }
            Refusal::Policy(d) => d
                .reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "request denied by policy".to_owned())
                .into(),
            Refusal::Limited(r) => r.detail().into(),
            Refusal::AuditUnavailable(why) | Refusal::CredentialUnavailable(why) => {
                why.clone().into()
            }
            Refusal::LimitsUnavailable(why) => {
                format!("rate limits cannot be checked, so the request is refused: {why}").into()
            }
            Refusal::Upstream(Upstream::Dial(d)) => d.detail().into(),
            Refusal::Upstream(Upstream::Protocol) => {
                "the upstream closed the connection or sent an invalid response".into()
            }
            Refusal::Upstream(Upstream::BadUpgrade) => "the upstream switched to a protocol \
                the request did not ask for or that is not allowed"
                .into(),
            Refusal::NotFound => "this is a proxy: send absolute-form requests \
                (GET http://host/path) or CONNECT host:port"
                .into(),
            Refusal::SniMismatch => "the TLS server name differs from the CONNECT host".into(),
            Refusal::TunnelProtocol { undecided: true } => {
                "nothing decidable arrived on the intercepted tunnel in time".into()
            }
            Refusal::TunnelProtocol { undecided: false } => {
                "the intercepted tunnel carries neither TLS nor HTTP".into()
            }
            Refusal::Overloaded => "the gateway is at its connection limit; retry later".into(),
            Refusal::Mcp(m) => m.detail.clone().into(),
        }
    }

    /// Where the refusal comes from (decides retryability in the provider envelopes).
    pub fn source(&self) -> ErrorSource {
        match self {
            Refusal::Auth(a) if a.kind == AuthFailureKind::Disabled => ErrorSource::Policy,
            Refusal::Auth(_) | Refusal::Malformed(_) | Refusal::NotFound | Refusal::Mcp(_) => {
                ErrorSource::Client
            }
            Refusal::Port(_)
            | Refusal::Destination(_)
            | Refusal::HostMismatch(_)
            | Refusal::Policy(_)
            | Refusal::Limited(_)
            | Refusal::SniMismatch => ErrorSource::Policy,
            Refusal::AuditUnavailable(_)
            | Refusal::LimitsUnavailable(_)
            | Refusal::CredentialUnavailable(_)
            | Refusal::TunnelProtocol { .. }
            | Refusal::Overloaded => ErrorSource::Internal,
            Refusal::Upstream(_) => ErrorSource::Upstream,
        }
    }

    /// Extra top-level JSON fields of the answer.
    pub fn extra(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            Refusal::Auth(a) => {
                m.insert("reason".into(), a.reason.into());
            }
            Refusal::Policy(d) => {
                m.insert(
                    "policy".into(),
                    d.policy.clone().map_or(Value::Null, Value::String),
                );
                m.insert("decision_id".into(), d.decision_id.clone().into());
            }
            Refusal::Limited(r) => {
                m.insert("limit".into(), r.limit.as_str().into());
            }
            _ => {}
        }
        m
    }

    /// Updates the metrics every refusal of this cause moves: the refused counter, and the
    /// cause's own (rate limits, upstream errors, TLS handshake failures).
    pub fn observe(&self, metrics: &ProxyMetrics, agent: &str) {
        metrics.refused.with_label_values(&[self.code()]).inc();
        match self {
            Refusal::Limited(r) => {
                metrics
                    .rate_limited
                    .with_label_values(&[agent, r.limit.as_str()])
                    .inc();
            }
            Refusal::Upstream(Upstream::Dial(d)) => {
                if matches!(d, DialError::Tls { .. }) {
                    metrics
                        .tls_handshake_failures
                        .with_label_values(&["upstream"])
                        .inc();
                }
                if let Some(kind) = d.metric_kind() {
                    metrics.upstream_errors.with_label_values(&[kind]).inc();
                }
            }
            Refusal::Upstream(Upstream::Protocol) => {
                metrics
                    .upstream_errors
                    .with_label_values(&["protocol"])
                    .inc();
            }
            _ => {}
        }
    }
}

impl Malformed {
    fn status(&self) -> Status {
        match self {
            Malformed::TooManyHeaders { .. } | Malformed::HeadTooLarge { .. } => {
                Status::HeadersTooLarge
            }
            Malformed::BodyStalled(_) => Status::RequestTimeout,
            Malformed::LocalBodyTooLarge(_) => Status::PayloadTooLarge,
            _ => Status::BadRequest,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Malformed::Framing(FramingFlaw::ContentLengthWithTransferEncoding) => {
                "ambiguous_framing"
            }
            Malformed::Framing(FramingFlaw::DuplicateContentLength) | Malformed::ContentLength => {
                "bad_content_length"
            }
            Malformed::TransferEncoding => "bad_transfer_encoding",
            Malformed::TooManyHeaders { .. } => "headers_too_many",
            Malformed::HeadTooLarge { .. } => "headers_too_large",
            Malformed::Target(TargetError::Userinfo) => "credentials_in_url",
            Malformed::Target(_) | Malformed::MissingHost => "bad_target",
            Malformed::Scheme(_) => "unsupported_scheme",
            Malformed::Path(p) => p.code(),
            Malformed::Body => "bad_request_body",
            Malformed::BodyStalled(_) => "body_read_timeout",
            Malformed::Subagent { code, .. } => code,
            Malformed::Method => "bad_method",
            Malformed::LocalBodyTooLarge(_) => "body_too_large",
        }
    }

    fn detail(&self) -> Cow<'static, str> {
        match self {
            Malformed::Framing(FramingFlaw::ContentLengthWithTransferEncoding) => {
                "both Content-Length and Transfer-Encoding are present".into()
            }
            Malformed::Framing(FramingFlaw::DuplicateContentLength) => {
                "multiple Content-Length headers".into()
            }
            Malformed::ContentLength => "Content-Length must be a single decimal number".into(),
            Malformed::TransferEncoding => "Transfer-Encoding must be exactly `chunked`".into(),
            Malformed::TooManyHeaders { count, max } => {
                format!("request has {count} headers; the limit is {max}").into()
            }
            Malformed::HeadTooLarge { max } => format!("request head exceeds {max} bytes").into(),
            Malformed::Target(e) => e.to_string().into(),
            Malformed::MissingHost => "request inside the tunnel has no Host".into(),
            Malformed::Scheme(why) => (*why).into(),
            Malformed::Path(e) => e.to_string().into(),
            Malformed::Body => "the request body could not be read".into(),
            Malformed::BodyStalled(d) => {
                format!("the request body stalled: nothing received for {d:?}").into()
            }
            Malformed::Subagent { detail, .. } => detail.clone().into(),
            Malformed::Method => "CONNECT inside an intercepted tunnel is not supported".into(),
            Malformed::LocalBodyTooLarge(max) => format!("request body exceeds {max} bytes").into(),
        }
    }
}

/// A failure to read the request body: 408 when it stalled, else 400.
pub(crate) fn body_refusal(
    e: &(dyn std::error::Error + 'static),
    timeout: std::time::Duration,
) -> Refusal {
    if crate::body::is_body_read_timeout(e) {
        Malformed::BodyStalled(timeout).into()
    } else {
        Malformed::Body.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for c in Cause::ALL {
            assert!(seen.insert(c), "{c:?} twice");
        }
    }

    #[test]
    fn verdicts_come_from_the_cause() {
        let allowed = Decision::allow_unconditionally("d1".into());
        assert_eq!(Refusal::Port(25).verdict(Some(&allowed)), Verdict::Deny);
        assert_eq!(
            Refusal::Upstream(Upstream::Protocol).verdict(Some(&allowed)),
            Verdict::Allow
        );
        assert_eq!(
            Refusal::Upstream(Upstream::Protocol).verdict(None),
            Verdict::Error
        );
        assert_eq!(Refusal::NotFound.verdict(None), Verdict::Error);
        let disabled = AuthFailure {
            kind: AuthFailureKind::Disabled,
            code: "agent_disabled",
            detail: "agent disabled".into(),
            reason: "agent_disabled",
        };
        assert_eq!(Refusal::Auth(disabled).verdict(None), Verdict::Deny);
    }
}
