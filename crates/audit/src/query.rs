//! Decision-query parameters (admin `GET /v1/decisions`, `portcullis audit query`): pure
//! parsing into a [`portcullis_store::AuditQuery`], with a typed error the admin answers
//! as 422 JSON.

use portcullis_core::parse_rfc3339_ms;
use portcullis_core::{ApiError, ErrorSource, Status};
use portcullis_store::AuditQuery;
use serde_json::json;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 200;
/// Default look-back of `since`: 24 hours, in milliseconds.
pub const DEFAULT_SINCE_MS: i64 = 24 * 60 * 60 * 1000;

/// Parameters accepted by [`build_query`].
pub const PARAMS: [&str; 10] = [
    "agent_id", "subagent", "verdict", "policy", "provider", "model", "since", "until", "limit",
    "offset",
];

const VERDICTS: [&str; 5] = ["allow", "deny", "would_deny", "rate_limited", "error"];

/// A query parameter is out of range or malformed (422 `validation_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct QueryError {
    /// The offending parameter.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl QueryError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// 422 `validation_error` with `errors: [{field, reason}]`, as the admin API answers.
    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(
            Status::Unprocessable,
            "validation_error",
            self.to_string(),
            ErrorSource::Client,
        )
        .with(
            "errors",
            json!([{"field": self.field, "reason": self.reason}]),
        )
    }
}

/// Parses `field`'s point in time: RFC 3339 (`2026-01-02T03:04:05Z`, any offset,
/// optional fraction; a space where a `+` offset belongs is read as `+`, as form decoding
/// turns an unencoded `+` into a space) or relative to `now_ms` (`90s`, `30m`, `1h`, `7d`:
/// that long ago). Returns Unix milliseconds.
pub fn parse_time(field: &str, value: &str, now_ms: i64) -> Result<i64, QueryError> {
    if let Some(ago) = parse_relative(value) {
        return ago
            .and_then(|ms| now_ms.checked_sub(ms))
            .ok_or_else(|| QueryError::new(field, "relative time is too large"));
    }
    // An unencoded `+` offset arrives as a space after form decoding: take it back.
    let restored;
    let value = if value.contains(' ') {
        restored = value.replace(' ', "+");
        restored.as_str()
    } else {
        value
    };
    parse_rfc3339_ms(value).map_err(|_| {
        QueryError::new(
            field,
            format!("{value:?} is neither RFC 3339 nor a relative time like 30m, 1h or 7d"),
        )
    })
}

/// `Some(Some(ms))` for a relative time, `Some(None)` when it overflows, `None` when
/// `value` is not of the relative form.
fn parse_relative(value: &str) -> Option<Option<i64>> {
    let unit = value.chars().last()?;
    let unit_ms: i64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let digits = &value[..value.len() - 1];
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(n.checked_mul(unit_ms))
}

/// Builds the store query from the request's parameters (`params` as decoded key/value
/// pairs, in any order) for `tenant` (`None`: every tenant, CLI only), at `now_ms`.
///
/// `limit` is 1–200 (default 50), `offset` ≥ 0 (default 0), `since` defaults to 24 h
/// before `now_ms`, `until` to none; `verdict` must be a known verdict. An unknown or
/// repeated parameter, an empty value, or `since` after `until` is refused.
pub fn build_query<'a, I>(
    params: I,
    tenant: Option<&str>,
    now_ms: i64,
) -> Result<AuditQuery, QueryError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut q = AuditQuery {
        tenant: tenant.map(str::to_owned),
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut since = None;
    for (key, value) in params {
        let Some(&field) = PARAMS.iter().find(|p| **p == key) else {
            return Err(QueryError::new(
                key,
                format!("unknown parameter; expected one of {}", PARAMS.join(", ")),
            ));
        };
        if seen.contains(&field) {
            return Err(QueryError::new(field, "given more than once"));
        }
        seen.push(field);
        if value.is_empty() {
            return Err(QueryError::new(field, "must not be empty"));
        }
        let text = Some(value.to_owned());
        match field {
            "agent_id" => q.agent_id = text,
            "subagent" => q.subagent = text,
            "policy" => q.policy = text,
            "provider" => q.provider = text,
            "model" => q.model = text,
            "verdict" => {
                if !VERDICTS.contains(&value) {
                    return Err(QueryError::new(
                        field,
                        format!("must be one of {}", VERDICTS.join(", ")),
                    ));
                }
                q.verdict = text;
            }
            "since" => since = Some(parse_time(field, value, now_ms)?),
            "until" => q.until_ms = Some(parse_time(field, value, now_ms)?),
            "limit" => q.limit = parse_limit(value)?,
            _ => q.offset = parse_offset(value)?,
        }
    }
    let since = since.unwrap_or_else(|| now_ms.saturating_sub(DEFAULT_SINCE_MS));
    if q.until_ms.is_some_and(|until| until < since) {
        return Err(QueryError::new("until", "must not be before since"));
    }
    q.since_ms = Some(since);
    Ok(q)
}

fn parse_limit(value: &str) -> Result<u32, QueryError> {
    match parse_uint(value) {
        Some(n) if (1..=u64::from(MAX_LIMIT)).contains(&n) => {
            u32::try_from(n).map_err(|_| QueryError::new("limit", "out of range"))
        }
        _ => Err(QueryError::new(
            "limit",
            format!("must be an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

fn parse_offset(value: &str) -> Result<u64, QueryError> {
    // The store binds offsets as i64.
    parse_uint(value)
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| QueryError::new("offset", "must be an integer of 0 or more"))
}

/// Plain decimal digits only: no sign, no spaces, no exponent.
fn parse_uint(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}
