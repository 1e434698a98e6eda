//! The JSON-RPC error codes of the gateway's answers (a leaf: the parser and the answers
//! both use them).

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// A mirrored header does not match the body (SEP-2243 `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32001;
/// Refused by the gateway's policy (a server-defined code of the implementation range).
pub const POLICY_DENIED: i64 = -32003;
