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
    /// HTTP status code.
    pub status: u16,
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
        status: u16,
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

    /// Sets the `Retry-After` seconds (at least 1).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// 400 from a malformed client request.
    pub fn bad_request(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, code, detail, ErrorSource::Client)
    }

    /// 403 forbidden (policy, SSRF guard, port).
    pub fn forbidden(code: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(403, code, detail, ErrorSource::Policy)
    }

    /// 500 internal error; the detail must not leak internals.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(500, "internal_error", detail, ErrorSource::Internal)
    }

    /// Adds an extra top-level field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Whether a client may retry (429 and 5xx only).
    pub fn retryable(&self) -> bool {
        self.status == 429 || self.status >= 500
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
                        "type": anthropic_type(self.status),
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

fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 | 407 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
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
        let e = ApiError::new(429, "auth_throttled", "slow down", ErrorSource::Client)
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
        let e = ApiError::new(429, "rate_limited", "slow down", ErrorSource::Policy);
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
}
