//! One canonical path per request (sans-IO).
//!
//! Policy, classification, audit and the upstream request all see the same path, so a
//! spelling an upstream, CDN or nginx would normalise (`//v1/chat/completions`,
//! `/v1/./chat/completions`, `/v1/x/%2e%2e/chat/completions`, `/v1/chat/%63ompletions`) cannot
//! walk around a policy written for `/v1/chat/completions`:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!    escape is kept, with upper-case hex digits (RFC 3986 §6.2.2);
//! 2. dot segments are removed (RFC 3986 §5.2.4);
//! 3. repeated slashes are merged.
//!
//! What cannot be canonicalised unambiguously is refused: an encoded `/` or `\` (`%2F`,
//! `%5C`) and a raw `\` (servers disagree on whether they separate segments), a malformed
//! escape, and an encoded control character (`%00`–`%1F`, `%7F`). With
//! `proxy.allow_encoded_slashes` the separators are kept as they were sent (encoded `%2F`/`%5C`,
//! raw `\`), never decoded, and the rest is canonicalised.

use std::borrow::Cow;

/// Why a path cannot be canonicalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F`, `%5C` or a raw `\`: a separator some servers split on and others do not.
    #[error("the path contains an encoded slash or a backslash (%2F, %5C or \\), which servers interpret differently")]
    AmbiguousSeparator,
    /// `%` not followed by two hexadecimal digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// An encoded control character (`%00`–`%1F`, `%7F`).
    #[error("the path contains an encoded control character")]
    ControlCharacter,
}

impl PathError {
    /// Machine code of the 400 answered for this error.
    pub fn code(self) -> &'static str {
        match self {
            PathError::AmbiguousSeparator => "ambiguous_path",
            PathError::BadEscape | PathError::ControlCharacter => "bad_path",
        }
    }
}

/// The canonical form of `path` (the path of an origin-form or absolute-form target, without
/// the query). Borrowed when nothing changes. `allow_encoded_slashes` keeps `%2F`, `%5C` and `\`
/// as sent instead of refusing them. `*` (asterisk-form) is returned unchanged.
pub fn canonical_path(path: &str, allow_encoded_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, allow_encoded_slashes)?;
    let out = remove_dot_segments(&decoded);
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// Fast check for the common case: starts with `/`, no escape, no backslash, no empty or dot
/// segment.
fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.iter().any(|&c| c == b'%' || c == b'\\') {
        return false;
    }
    // Segments after the leading slash: none may be empty (except a trailing slash), "." or "..".
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return false;
        }
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Step 1: decodes unreserved escapes, normalises the others to upper case, refuses what is
/// ambiguous. Separators kept under `allow_encoded_slashes` stay encoded, so they never split a
/// segment in step 2.
fn decode_unreserved(path: &str, allow_encoded_slashes: bool) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 1);
    if b.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                if is_unreserved(v) {
                    out.push(v);
                } else if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                } else if (v == b'/' || v == b'\\') && !allow_encoded_slashes {
                    return Err(PathError::AmbiguousSeparator);
                } else {
                    out.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[usize::from(hi)],
                        HEX_UPPER[usize::from(lo)],
                    ]);
                }
                i += 3;
            }
            b'\\' if !allow_encoded_slashes => return Err(PathError::AmbiguousSeparator),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII was decoded (unreserved characters); other bytes were copied as they were.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// Steps 2 and 3 on a path starting with `/`: dot segments removed, empty segments merged; a
