//! Building responses: JSON bodies, the one error shape, and the mapping of store
//! errors to statuses (in one place).

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use portcullis_core::{ApiError, ErrorSource, Status};
use portcullis_store::StoreError;
use serde_json::{json, Value};
use tracing::warn;

/// A JSON response with a trailing newline.
pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The JSON error body `{"detail","code",...}` with the error's status.
pub(crate) fn error(e: ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.to_json(None))
}

/// Marks a response as never to be cached (admin API answers may carry secrets).
pub(crate) fn no_store(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 404 `not_found` for an agent id, identical whether the agent does not exist or
/// belongs to another tenant.
pub(crate) fn agent_not_found() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "not_found",
        "agent not found",
        ErrorSource::Client,
    )
}

/// Maps a store error to the admin API answer; internals are logged, never answered.
pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict { what, id } => ApiError::new(
            Status::Conflict,
            "conflict",
            format!("{what} {id:?} already exists"),
            ErrorSource::Client,
        ),
        StoreError::NotFound { what: "agent", .. } => agent_not_found(),
        StoreError::NotFound { what, .. } => ApiError::new(
            Status::NotFound,
            "not_found",
            format!("{what} not found"),
            ErrorSource::Client,
        ),
        StoreError::Invalid { what, reason } => ApiError::new(
            Status::Unprocessable,
            "validation_error",
            format!("{what}: {reason}"),
            ErrorSource::Client,
        )
        .with("errors", json!([{"field": what, "reason": reason}])),
        other => {
            warn!(error = %other, "store operation failed");
            ApiError::internal("store operation failed")
        }
    }
}
