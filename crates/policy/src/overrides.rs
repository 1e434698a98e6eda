//! `input.request.method_override`: the method a request asks an upstream to perform
//! instead of its own (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`,
//! `?_method=`). Frameworks such as Rails, Laravel, Express `method-override` and Google
//! APIs honour these, so a GET carrying `X-HTTP-Method-Override: POST` may be performed as
//! a POST: policy must see it. Derived the same way from the data plane's headers and
//! query and from a raw input document's `request.headers` and `request.query`.

use crate::input::{percent_decode, RequestFacts};
use serde_json::Value as Json;
use std::borrow::Cow;

impl RequestFacts<'_> {
    /// `input.request.method_override`: the method the request asks an upstream to
    /// perform instead of its own (see [`method_override`]), from the override headers
    /// and the `_method` query parameter.
    pub fn method_override(&self) -> Option<String> {
        // Borrowed header values, decoded parameter values: nothing is allocated for a
        // request without an override.
        let mut values: Vec<Cow<'_, [u8]>> = Vec::new();
        if let Some(h) = self.headers {
            for name in METHOD_OVERRIDE_HEADERS {
                values.extend(h.get_all(name).iter().map(|v| Cow::Borrowed(v.as_bytes())));
            }
        }
        // The parameter decodes to `_method`: its raw form holds `_` or an escape.
        if let Some(q) = self.query.filter(|q| q.contains(['_', '%'])) {
            for pair in q.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if percent_decode(k).eq_ignore_ascii_case(METHOD_OVERRIDE_PARAM) {
                    values.push(Cow::Owned(percent_decode(v).into_bytes()));
                }
            }
        }
        method_override(values.iter().map(|v| v.as_ref()))
    }
}

/// Request headers that ask an upstream to perform another method than the request
/// line's (frameworks such as Rails, Laravel, Express `method-override`, Google APIs).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Query parameter with the same meaning (matched case-insensitively after decoding).
pub const METHOD_OVERRIDE_PARAM: &str = "_method";

/// `input.request.method_override` when the override cannot be read as one method:
/// several different methods, or a value that is not an HTTP method token. Policies
/// must treat it as "any method" (the shipped catalog requires what no agent holds).
pub const AMBIGUOUS_METHOD: &str = "*";

/// Longest method token accepted in an override.
const MAX_METHOD_LEN: usize = 32;

/// The override asked for by `values` (every value of every override header and
/// `_method` parameter): `None` when there is none, the upper-cased method when they all
/// name the same one (a header value may list several, comma-separated), and
/// [`AMBIGUOUS_METHOD`] when they conflict or one is not a method token — which method
/// an upstream would pick is unknown, so it is the most privileged one.
pub fn method_override<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Option<String> {
    let mut found: Option<String> = None;
    for value in values {
        for item in value.split(|b| *b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            let token = item.len() <= MAX_METHOD_LEN
                && item
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b));
            if !token {
                return Some(AMBIGUOUS_METHOD.to_owned());
            }
            let upper = String::from_utf8_lossy(item).to_ascii_uppercase();
            match &found {
                Some(f) if *f != upper => return Some(AMBIGUOUS_METHOD.to_owned()),
                Some(_) => {}
                None => found = Some(upper),
            }
        }
    }
    found
}

