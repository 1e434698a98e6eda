//! The one JSON error shape every Portcullis surface answers with.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Where an error came from; decides metric labels and whether it is retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The client sent something we refuse (4xx).
    Client,
    /// The upstream failed or timed out (502/504).
    Upstream,
    /// A policy, identity or limit decision refused the request.
    Policy,
    /// A bug or resource problem inside the gateway (500/503).
    Internal,
}

/// The HTTP status of an answer, by meaning. [`Status::code`] is the one place the numbers
/// live; everything that decides an answer names a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 200: an established tunnel (a tunnel the gateway later closed is recorded with it).
    Ok,
    /// 400: the request is malformed.
    BadRequest,
    /// 401: the caller did not authenticate (admin API, token endpoint).
    Unauthorized,
    /// 403: authenticated but refused (policy, SSRF guard, port, role).
    Forbidden,
    /// 404: no such resource.
    NotFound,
    /// 405: the method is not allowed on this path.
    MethodNotAllowed,
    /// 407: the proxy needs (valid) agent credentials.
    ProxyAuthRequired,
    /// 408: the client was too slow to send its request.
    RequestTimeout,
    /// 409: the resource already exists or changed meanwhile.
    Conflict,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 414: the request target is longer than allowed.
    UriTooLong,
    /// 422: well-formed but invalid content.
    Unprocessable,
    /// 429: a rate limit, budget or throttle refused the request.
    TooManyRequests,
    /// 431: the request headers are larger than allowed.
    HeadersTooLarge,
    /// 500: a bug or resource problem inside the gateway.
    Internal,
    /// 502: the upstream failed.
    BadGateway,
    /// 503: a dependency (store, audit, policy) is unavailable.
    ServiceUnavailable,
    /// 504: the upstream timed out.
    GatewayTimeout,
}

