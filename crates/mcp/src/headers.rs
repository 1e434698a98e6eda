//! The HTTP headers of the streamable HTTP transport that the gateway reads: `Mcp-Method` and
//! `Mcp-Name` (SEP-2243, part of the 2026-07-28 revision) checked against the body, and the
//! `Accept` header that decides whether an answer may be JSON or must be an SSE stream.
//!
//! The mirrored headers exist so intermediaries can route without reading the body. A gateway
//! that decides must not trust them: it decides on the body and refuses a request whose headers
//! say something else, so no header can steer a decision.

use crate::message::{Body, Kind};
use base64::Engine as _;

/// `Mcp-Method`: the JSON-RPC method, mirrored.
pub const MCP_METHOD: &str = "mcp-method";
/// `Mcp-Name`: the tool or prompt name, or the resource URI, mirrored.
pub const MCP_NAME: &str = "mcp-name";
/// `Mcp-Session-Id` (2025-03-26 to 2025-11-25 revisions).
pub const MCP_SESSION_ID: &str = "mcp-session-id";
/// `MCP-Protocol-Version` (since the 2025-06-18 revision).
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";

const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

/// A mirrored header that does not match the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header} does not match the request body: {why}")]
pub struct HeaderMismatch {
    /// `Mcp-Method` or `Mcp-Name`.
    pub header: &'static str,
    /// What differs.
    pub why: String,
}

/// Decodes an `Mcp-Name` value: `=?base64?...?=` (markers case-sensitive, standard alphabet,
/// UTF-8 payload) or the value as sent. `None` when the sentinel's payload is not valid.
pub fn decode_name(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    match text
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|r| r.strip_suffix(SENTINEL_SUFFIX))
    {
        Some(payload) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(text.to_owned()),
    }
}

/// Checks `Mcp-Method` and `Mcp-Name` (every value of each, as received) against `body`.
/// Absent headers are fine (older revisions do not send them). A present header must match
/// every message it can describe: `Mcp-Method` each message's method (a response has none, so
/// it cannot match), `Mcp-Name` each request's name; several values of one header never match.
pub fn check_mirrored(
    methods: &[&[u8]],
    names: &[&[u8]],
    body: &Body,
) -> Result<(), HeaderMismatch> {
    let single = |header: &'static str, values: &[&[u8]]| -> Result<Option<Vec<u8>>, _> {
        match values {
            [] => Ok(None),
            [one] => Ok(Some(one.to_vec())),
            _ => Err(HeaderMismatch {
                header,
                why: "the header is repeated".into(),
            }),
        }
    };
    if let Some(m) = single("Mcp-Method", methods)? {
        for msg in &body.messages {
            let ok = msg.method.as_deref().map(str::as_bytes) == Some(m.as_slice());
            if !ok {
                return Err(HeaderMismatch {
                    header: "Mcp-Method",
                    why: format!(
                        "header {:?}, body {:?}",
                        String::from_utf8_lossy(&m),
                        msg.method.as_deref().unwrap_or("(a response)")
                    ),
                });
            }
        }
    }
    if let Some(n) = single("Mcp-Name", names)? {
        let Some(decoded) = decode_name(&n) else {
            return Err(HeaderMismatch {
                header: "Mcp-Name",
                why: "the base64 value is not valid UTF-8 base64".into(),
            });
        };
        for msg in body.messages.iter().filter(|m| m.kind != Kind::Response) {
            if msg.name.as_deref() != Some(decoded.as_str()) {
                return Err(HeaderMismatch {
                    header: "Mcp-Name",
                    why: format!(
                        "header {decoded:?}, body {:?}",
                        msg.name.as_deref().unwrap_or("(no name)")
                    ),
                });
            }
        }
        if body.messages.iter().all(|m| m.kind == Kind::Response) {
            return Err(HeaderMismatch {
                header: "Mcp-Name",
                why: "the body names nothing".into(),
            });
        }
    }
    Ok(())
}