/// trailing slash (or a trailing dot segment) leaves a trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                stack.pop();
                trailing_slash = true;
            }
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonical_path(p, false).map(Cow::into_owned)
    }

    #[test]
    fn spellings_of_one_path_are_one_path() {
        for p in [
            "/v1/chat/completions",
            "//v1/chat/completions",
            "/v1//chat/completions",
            "/v1/chat//completions",
            "///v1///chat///completions",
            "/v1/./chat/completions",
            "/./v1/chat/./completions",
            "/v1/chat/%2e%2e/chat/completions",
            "/v1/chat/%2E%2E/chat/completions",
            "/v1/chat/.%2e/chat/completions",
            "/v1/x/../chat/completions",
            "/v1/chat/%63ompletions",
            "/%76%31/%63%68%61%74/%63%6F%6D%70%6C%65%74%69%6F%6E%73",
            "/../v1/chat/completions",
            "/v1/chat/completions/x/..",
        ] {
            let got = canon(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            let want = if p.ends_with("/..") {
                "/v1/chat/completions/"
            } else {
                "/v1/chat/completions"
            };
            assert_eq!(got, want, "{p}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/v1/models", "/a/b/", "/a.b/c..d/.e/f.", "*"] {
            assert!(
                matches!(canonical_path(p, false), Ok(Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }

    #[test]
    fn trailing_slashes_and_root() {
        assert_eq!(canon("/a/b/").unwrap(), "/a/b/");
        assert_eq!(canon("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/..").unwrap(), "/");
        assert_eq!(canon("/../..").unwrap(), "/");
        assert_eq!(canon("//").unwrap(), "/");
        assert_eq!(canon("").unwrap(), "/");
        assert_eq!(canon("/.").unwrap(), "/");
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_upper_case() {
        assert_eq!(canon("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(canon("/a%23b").unwrap(), "/a%23b");
        assert_eq!(canon("/%e2%82%ac").unwrap(), "/%E2%82%AC");
        // A double-encoded dot is a literal "%2e" after one decoding: not a dot segment.
        assert_eq!(canon("/v1/%252e%252e/x").unwrap(), "/v1/%252e%252e/x");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn ambiguous_and_malformed_paths_are_refused() {
        for (p, e) in [
            ("/v1%2fchat/completions", PathError::AmbiguousSeparator),
            ("/v1%2Fchat", PathError::AmbiguousSeparator),
            ("/v1%5cchat", PathError::AmbiguousSeparator),
            ("/v1%5Cchat", PathError::AmbiguousSeparator),
            ("/v1\\chat", PathError::AmbiguousSeparator),
            ("/v1/%", PathError::BadEscape),
            ("/v1/%2", PathError::BadEscape),
            ("/v1/%zz", PathError::BadEscape),
            ("/v1/%g0", PathError::BadEscape),
            ("/v1/%00", PathError::ControlCharacter),
            ("/v1/%0a", PathError::ControlCharacter),
            ("/v1/%1F", PathError::ControlCharacter),
            ("/v1/%7f", PathError::ControlCharacter),
        ] {
            assert_eq!(canon(p), Err(e), "{p}");
        }
    }

    #[test]
    fn encoded_separators_can_be_kept_but_never_split() {
        let keep = |p| canonical_path(p, true).map(Cow::into_owned);
        assert_eq!(keep("/a%2fb/../c").unwrap(), "/c");
        assert_eq!(keep("/x/a%2f..%2fb").unwrap(), "/x/a%2F..%2Fb");
        assert_eq!(keep("/a\\b//c").unwrap(), "/a\\b/c");
        assert_eq!(keep("/%5C").unwrap(), "/%5C");
        assert_eq!(keep("/%00"), Err(PathError::ControlCharacter));
    }

    #[test]
    fn codes() {
        assert_eq!(PathError::AmbiguousSeparator.code(), "ambiguous_path");
        assert_eq!(PathError::BadEscape.code(), "bad_path");
        assert_eq!(PathError::ControlCharacter.code(), "bad_path");
    }

    #[test]
    fn arbitrary_input_never_panics_and_is_idempotent() {
        // A small deterministic fuzz over the characters that matter.
        let alphabet = [
            "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "%", "%4", "a", "%41", "\\", "%00", "~",
            "%7e", "%c3%a9",
        ];
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..20_000 {
            let mut p = String::new();
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                p.push_str(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for keep in [false, true] {
                if let Ok(c) = canonical_path(&p, keep) {
                    assert!(c.starts_with('/') || c == "*", "{p:?} -> {c:?}");
                    let again = canonical_path(&c, keep).expect("canonical stays valid");
                    assert_eq!(again, c, "idempotent for {p:?}");
                }
            }
        }
    }
}
