//! `application/x-www-form-urlencoded` decoding (WHATWG / RFC 6749 appendix B), strict.
//!
//! Pairs are split and decoded by `form_urlencoded`, components by `percent-encoding` (its
//! own decoder). Both follow WHATWG's lenient rules: a `%` without two hex digits is kept
//! literally and bytes that are not UTF-8 become U+FFFD. A credential decoded that way
//! would not be what the client sent, so both are refused here before decoding.

use percent_encoding::percent_decode;
use std::borrow::Cow;

/// Why a form body or value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// More pairs than allowed.
    TooManyPairs,
}

/// Decodes `a=b&c=d` into pairs. Empty segments are skipped; a segment without
/// `=` is a name with an empty value.
pub(crate) fn parse(body: &[u8], max_pairs: usize) -> Result<Vec<(String, String)>, FormError> {
    check_escapes(body)?;
    // Separators and `+` are ASCII, so the body decodes to UTF-8 exactly when every
    // component does.
    percent_decode(body)
        .decode_utf8()
        .map_err(|_| FormError::NotUtf8)?;
    let mut out = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        if out.len() == max_pairs {
            return Err(FormError::TooManyPairs);
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub(crate) fn decode(input: &[u8]) -> Result<String, FormError> {
    check_escapes(input)?;
    let spaced: Cow<'_, [u8]> = if input.contains(&b'+') {
        Cow::Owned(
            input
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(input)
    };
    percent_decode(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| FormError::NotUtf8)
}

/// Refuses a `%` not followed by two hex digits (the crates would keep it literally).
fn check_escapes(input: &[u8]) -> Result<(), FormError> {
    let mut rest = input;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        match rest.get(at + 1..at + 3) {
            Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                rest = &rest[at + 3..];
            }
            _ => return Err(FormError::BadEscape),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs() {
        let p = parse(
            b"grant_type=client_credentials&scope=a%3Ab+c:d&&flag&x=",
            10,
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "a:b c:d".into()),
                ("flag".into(), String::new()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(decode(b"%C3%A9%2B=").unwrap(), "é+=");
        assert_eq!(parse(b"", 10).unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode(b"%"), Err(FormError::BadEscape));
        assert_eq!(decode(b"%4"), Err(FormError::BadEscape));
        assert_eq!(decode(b"%zz"), Err(FormError::BadEscape));
        assert_eq!(decode(b"%ff"), Err(FormError::NotUtf8));
        assert_eq!(decode(b"\xc3"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a&b&c", 2), Err(FormError::TooManyPairs));
        assert_eq!(parse(b"a=%zz", 10), Err(FormError::BadEscape));
        assert_eq!(parse(b"a%=b", 10), Err(FormError::BadEscape));
        assert_eq!(parse(b"a=b&c=%C3", 10), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a=%C3&b=%A9", 10), Err(FormError::NotUtf8));
    }

    /// Why the strict checks stay: the crate alone keeps a bad escape literally and turns
    /// bytes that are not UTF-8 into U+FFFD, so `%zz` and `%ff` would both "decode".
    #[test]
    fn the_crate_alone_is_lenient() {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(b"a=%zz&b=%ff")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            vec![("a".into(), "%zz".into()), ("b".into(), "\u{FFFD}".into())]
        );
    }

    #[test]
    fn components_keep_separators() {
        assert_eq!(decode(b"a=b&c").unwrap(), "a=b&c");
        assert_eq!(decode(b"s3cr%2Bt+x").unwrap(), "s3cr+t x");
    }
}
