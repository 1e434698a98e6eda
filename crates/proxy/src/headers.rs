//! Header hygiene: hop-by-hop stripping and request framing checks.

use crate::framing::FramingFlaw;
use crate::refusal::Malformed;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // h2c's upgrade settings (RFC 7540 §3.2.1): hop-by-hop by definition.
    HeaderName::from_static("http2-settings"),
];

/// Header naming the sub-agent acting under the authenticated agent.
pub const SUBAGENT_HEADER: &str = "x-portcullis-subagent";

/// Prefix of the gateway's own control headers, removed from every forwarded request.
pub const PORTCULLIS_PREFIX: &str = "x-portcullis-";

/// Removes hop-by-hop headers: `Connection` and every header it names, the fixed
/// list above, and `TE` unless it is exactly `trailers`. When `upgrade` is set
/// (a WebSocket upgrade being performed) `Upgrade` survives with `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes every `x-portcullis-*` header (control headers meant for the gateway).
pub fn strip_portcullis_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PORTCULLIS_PREFIX))
        .cloned()
        .collect();
    for k in ours {
        headers.remove(k);
    }
}

pub use portcullis_core::wants_upgrade;

/// Size of the request head as received: request line, headers and CRLFs.
pub fn head_size(req: &http::request::Parts) -> usize {
    let uri = req.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri.scheme_str().map_or(0, |s| s.len() + 3)
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    let line = req.method.as_str().len() + uri + 12;
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
        + 2
}

/// Enforces head limits (431) and unambiguous framing (400): one Content-Length
/// made of digits, `Transfer-Encoding` only as exactly `chunked`, never both.
pub fn check_request(
    req: &http::request::Parts,
    max_header_bytes: usize,
    max_headers: usize,
) -> Result<(), Malformed> {
    let h = &req.headers;
    if h.len() > max_headers {
        return Err(Malformed::TooManyHeaders {
            count: h.len(),
            max: max_headers,
        });
    }
    if head_size(req) > max_header_bytes {
        return Err(Malformed::HeadTooLarge {
            max: max_header_bytes,
        });
    }
    let mut cls = h.get_all(header::CONTENT_LENGTH).iter();
    let cl = cls.next();
    if cls.next().is_some() {
        return Err(Malformed::Framing(FramingFlaw::DuplicateContentLength));
    }
    if let Some(cl) = cl {
        let b = cl.as_bytes();
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return Err(Malformed::ContentLength);
        }
    }
    let mut tes = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = tes.next() {
        if cl.is_some() {
            return Err(Malformed::Framing(
                FramingFlaw::ContentLengthWithTransferEncoding,
            ));
        }
        if tes.next().is_some() || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Malformed::TransferEncoding);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("http://example.com/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut r = req(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic YTpi"),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept-encoding", "gzip, br"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(r.headers_mut(), false);
        // HeaderMap iteration order is unspecified after removals.
        let mut names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["accept-encoding", "content-type"]);
        assert_eq!(r.headers()["accept-encoding"], "gzip, br");
    }

    #[test]
    fn keeps_te_trailers_and_performed_upgrade() {
        let mut r = req(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(r.headers_mut(), true);
        assert_eq!(r.headers()["te"], "trailers");
        assert_eq!(r.headers()["upgrade"], "websocket");
        assert_eq!(r.headers()["connection"], "upgrade");
        assert_eq!(r.headers()["sec-websocket-key"], "k");
    }

    #[test]
    fn strips_portcullis_headers() {
        let mut r = req(&[
            ("x-portcullis-subagent", "a"),
            ("X-Portcullis-Whatever", "b"),
            ("x-portcullisnot", "c"),
        ]);
        strip_portcullis_headers(r.headers_mut());
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-portcullisnot"]);
    }

    #[test]
    fn upgrade_detection() {
        assert!(wants_upgrade(
            req(&[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket")
            ])
            .headers()
        ));
        assert!(!wants_upgrade(req(&[("upgrade", "websocket")]).headers()));
        assert!(!wants_upgrade(req(&[("connection", "upgrade")]).headers()));
    }

    #[test]
    fn framing() {
        let code = |h: &[(&str, &str)]| {
            check_request(&req(h).into_parts().0, 65536, 100)
                .err()
                .map(|e| {
                    let r = crate::refusal::Refusal::Malformed(e);
                    (r.status().code(), r.code().to_owned())
                })
        };
        assert_eq!(code(&[("content-length", "10")]), None);
        assert_eq!(code(&[("transfer-encoding", "chunked")]), None);
        assert_eq!(code(&[("transfer-encoding", "Chunked")]), None);
        let bad = [
            (
                vec![("content-length", "10"), ("transfer-encoding", "chunked")],
                "ambiguous_framing",
            ),
            (
                vec![("content-length", "1"), ("content-length", "2")],
                "bad_content_length",
            ),
            (vec![("content-length", "1, 1")], "bad_content_length"),
            (vec![("content-length", "-1")], "bad_content_length"),
            (vec![("content-length", "+5")], "bad_content_length"),
            (
                vec![("transfer-encoding", "chunked, identity")],
                "bad_transfer_encoding",
            ),
            (
                vec![("transfer-encoding", "xchunked")],
                "bad_transfer_encoding",
            ),
            (
                vec![
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                "bad_transfer_encoding",
            ),
            (
                vec![("transfer-encoding", "identity")],
                "bad_transfer_encoding",
            ),
        ];
        for (h, want) in bad {
            assert_eq!(code(&h), Some((400, want.to_owned())), "{h:?}");
        }
    }

    #[test]
    fn head_limits() {
        let big = "a".repeat(2000);
        let e = crate::refusal::Refusal::Malformed(
            check_request(&req(&[("x-big", &big)]).into_parts().0, 1024, 100).unwrap_err(),
        );
        assert_eq!((e.status().code(), e.code()), (431, "headers_too_large"));
        let many: Vec<(String, String)> =
            (0..20).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let e = crate::refusal::Refusal::Malformed(
            check_request(&req(&many).into_parts().0, 65536, 10).unwrap_err(),
        );
        assert_eq!((e.status().code(), e.code()), (431, "headers_too_many"));
    }
}
