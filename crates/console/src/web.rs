//! HTTP plumbing of the console: the security headers every answer carries, page and
//! redirect answers, bounded form bodies, query strings, cookies and the same-origin check.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    ORIGIN,
};
use http::{Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use std::time::Duration;

/// Largest form body accepted (64 KiB, as the JSON API).
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The Content-Security-Policy of every console answer: nothing inline, nothing foreign.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// Adds the headers every console answer carries.
pub(crate) fn secure(headers: &mut HeaderMap) {
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// An HTML page: never cached (it may show what only this operator may see).
pub(crate) fn page(status: StatusCode, html: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// A plain-text answer (for failures before a page can be rendered).
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// 303 to `location`, a path of the console (callers build it; never taken from input
/// unchecked).
pub(crate) fn see_other(location: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    } else {
        h.insert(LOCATION, HeaderValue::from_static("/ui/"));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

/// Why a form body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Over [`MAX_FORM_BYTES`].
    TooLarge,
    /// Not received in time.
    Timeout,
    /// The connection failed mid-body.
    Unreadable,
}

impl BodyError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            BodyError::TooLarge => "The form is larger than 64 KiB.",
            BodyError::Timeout => "The form was not received in time.",
            BodyError::Unreadable => "The form could not be read.",
        }
    }
}

/// Reads a body of at most [`MAX_FORM_BYTES`] within a deadline.
pub(crate) async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let limited = Limited::new(body, MAX_FORM_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Decoded `application/x-www-form-urlencoded` pairs (a query string or a form body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form(pub(crate) Vec<(String, String)>);

impl Form {
    /// Parses `raw` (invalid UTF-8 is replaced, never a panic).
    pub(crate) fn parse(raw: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, trimmed; `None` when absent or blank.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first value of `key` untrimmed (for free text such as a JSON body).
    pub(crate) fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether a state-changing request comes from the console's own pages. A browser's
/// `Sec-Fetch-Site` decides when present (it must be `same-origin`): browsers send
/// `Origin: null` on form posts from a `no-referrer` page, so the fetch metadata is the
/// reliable signal. Without it, an `Origin` must name this host. A client that sends
/// neither (curl, scripts) is judged by the CSRF token alone.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[
            ("cookie", "a=1; portcullis_session=abc ; b=2"),
            ("cookie", "c=3"),
        ]);
        assert_eq!(cookie(&h, "portcullis_session"), Some("abc"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "portcullis"), None);
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn origin_checks() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "same-origin"),
        ])));
        // A form post from a no-referrer page: Origin null, fetch metadata same-origin.
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ])));
        for bad in [
            headers(&[
                ("host", "127.0.0.1:8081"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:8081"), ("origin", "null")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("origin", "http://127.0.0.1:8081")]),
        ] {
            assert!(!same_origin(&bad), "{bad:?}");
        }
    }

    #[test]
    fn forms_decode_and_trim() {
        let f = Form::parse(b"a=+x+&b=%3Cscript%3E&a=second&empty=&bad=%ff");
        assert_eq!(f.get("a"), Some("x"));
        assert_eq!(f.get("b"), Some("<script>"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.raw("empty"), Some(""));
        assert_eq!(f.get("bad"), Some("\u{fffd}"));
    }
}