impl Status {
    /// The HTTP status code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::ProxyAuthRequired => 407,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UriTooLong => 414,
            Self::Unprocessable => 422,
            Self::TooManyRequests => 429,
            Self::HeadersTooLarge => 431,
            Self::Internal => 500,
            Self::BadGateway => 502,
            Self::ServiceUnavailable => 503,
            Self::GatewayTimeout => 504,
        }
    }

    /// Whether a client may retry: rate limits and server-side failures.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            Self::TooManyRequests
                | Self::Internal
                | Self::BadGateway
                | Self::ServiceUnavailable
                | Self::GatewayTimeout
        )
    }

    /// The Anthropic error `type` for this status.
    fn anthropic_type(self) -> &'static str {
        match self {
            Self::BadRequest | Self::Unprocessable => "invalid_request_error",
            Self::Unauthorized | Self::ProxyAuthRequired => "authentication_error",
            Self::Forbidden => "permission_error",
            Self::NotFound => "not_found_error",
            Self::PayloadTooLarge => "request_too_large",
            Self::TooManyRequests => "rate_limit_error",
            Self::ServiceUnavailable => "overloaded_error",
            _ => "api_error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Which provider's error envelope to add so the provider SDK shows our reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorEnvelope {
    /// `{"error": {"message","type","code"}}`
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`
    Anthropic,
}

/// An error answered to a client: status, machine code, human detail and
/// optional extra fields (`policy`, `decision_id`, `limit`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status; [`ApiError::status_code`] gives the number.
    pub status: Status,
    /// Stable machine readable code, e.g. `policy_denied`.
    pub code: Cow<'static, str>,
    /// Human readable explanation.
    pub detail: Cow<'static, str>,
    /// Where the error came from.
    pub source: ErrorSource,
    /// Extra top-level JSON fields.
    pub extra: Map<String, Value>,
    /// Seconds after which a retry may succeed; answered as `Retry-After` (429, 503).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(
        status: Status,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
        source: ErrorSource,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            source,
            extra: Map::new(),
            retry_after_secs: None,
        }
    }

    /// The HTTP status code, for the layers that write the response.
    pub fn status_code(&self) -> u16 {
        self.status.code()
    }

    /// Sets the `Retry-After` seconds (at least 1).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// 400 from a malformed client request.
    pub fn bad_request(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Status::BadRequest, code, detail, ErrorSource::Client)
    }

    /// 403 forbidden (policy, SSRF guard, port).
    pub fn forbidden(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Status::Forbidden, code, detail, ErrorSource::Policy)
    }

    /// 500 internal error; the detail must not leak internals.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            Status::Internal,
            "internal_error",
            detail,
            ErrorSource::Internal,
        )
    }

    /// Adds an extra top-level field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Whether a client may retry (429 and 5xx only).
    pub fn retryable(&self) -> bool {
        self.status.retryable()
    }

    /// The JSON body, optionally with a provider envelope.
    pub fn to_json(&self, envelope: Option<ErrorEnvelope>) -> Value {
        let mut m = Map::with_capacity(3 + self.extra.len());
        m.insert("detail".into(), Value::from(self.detail.as_ref()));
        m.insert("code".into(), Value::from(self.code.as_ref()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        match envelope {
            None => {}
            Some(ErrorEnvelope::OpenAi) => {
                m.insert(
                    "error".into(),
                    serde_json::json!({
                        "message": self.detail.as_ref(),
                        "type": self.code.as_ref(),
                        "code": self.code.as_ref(),
                    }),
                );
            }
            Some(ErrorEnvelope::Anthropic) => {
                m.insert("type".into(), Value::from("error"));
                m.insert(
                    "error".into(),
                    serde_json::json!({
                        "type": self.status.anthropic_type(),
                        "message": self.detail.as_ref(),
                    }),
                );
            }
        }
        Value::Object(m)
    }

    /// The serialized JSON body.
    pub fn to_body(&self, envelope: Option<ErrorEnvelope>) -> Vec<u8> {
        let mut v = serde_json::to_vec(&self.to_json(envelope)).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_body() {
        let e = ApiError::forbidden("policy_denied", "model not allowed")
            .with("policy", "models")
            .with("decision_id", "d1");
        assert_eq!(
            e.to_json(None),
            json!({"detail":"model not allowed","code":"policy_denied","policy":"models","decision_id":"d1"})
        );
        assert!(!e.retryable());
        assert!(e.to_body(None).ends_with(b"}\n"));
    }

    #[test]
    fn retry_after_is_kept_apart_from_the_body() {
        let e = ApiError::new(
            Status::TooManyRequests,
            "auth_throttled",
            "slow down",
            ErrorSource::Client,
        )
        .with_retry_after(0);
        assert_eq!(e.retry_after_secs, Some(1));
        assert_eq!(
            e.to_json(None),
            json!({"detail": "slow down", "code": "auth_throttled"})
        );
        assert_eq!(ApiError::internal("x").retry_after_secs, None);
    }

    #[test]
    fn envelopes() {
        let e = ApiError::new(
            Status::TooManyRequests,
            "rate_limited",
            "slow down",
            ErrorSource::Policy,
        );
        assert!(e.retryable());
        let o = e.to_json(Some(ErrorEnvelope::OpenAi));
        assert_eq!(o["error"]["message"], "slow down");
        assert_eq!(o["error"]["code"], "rate_limited");
        assert_eq!(o["code"], "rate_limited");
        let a = e.to_json(Some(ErrorEnvelope::Anthropic));
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "rate_limit_error");
        assert_eq!(a["detail"], "slow down");
    }

    #[test]
    fn status_numbers_and_display() {
        let table = [
            (Status::BadRequest, 400, false),
            (Status::Unauthorized, 401, false),
            (Status::Forbidden, 403, false),
            (Status::NotFound, 404, false),
            (Status::MethodNotAllowed, 405, false),
            (Status::ProxyAuthRequired, 407, false),
            (Status::RequestTimeout, 408, false),
            (Status::Conflict, 409, false),
            (Status::PayloadTooLarge, 413, false),
            (Status::UriTooLong, 414, false),
            (Status::Unprocessable, 422, false),
            (Status::TooManyRequests, 429, true),
            (Status::HeadersTooLarge, 431, false),
            (Status::Internal, 500, true),
            (Status::BadGateway, 502, true),
            (Status::ServiceUnavailable, 503, true),
            (Status::GatewayTimeout, 504, true),
        ];
        for (s, code, retry) in table {
            assert_eq!((s.code(), s.retryable()), (code, retry), "{s:?}");
            assert_eq!(s.to_string(), code.to_string());
        }
        let e = ApiError::forbidden("policy_denied", "no");
        assert_eq!(e.status_code(), 403);
        assert_eq!(e.to_string(), "403 policy_denied: no");
    }
}
