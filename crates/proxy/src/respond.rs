//! Refusals to responses: JSON body (with the provider's error envelope for LLM APIs),
//! `X-Portcullis-Error`, a descriptive reason phrase (clients rarely show CONNECT bodies) and
//! the headers each cause needs (`Proxy-Authenticate`, `Retry-After`, `X-RateLimit-*`,
//! `X-Portcullis-Decision-Id`, `Connection: close`).

use crate::body::{full, ProxyBody};
use crate::refusal::{AuthFailureKind, Refusal, Stub};
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, PROXY_AUTHENTICATE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use hyper::ext::ReasonPhrase;
use portcullis_core::{ApiError, ErrorEnvelope};

/// Header carrying the machine code of a gateway-generated error.
pub const X_PORTCULLIS_ERROR: &str = "x-portcullis-error";
/// Header carrying the decision id of a policy decision.
pub const X_PORTCULLIS_DECISION_ID: &str = "x-portcullis-decision-id";

/// The answer to `refusal`, with `envelope` for a recognised LLM API.
pub fn refusal_response(refusal: &Refusal, envelope: Option<ErrorEnvelope>) -> Response<ProxyBody> {
    let status = refusal.status();
    let code = refusal.code();
    let body = match refusal {
        // An MCP client reads a JSON-RPC error (no id: the body could not be read as one).
        Refusal::Mcp(m) => portcullis_mcp::answer::error_response(
            None,
            m.rpc_code,
            &m.detail,
            Some(serde_json::json!({"code": code, "detail": m.detail})),
        )
        .to_string()
        .into_bytes(),
        _ => {
            let mut err = ApiError::new(status, code, refusal.detail(), refusal.source());
            err.extra = refusal.extra();
            err.to_body(envelope)
        }
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() =
        StatusCode::from_u16(status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(X_PORTCULLIS_ERROR, HeaderValue::from_static(code));
    cause_headers(refusal, h);
    if let Ok(phrase) = ReasonPhrase::try_from(reason_phrase(code).into_bytes()) {
        resp.extensions_mut().insert(phrase);
    }
    resp
}

/// A denied MCP body's answer: 200 with the JSON-RPC answers, `X-Portcullis-Blocked: true`,
/// the error code and the decision id.
pub fn mcp_denied_response(d: &crate::refusal::McpDenied) -> Response<ProxyBody> {
    let mut r = Response::new(full(d.answer.body.clone()));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(d.answer.content_type),
    );
    h.insert("x-portcullis-blocked", HeaderValue::from_static("true"));
    h.insert(
        X_PORTCULLIS_ERROR,
        HeaderValue::from_static(d.decision.refusal_code()),
    );
    if let Ok(v) = HeaderValue::from_str(&d.decision.decision_id) {
        h.insert(X_PORTCULLIS_DECISION_ID, v);
    }
    r
}

/// A policy's provider-shaped stub: 200 with `X-Portcullis-Blocked: true` and the decision id.
pub fn stub_response(stub: &Stub, decision_id: Option<&str>) -> Response<ProxyBody> {
    let mut r = Response::new(full(stub.body.clone()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(stub.content_type));
    h.insert("x-portcullis-blocked", HeaderValue::from_static("true"));
    if let Some(v) = decision_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert(X_PORTCULLIS_DECISION_ID, v);
    }
    r
}

fn cause_headers(refusal: &Refusal, h: &mut HeaderMap) {
    match refusal {
        Refusal::Auth(a) => match a.kind {
            AuthFailureKind::Unauthenticated => {
                h.insert(
                    PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"portcullis\""),
                );
            }
            AuthFailureKind::Throttled { retry_after_secs } => {
                h.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            AuthFailureKind::Disabled => {}
        },
        Refusal::Policy(d) => {
            if let Ok(v) = HeaderValue::from_str(&d.decision_id) {
                h.insert(X_PORTCULLIS_DECISION_ID, v);
            }
        }
        Refusal::Overloaded | Refusal::LimitsUnavailable(_) => {
            h.insert(RETRY_AFTER, HeaderValue::from(1u64));
        }
        Refusal::Limited(r) => {
            h.insert(RETRY_AFTER, HeaderValue::from(r.retry_after_secs.max(1)));
            set_rate_headers(h, r.limit_value, 0, r.reset_unix);
            if r.never_fits {
                // The OpenAI and Anthropic SDKs honour this instead of retrying in vain.
                h.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        _ => {}
    }
    if refusal.closes_connection() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// `resp` as HTTP/1.1 bytes, for a connection no HTTP server runs on (it is only answered
/// and closed). The body is complete in memory; `Content-Length` is set from it.
pub async fn to_wire(resp: Response<ProxyBody>) -> Vec<u8> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let phrase = parts
        .extensions
        .get::<ReasonPhrase>()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("").to_owned());
    let mut out = format!("HTTP/1.1 {} {phrase}\r\n", parts.status.as_u16()).into_bytes();
    for (k, v) in &parts.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Sets `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix seconds),
/// replacing any the upstream sent: the client is bound by the gateway's limit.
pub fn set_rate_headers(h: &mut HeaderMap, limit: u64, remaining: u64, reset_unix: u64) {
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset_unix));
}

/// `destination_forbidden` → `Destination Forbidden`.
pub fn reason_phrase(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    for (i, word) in code.split('_').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut chars = word.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::AuthFailure;
    use portcullis_limits::{LimitKind, Refusal as LimitRefusal, ScopeKind};

    #[test]
    fn phrases() {
        assert_eq!(
            reason_phrase("destination_forbidden"),
            "Destination Forbidden"
        );
        assert_eq!(reason_phrase("upstream_timeout"), "Upstream Timeout");
        assert_eq!(reason_phrase("x"), "X");
    }

    #[test]
    fn rate_limited_has_retry_after_and_rate_headers() {
        let mut limit = LimitRefusal {
            limit: LimitKind::Tpm,
            scope: ScopeKind::Agent,
            limit_value: 1000,
            remaining: 0,
            requested: 300,
            retry_after_secs: 7,
            reset_unix: 1_900_000_000,
            never_fits: false,
            unpriced: false,
        };
        let r = refusal_response(&Refusal::Limited(limit.clone()), None);
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["x-ratelimit-limit"], "1000");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "1900000000");
        assert_eq!(h["x-portcullis-error"], "rate_limited");
        assert!(h.get("x-should-retry").is_none());
        limit.never_fits = true;
        let r = refusal_response(&Refusal::Limited(limit), None);
        assert_eq!(r.headers()["x-should-retry"], "false");
    }

    #[test]
    fn auth_required_has_challenge() {
        let e = Refusal::Auth(AuthFailure {
            kind: AuthFailureKind::Unauthenticated,
            code: "proxy_auth_required",
            detail: "credentials required".into(),
            reason: "missing",
        });
        let r = refusal_response(&e, None);
        assert_eq!(r.status(), 407);
        assert_eq!(
            r.headers()["proxy-authenticate"],
            "Basic realm=\"portcullis\""
        );
        assert_eq!(r.headers()["x-portcullis-error"], "proxy_auth_required");
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