/// Derives `request.method_override` of a raw input document from its `request.headers`
/// (any name case; a string or an array of strings) and `request.query` (`_method`, a
/// string or an array), replacing whatever the document says: the field is a fact the
/// gateway derives, never one a caller states. A header or parameter value of another
/// JSON type makes the override ambiguous (fail closed).
pub(crate) fn derive_method_override(doc: &mut Json) {
    let Some(req) = doc.get_mut("request").and_then(Json::as_object_mut) else {
        return;
    };
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut collect = |v: &Json| match v {
        Json::String(s) => values.push(s.as_bytes().to_vec()),
        Json::Array(a) => {
            for x in a {
                match x.as_str() {
                    Some(s) => values.push(s.as_bytes().to_vec()),
                    None => values.push(AMBIGUOUS_METHOD.as_bytes().to_vec()),
                }
            }
        }
        Json::Null => {}
        _ => values.push(AMBIGUOUS_METHOD.as_bytes().to_vec()),
    };
    for (field, names) in [
        ("headers", &METHOD_OVERRIDE_HEADERS[..]),
        ("query", &[METHOD_OVERRIDE_PARAM][..]),
    ] {
        if let Some(m) = req.get(field).and_then(Json::as_object) {
            for (k, v) in m {
                if names.iter().any(|n| k.eq_ignore_ascii_case(n)) {
                    collect(v);
                }
            }
        }
    }
    match method_override(values.iter().map(Vec::as_slice)) {
        Some(m) => {
            req.insert("method_override".to_owned(), Json::String(m));
        }
        None => {
            req.remove("method_override");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{PolicyInput, RequestKind};
    use crate::mask::FieldMask;
    use portcullis_core::Principal;
    use std::time::UNIX_EPOCH;

    fn principal() -> Principal {
        Principal::anonymous()
    }

    fn facts<'a>(h: &'a http::HeaderMap, query: Option<&'a str>) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            host: "api.stripe.com",
            path: "/v1/charges",
            query,
            headers: Some(h),
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&str, &[u8])]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn method_override_from_every_form() {
        let none = http::HeaderMap::new();
        assert_eq!(facts(&none, None).method_override(), None);
        assert_eq!(
            facts(&none, Some("a=1&method=post")).method_override(),
            None
        );
        for name in METHOD_OVERRIDE_HEADERS {
            let h = headers(&[(name, b"post")]);
            assert_eq!(
                facts(&h, None).method_override().as_deref(),
                Some("POST"),
                "{name}"
            );
        }
        for q in [
            "_method=delete",
            "a=1&_METHOD=Delete",
            "%5Fmethod=DELETE",
            "_method=%44ELETE",
        ] {
            assert_eq!(
                facts(&none, Some(q)).method_override().as_deref(),
                Some("DELETE"),
                "{q}"
            );
        }
        // Agreeing values are one method; empty values are no override.
        let h = headers(&[
            ("x-http-method-override", b"PUT"),
            ("x-http-method-override", b" put "),
            ("x-method-override", b"Put,"),
        ]);
        assert_eq!(
            facts(&h, Some("_method=PUT")).method_override().as_deref(),
            Some("PUT")
        );
        let empty = headers(&[("x-http-method", b"")]);
        assert_eq!(facts(&empty, Some("_method=")).method_override(), None);
    }

    #[test]
    fn ambiguous_method_overrides_are_the_most_privileged() {
        let none = http::HeaderMap::new();
        let cases: Vec<(http::HeaderMap, Option<&str>)> = vec![
            (
                headers(&[("x-http-method-override", b"POST")]),
                Some("_method=DELETE"),
            ),
            (headers(&[("x-http-method-override", b"GET, DELETE")]), None),
            (
                headers(&[("x-http-method", b"GET"), ("x-method-override", b"PATCH")]),
                None,
            ),
            (headers(&[("x-http-method", b"PO ST")]), None),
            (headers(&[("x-http-method", b"P\"OST")]), None),
            (headers(&[("x-http-method", &[0xC3, 0xA9])]), None),
            (
                headers(&[("x-http-method", "X".repeat(33).as_bytes())]),
                None,
            ),
            (none.clone(), Some("_method=GET&_method=POST")),
            (none.clone(), Some("_method=%00")),
        ];
        for (h, q) in &cases {
            assert_eq!(
                facts(h, *q).method_override().as_deref(),
                Some(AMBIGUOUS_METHOD),
                "{h:?} {q:?}"
            );
        }
    }

    #[test]
    fn method_override_in_the_document_and_the_cache_key() {
        let p = principal();
        let keys = Default::default();
        let plain = http::HeaderMap::new();
        let over = headers(&[("x-http-method-override", b"POST")]);
        let a = PolicyInput::new(RequestKind::Http, &p).with_request(facts(&plain, None));
        let b = PolicyInput::new(RequestKind::Http, &p).with_request(facts(&over, None));
        let ja = a.to_json(UNIX_EPOCH);
        assert!(ja["request"].get("method_override").is_none(), "{ja}");
        let jb = b.to_json(UNIX_EPOCH);
        assert_eq!(jb["request"]["method_override"], "POST");
        // A policy reading only the override gets different cache keys for the two.
        let only = FieldMask(FieldMask::METHOD_OVERRIDE);
        assert_ne!(a.cache_key(only, &keys), b.cache_key(only, &keys));
        assert_eq!(
            a.cache_key(FieldMask(FieldMask::METHOD), &keys),
            b.cache_key(FieldMask(FieldMask::METHOD), &keys)
        );
        assert_eq!(
            FieldMask::for_field("request.method_override"),
            FieldMask::METHOD_OVERRIDE
        );
        assert!(FieldMask(FieldMask::for_field("request")).has(FieldMask::METHOD_OVERRIDE));

        // A raw document derives the same value from its headers and query, replacing
        // whatever it states.
        let q = PolicyInput::new(RequestKind::Http, &p)
            .with_request(facts(&plain, Some("x=1&_method=patch")));
        for (input, want) in [(&b, Some("POST")), (&q, Some("PATCH")), (&a, None)] {
            let mut doc = input.to_json(UNIX_EPOCH);
            let derived = doc["request"]["method_override"].clone();
            doc["request"]["method_override"] = Json::from("GET");
            derive_method_override(&mut doc);
            assert_eq!(
                doc["request"].get("method_override"),
                want.map(Json::from).as_ref()
            );
            assert_eq!(
                doc["request"]
                    .get("method_override")
                    .cloned()
                    .unwrap_or(Json::Null),
                derived
            );
        }
        let mut raw = serde_json::json!({"request": {
            "headers": {"X-HTTP-Method-Override": ["delete"], "X-Method-Override": 7}}});
        derive_method_override(&mut raw);
        assert_eq!(raw["request"]["method_override"], AMBIGUOUS_METHOD);
        let mut raw = serde_json::json!({"request": {"query": {"_Method": ["put", "PUT"]}}});
        derive_method_override(&mut raw);
        assert_eq!(raw["request"]["method_override"], "PUT");
        let mut no_request = serde_json::json!({"kind": "token"});
        derive_method_override(&mut no_request);
        assert_eq!(no_request, serde_json::json!({"kind": "token"}));
    }
}
