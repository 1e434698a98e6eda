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
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
    fn auth_required_has_challenge() {
        let e = ApiError::new(
            407,
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