/// Whether an answer to a request with this `Accept` must be an SSE stream: the client
/// accepts `text/event-stream` and not `application/json` (media ranges and `q=0` honoured).
/// No `Accept` means JSON.
pub fn sse_only(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let (mut json, mut sse) = (false, false);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "*/*" => {
                json = true;
                sse = true;
            }
            "application/json" | "application/*" => json = true,
            "text/event-stream" | "text/*" => sse = true,
            _ => {}
        }
    }
    sse && !json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse_body, Limits};
    use serde_json::json;

    fn body(v: serde_json::Value) -> Body {
        parse_body(v.to_string().as_bytes(), &Limits::default()).unwrap()
    }

    fn call(name: &str) -> Body {
        body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name}}))
    }

    #[test]
    fn matching_and_absent_headers_pass() {
        let b = call("list_issues");
        assert_eq!(check_mirrored(&[], &[], &b), Ok(()));
        assert_eq!(
            check_mirrored(&[b"tools/call"], &[b"list_issues"], &b),
            Ok(())
        );
        let uni = call("t\u{f6}\u{f6}l");
        let enc = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("t\u{f6}\u{f6}l")
        );
        assert_eq!(check_mirrored(&[], &[enc.as_bytes()], &uni), Ok(()));
    }

    #[test]
    fn spoofed_headers_are_refused() {
        let b = call("delete_repository");
        let e = check_mirrored(&[], &[b"list_issues"], &b).unwrap_err();
        assert_eq!(e.header, "Mcp-Name");
        assert!(check_mirrored(&[b"tools/list"], &[], &b).is_err());
        assert!(check_mirrored(&[b"Tools/Call"], &[], &b).is_err(), "case");
        assert!(check_mirrored(&[b"tools/call", b"tools/call"], &[], &b).is_err());
        assert!(check_mirrored(&[], &[b"delete_repository", b"x"], &b).is_err());
        // The markers are case-sensitive: an upper-case sentinel is a literal value.
        let upper = format!(
            "=?BASE64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("delete_repository")
        );
        assert!(check_mirrored(&[], &[upper.as_bytes()], &b).is_err());
        assert!(check_mirrored(&[], &[b"=?base64?!!!?="], &b).is_err());
        // A name on a method without one.
        let list = body(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
        assert!(check_mirrored(&[], &[b"anything"], &list).is_err());
        let resp = body(json!({"jsonrpc":"2.0","id":1,"result":{}}));
        assert!(check_mirrored(&[b"tools/call"], &[], &resp).is_err());
        assert!(check_mirrored(&[], &[b"x"], &resp).is_err());
    }

    #[test]
    fn a_header_must_describe_every_message_of_a_batch() {
        let b = body(json!([
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}
        ]));
        assert!(check_mirrored(&[b"tools/call"], &[], &b).is_ok());
        assert!(check_mirrored(&[], &[b"a"], &b).is_err());
    }

    #[test]
    fn decodes_names() {
        assert_eq!(decode_name(b"plain").as_deref(), Some("plain"));
        assert_eq!(
            decode_name(b"=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").as_deref(),
            Some("=?base64?literal?=")
        );
        assert_eq!(decode_name(b"=?base64?/w==?="), None, "not UTF-8");
        assert_eq!(decode_name(b"\xff"), None);
    }

    #[test]
    fn accept_negotiation() {
        assert!(!sse_only(None));
        assert!(!sse_only(Some("application/json, text/event-stream")));
        assert!(sse_only(Some("text/event-stream")));
        assert!(sse_only(Some("Text/Event-Stream;q=1")));
        assert!(sse_only(Some("text/event-stream, application/json;q=0")));
        assert!(!sse_only(Some("*/*")));
        assert!(!sse_only(Some("application/*, text/*")));
        assert!(!sse_only(Some("text/event-stream;q=0, application/json")));
        assert!(!sse_only(Some("text/html")));
    }
}
