//! Money: dollar amounts kept as integer micro-dollars, and the per-token price of a model.
//!
//! Amounts are integers so that sums are exact (a budget, a day's spend, the store's totals);
//! they are shown as a decimal number of US dollars (`cost_usd`, `usd_per_day`).

use crate::usage::Usage;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Micro-dollars in a dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// The largest amount a [`Usd`] accepts from text: a billion dollars.
const MAX_USD: f64 = 1e9;

/// An amount of US dollars, held as integer micro-dollars (10⁻⁶ USD).
///
/// Serialised as a JSON/TOML number of dollars (`2.5`); read from one, rounded to the
/// nearest micro-dollar. Negative, non-finite and absurd (over a billion) amounts are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Self = Self(0);

    /// An amount of `micros` micro-dollars.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// `dollars` rounded to the nearest micro-dollar; `None` when negative, not finite or
    /// over a billion dollars.
    pub fn from_dollars(dollars: f64) -> Option<Self> {
        if !dollars.is_finite() || !(0.0..=MAX_USD).contains(&dollars) {
            return None;
        }
        // In range: at most 1e15 micro-dollars, exact in an f64 and in a u64.
        Some(Self((dollars * MICROS_PER_USD as f64).round() as u64))
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// The amount in dollars (exact up to 2⁵³ micro-dollars, about 9 billion dollars).
    pub fn dollars(self) -> f64 {
        self.0 as f64 / MICROS_PER_USD as f64
    }
}

impl fmt::Display for Usd {
    /// `$1.5`, `$0.000123`: dollars with the trailing zeros of the micro-dollars dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / MICROS_PER_USD, self.0 % MICROS_PER_USD);
        if frac == 0 {
            return write!(f, "${whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "${whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let dollars = f64::deserialize(d)?;
        Usd::from_dollars(dollars).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{dollars} is not a dollar amount: expected a number from 0 to 1e9"
            ))
        })
    }
}

/// What one model charges, per token kind, in micro-dollars per million tokens (which is
/// also pico-dollars per token): `input = 2_500_000` is $2.50 per million input tokens.
///
/// How [`Usage`] counts tokens decides the arithmetic, and nothing is counted twice:
/// `cached_input_tokens` is a subset of `input_tokens`, and `reasoning_tokens` a subset of
/// `output_tokens`. So a response costs
///
/// ```text
/// (input − cached) × input + cached × cached_input
///   + (output − reasoning) × output + reasoning × reasoning
/// ```
///
/// Anthropic cache writes are part of `input_tokens` (see [`Usage`]) and are priced as
/// input: Anthropic bills them at 1.25× input, so such a response is slightly under-priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenPrice {
    /// Uncached prompt tokens.
    pub input: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: u64,
    /// Generated tokens that are not reasoning tokens.
    pub output: u64,
    /// Reasoning tokens.
    pub reasoning: u64,
}

impl TokenPrice {
    /// The cost of `usage`, rounded up to the micro-dollar; `None` when the usage is missing
    /// (unknown is never zero). Counts that contradict each other (more cached than input
    /// tokens) are clamped so that no token is priced twice.
    pub fn cost(&self, usage: &Usage) -> Option<Usd> {
        let [input, output, cached, reasoning, _] = usage.counts()?;
        let cached = cached.min(input);
        let reasoning = reasoning.min(output);
        let pico = mul(input - cached, self.input)
            + mul(cached, self.cached_input)
            + mul(output - reasoning, self.output)
            + mul(reasoning, self.reasoning);
        Some(micros_of(pico))
    }

    /// The most `prompt_tokens` prompt tokens and `max_output_tokens` generated tokens can
    /// cost: every prompt token at the dearer of the input prices, every output token at the
    /// dearer of the output and reasoning prices. Rounded up to the micro-dollar.
    pub fn worst_case(&self, prompt_tokens: u64, max_output_tokens: u64) -> Usd {
        let pico = mul(prompt_tokens, self.input.max(self.cached_input))
            + mul(max_output_tokens, self.output.max(self.reasoning));
        micros_of(pico)
    }
}

fn mul(tokens: u64, price: u64) -> u128 {
    u128::from(tokens) * u128::from(price)
}

