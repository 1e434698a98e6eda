//! Validation of agent ids, sub-agent names and scopes.

use std::fmt;

/// Why an id or scope was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId {
    /// What was being validated (`agent id`, `subagent`, `scope`).
    pub what: &'static str,
    /// Human readable reason.
    pub reason: &'static str,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.what, self.reason)
    }
}

impl std::error::Error for InvalidId {}

/// Checks an agent id or sub-agent name against `^[a-z][a-z0-9_]{1,63}$`.
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    (2..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Checks a scope: colon-separated segments of `[A-Za-z0-9_.*-]`, case-sensitive,
/// at most 128 bytes, no empty segment (e.g. `stripe:customer:read`).
pub fn is_valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.split(':').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'*'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["ab", "demo", "agent_1", "a0", &"a".repeat(64)] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "A",
            "1a",
            "_a",
            "a-b",
            "a b",
            "aé",
            "Demo",
            &"a".repeat(65),
            "a\n",
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn scopes() {
        for ok in [
            "stripe:customer:read",
            "openai:chat:create",
            "read",
            "github:repo.*",
        ] {
            assert!(is_valid_scope(ok), "{ok}");
        }
        for bad in ["", ":", "a::b", "a:", ":a", "a b", "a/b", &"a".repeat(129)] {
            assert!(!is_valid_scope(bad), "{bad:?}");
        }
    }
}
