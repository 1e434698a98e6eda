//! Reading request bodies with a size cap and a deadline, and the JSON object they hold.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::Request;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use portcullis_core::{ApiError, ErrorSource, Status};
use serde_json::{Map, Value};
use std::time::Duration;

/// Largest request body the admin API accepts (64 KiB); larger is 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn too_large() -> ApiError {
    ApiError::new(
        Status::PayloadTooLarge,
        "payload_too_large",
        "request body exceeds 64 KiB",
        ErrorSource::Client,
    )
}

/// Reads the whole body (at most [`MAX_BODY_BYTES`]).
pub(crate) async fn read_json_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            Status::RequestTimeout,
            "request_timeout",
            "request body not received in time",
            ErrorSource::Client,
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request(
            "invalid_request",
            "request body could not be read",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses a body that must be one JSON object: 400 `invalid_json` when it is not JSON,
/// 400 `invalid_request` when it is JSON of another type.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_request",
            "body must be a JSON object",
        )),
        Err(_) => Err(ApiError::bad_request(
            "invalid_json",
            "body is not valid JSON",
        )),
    }
}