/// Pico-dollars to micro-dollars, rounded up, saturating.
fn micros_of(pico: u128) -> Usd {
    let micros = pico.div_ceil(u128::from(MICROS_PER_USD));
    Usd(u64::try_from(micros).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// $2.50 input, $1.25 cached, $10 output, $10 reasoning (gpt-4o-like).
    const P: TokenPrice = TokenPrice {
        input: 2_500_000,
        cached_input: 1_250_000,
        output: 10_000_000,
        reasoning: 10_000_000,
    };

    #[test]
    fn cost_prices_each_kind_once() {
        // 1000 input of which 400 cached, 500 output of which 200 reasoning (reasoning dearer).
        let p = TokenPrice {
            reasoning: 20_000_000,
            ..P
        };
        let u = Usage::provider(1000, 500, 400, 200);
        // 600 × 2.5 + 400 × 1.25 + 300 × 10 + 200 × 20 = 1500 + 500 + 3000 + 4000 µ$.
        assert_eq!(p.cost(&u), Some(Usd::from_micros(9_000)));
        // No cache, no reasoning.
        let plain = Usage::provider(1_000_000, 1_000_000, 0, 0);
        assert_eq!(P.cost(&plain), Some(Usd::from_micros(12_500_000)));
    }

    #[test]
    fn missing_usage_has_no_cost_and_zero_usage_costs_zero() {
        assert_eq!(P.cost(&Usage::missing(false)), None);
        assert_eq!(P.cost(&Usage::missing(true)), None);
        assert_eq!(P.cost(&Usage::provider(0, 0, 0, 0)), Some(Usd::ZERO));
    }

    #[test]
    fn costs_round_up_to_the_micro_dollar_and_never_overflow() {
        // 10 tokens at $0.15 per million: 1.5 µ$ → 2 µ$.
        let cheap = TokenPrice {
            input: 150_000,
            ..TokenPrice::default()
        };
        assert_eq!(
            cheap.cost(&Usage::provider(10, 0, 0, 0)),
            Some(Usd::from_micros(2))
        );
        assert_eq!(
            cheap.cost(&Usage::provider(1, 0, 0, 0)),
            Some(Usd::from_micros(1))
        );
        let huge = Usage::provider(u64::MAX, u64::MAX, 0, 0);
        assert_eq!(P.cost(&huge), Some(Usd::from_micros(u64::MAX)));
        // Contradictory counts are clamped, never priced twice or underflowing.
        let odd = Usage::provider(10, 10, 50, 50);
        assert_eq!(P.cost(&odd), Some(Usd::from_micros(113)));
    }

    #[test]
    fn worst_case_uses_the_dearer_prices() {
        let p = TokenPrice {
            input: 1_000_000,
            cached_input: 3_000_000,
            output: 2_000_000,
            reasoning: 5_000_000,
        };
        assert_eq!(p.worst_case(100, 10), Usd::from_micros(350));
        assert_eq!(p.worst_case(0, 0), Usd::ZERO);
        assert_eq!(p.worst_case(u64::MAX, u64::MAX), Usd::from_micros(u64::MAX));
    }

    #[test]
    fn dollars_parse_round_and_print() {
        assert_eq!(Usd::from_dollars(2.5), Some(Usd::from_micros(2_500_000)));
        assert_eq!(Usd::from_dollars(0.075), Some(Usd::from_micros(75_000)));
        assert_eq!(Usd::from_dollars(0.0000004), Some(Usd::ZERO));
        for bad in [-0.01, f64::NAN, f64::INFINITY, 2e9] {
            assert_eq!(Usd::from_dollars(bad), None, "{bad}");
        }
        assert_eq!(Usd::from_micros(1_500_000).to_string(), "$1.5");
        assert_eq!(Usd::from_micros(123).to_string(), "$0.000123");
        assert_eq!(Usd::from_micros(5_000_000).to_string(), "$5");
        let json = serde_json::to_string(&Usd::from_micros(1_234_567)).unwrap();
        assert_eq!(json, "1.234567");
        let back: Usd = serde_json::from_str("1.234567").unwrap();
        assert_eq!(back.micros(), 1_234_567);
        let int: Usd = serde_json::from_str("3").unwrap();
        assert_eq!(int.micros(), 3_000_000);
        for bad in ["-1", "\"1\"", "1e10", "null"] {
            assert!(serde_json::from_str::<Usd>(bad).is_err(), "{bad}");
        }
    }
}
