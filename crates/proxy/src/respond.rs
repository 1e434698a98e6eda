//! Errors to responses, in one place: JSON body, `X-Portcullis-Error`, a
//! descriptive reason phrase (clients rarely show CONNECT bodies) and, for 407,
//! `Proxy-Authenticate`.

use crate::body::{full, ProxyBody};
use http::header::{HeaderValue, CONTENT_TYPE, PROXY_AUTHENTICATE};
use http::{Response, StatusCode};
use hyper::ext::ReasonPhrase;
use portcullis_core::{ApiError, ErrorEnvelope};

/// Header carrying the machine code of a gateway-generated error.
pub const X_PORTCULLIS_ERROR: &str = "x-portcullis-error";
/// Header carrying the decision id of a policy decision.
pub const X_PORTCULLIS_DECISION_ID: &str = "x-portcullis-decision-id";

/// Builds the response for `err`.
pub fn error_response(err: &ApiError, envelope: Option<ErrorEnvelope>) -> Response<ProxyBody> {
    let status =
        StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(full(err.to_body(envelope)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&err.code) {
        h.insert(X_PORTCULLIS_ERROR, v);
    }
    if let Some(id) = err.extra.get("decision_id").and_then(|v| v.as_str()) {
        if let Ok(v) = HeaderValue::from_str(id) {
            h.insert(X_PORTCULLIS_DECISION_ID, v);
        }
    }
    if let Some(secs) = err.retry_after_secs {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.insert(
            PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portcullis\""),
        );
    }
    if let Ok(phrase) = ReasonPhrase::try_from(reason_phrase(&err.code).into_bytes()) {
        resp.extensions_mut().insert(phrase);
    }
    resp
}

/// Sets `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (Unix seconds),
/// replacing any the upstream sent: the client is bound by the gateway's limit.
pub fn set_rate_headers(h: &mut http::HeaderMap, limit: u64, remaining: u64, reset_unix: u64) {
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset_unix));
}

/// The 429 for a refused request: the JSON error (`code: rate_limited`, `limit`), the
/// `X-RateLimit-*` headers of the limit that refused and `Retry-After`. A request that can
/// never fit (it needs more than the whole limit) also gets `X-Should-Retry: false`, which the
/// OpenAI and Anthropic SDKs honour instead of retrying in vain.
pub fn rate_limited_response(
    refusal: &portcullis_limits::Refusal,
    envelope: Option<ErrorEnvelope>,
) -> Response<ProxyBody> {
    let mut resp = error_response(&refusal.to_api_error(), envelope);
    let h = resp.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(refusal.retry_after_secs.max(1)),
    );
    set_rate_headers(h, refusal.limit_value, 0, refusal.reset_unix);
    if refusal.never_fits {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    resp
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
    use portcullis_core::Status;

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
        use portcullis_limits::{LimitKind, Refusal, ScopeKind};
        let mut refusal = Refusal {
            limit: LimitKind::Tpm,
            scope: ScopeKind::Agent,
            limit_value: 1000,
            remaining: 0,
            requested: 300,
            retry_after_secs: 7,
            reset_unix: 1_900_000_000,
            never_fits: false,
        };
        let r = rate_limited_response(&refusal, None);
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["x-ratelimit-limit"], "1000");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "1900000000");
        assert_eq!(h["x-portcullis-error"], "rate_limited");
        assert!(h.get("x-should-retry").is_none());
        refusal.never_fits = true;
        let r = rate_limited_response(&refusal, None);
        assert_eq!(r.headers()["x-should-retry"], "false");
    }

    #[test]
    fn retry_after_of_an_error_becomes_the_header() {
        let e = ApiError::new(
            Status::TooManyRequests,
            "auth_throttled",
            "too many failed authentications",
            portcullis_core::ErrorSource::Client,
        )
        .with_retry_after(12);
        let r = error_response(&e, None);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "12");
        assert_eq!(r.headers()["x-portcullis-error"], "auth_throttled");
        assert!(r.headers().get("proxy-authenticate").is_none());
        let plain = error_response(&ApiError::internal("x"), None);
        assert!(plain.headers().get("retry-after").is_none());
    }

    #[test]
    fn auth_required_has_challenge() {
        let e = ApiError::new(
            Status::ProxyAuthRequired,
            "proxy_auth_required",
            "credentials required",
            portcullis_core::ErrorSource::Client,
        );
        let r = error_response(&e, None);
        assert_eq!(r.status(), 407);
        assert_eq!(
            r.headers()["proxy-authenticate"],
            "Basic realm=\"portcullis\""
        );
        assert_eq!(r.headers()["x-portcullis-error"], "proxy_auth_required");
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
