//! The worst-case token reservation of an LLM request, and the prompt estimate behind it.

use crate::settings::{LimitSettings, DEFAULT_CHARS_PER_TOKEN};

/// Estimated prompt tokens of a request body of `body_len_bytes` bytes, assuming
/// [`DEFAULT_CHARS_PER_TOKEN`] (4) bytes per token, rounded up.
///
/// See the crate documentation for the error of this estimate.
pub fn estimate_prompt_tokens(body_len_bytes: u64) -> u64 {
    estimate_prompt_tokens_with(body_len_bytes, DEFAULT_CHARS_PER_TOKEN)
}

/// Estimated prompt tokens of a body of `body_len_bytes` bytes at `chars_per_token` bytes per
/// token, rounded up. A `chars_per_token` of zero counts as 1 (the most conservative estimate).
pub fn estimate_prompt_tokens_with(body_len_bytes: u64, chars_per_token: u64) -> u64 {
    body_len_bytes.div_ceil(chars_per_token.max(1))
}

/// Tokens to reserve for an LLM request before forwarding it: its worst case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenReservation {
    tokens: u64,
}

impl TokenReservation {
    /// Reserves exactly `tokens` tokens.
    pub fn tokens(tokens: u64) -> Self {
        Self { tokens }
    }

    /// The worst case of a request: `max_tokens` (or `settings.default_max_tokens` when the
    /// request does not state it) plus the prompt estimate of its body at
    /// `settings.chars_per_token`. Saturates instead of overflowing.
    ///
    /// `body_len_bytes` is the size of the request body as sent (the buffered body, or
    /// `Content-Length` when the body was streamed uninspected).
    pub fn estimate(
        settings: &LimitSettings,
        max_tokens: Option<u64>,
        body_len_bytes: u64,
    ) -> Self {
        let output = max_tokens.unwrap_or(settings.default_max_tokens);
        let prompt = estimate_prompt_tokens_with(body_len_bytes, settings.chars_per_token);
        Self {
            tokens: output.saturating_add(prompt),
        }
    }

    /// Reserved tokens.
    pub fn get(self) -> u64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_estimate_rounds_up() {
        assert_eq!(estimate_prompt_tokens(0), 0);
        assert_eq!(estimate_prompt_tokens(1), 1);
        assert_eq!(estimate_prompt_tokens(4), 1);
        assert_eq!(estimate_prompt_tokens(5), 2);
        assert_eq!(estimate_prompt_tokens(1 << 20), 262_144);
        assert_eq!(estimate_prompt_tokens(u64::MAX), u64::MAX.div_ceil(4));
        assert_eq!(estimate_prompt_tokens_with(10, 0), 10, "zero counts as 1");
        assert_eq!(estimate_prompt_tokens_with(10, 3), 4);
    }

    #[test]
    fn reservation_adds_output_and_prompt() {
        let s = LimitSettings::default();
        assert_eq!(TokenReservation::estimate(&s, Some(100), 400).get(), 200);
        assert_eq!(
            TokenReservation::estimate(&s, None, 401).get(),
            s.default_max_tokens + 101
        );
        let custom = LimitSettings {
            default_max_tokens: 10,
            chars_per_token: 2,
            ..LimitSettings::default()
        };
        assert_eq!(TokenReservation::estimate(&custom, None, 7).get(), 14);
        assert_eq!(
            TokenReservation::estimate(&s, Some(u64::MAX), u64::MAX).get(),
            u64::MAX,
            "saturates"
        );
    }
}
