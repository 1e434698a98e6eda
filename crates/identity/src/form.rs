//! `application/x-www-form-urlencoded` decoding (WHATWG / RFC 6749 appendix B).

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
    let mut out = Vec::new();
    for seg in body.split(|b| *b == b'&') {
        if seg.is_empty() {
            continue;
        }
        if out.len() == max_pairs {
            return Err(FormError::TooManyPairs);
        }
        let (name, value) = match seg.iter().position(|b| *b == b'=') {
            Some(i) => (&seg[..i], &seg[i + 1..]),
            None => (seg, &b""[..]),
        };
        out.push((decode(name)?, decode(value)?));
    }
    Ok(out)
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub(crate) fn decode(input: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = input.get(i + 1).and_then(|c| crate::secret::hex_value(*c));
                let lo = input.get(i + 2).and_then(|c| crate::secret::hex_value(*c));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push((h << 4) | l),
                    _ => return Err(FormError::BadEscape),
                }
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
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
    }
}
