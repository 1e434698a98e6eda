//! The worst-case token reservation of an LLM request, and the prompt estimate behind it.

use crate::settings::{LimitSettings, DEFAULT_CHARS_PER_TOKEN};
use portcullis_core::{TokenPrice, Usd};

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

/// Tokens to reserve for an LLM request before forwarding it: its worst case, and with the
/// model's price, its worst-case cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenReservation {
    tokens: u64,
    /// The generated part of `tokens` (the rest is prompt).
    output: u64,
    price: Option<TokenPrice>,
}

impl TokenReservation {
    /// Reserves exactly `tokens` tokens (counted as prompt tokens when priced).
    pub fn tokens(tokens: u64) -> Self {
        Self {
            tokens,
            output: 0,
            price: None,
        }
    }

    /// The same reservation for a model priced at `price` (`None`: unknown). A priced
    /// reservation also reserves its worst-case cost against the dollar budgets, and its
    /// permit settles with the cost of the recorded usage; an unpriced one is refused where a
    /// dollar budget applies.
    #[must_use]
    pub fn with_price(mut self, price: Option<TokenPrice>) -> Self {
        self.price = price;
        self
    }

    /// The model's price, when known.
    pub fn price(self) -> Option<TokenPrice> {
        self.price
    }

    /// The worst-case cost: the prompt estimate at the dearer input price plus the output
    /// tokens at the dearer of the output and reasoning prices. `None` when unpriced.
    pub fn usd(self) -> Option<Usd> {
        let price = self.price?;
        Some(price.worst_case(self.tokens.saturating_sub(self.output), self.output))
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
            output,
            price: None,
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

    #[test]
    fn priced_reservations_reserve_their_worst_case_cost() {
        let s = LimitSettings::default();
        let price = TokenPrice {
            input: 2_000_000,
            cached_input: 500_000,
            output: 8_000_000,
            reasoning: 10_000_000,
        };
        // 100 output tokens, 400 bytes = 100 prompt tokens: 100 × 2 + 100 × 10 = 1200 µ$.
        let r = TokenReservation::estimate(&s, Some(100), 400).with_price(Some(price));
        assert_eq!(r.get(), 200);
        assert_eq!(r.usd(), Some(Usd::from_micros(1_200)));
        assert_eq!(r.price(), Some(price));
        assert_eq!(TokenReservation::estimate(&s, Some(100), 400).usd(), None);
        let plain = TokenReservation::tokens(1_000_000).with_price(Some(price));
        assert_eq!(plain.usd(), Some(Usd::from_micros(2_000_000)));
    }
}
