//! Normalised token usage, the same meaning for every provider (DESIGN §5).

use serde::{Deserialize, Serialize};

/// Where a [`Usage`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The provider reported the counts in the response.
    Provider,
    /// No usage was found: the counts are zero because they are unknown, not
    /// because nothing was spent.
    Missing,
}

/// Token usage of one response, normalised across providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, including cache reads and cache writes
    /// (OpenAI `prompt_tokens`/`input_tokens`; Anthropic `input_tokens` +
    /// `cache_read_input_tokens` + `cache_creation_input_tokens`).
    pub input_tokens: u64,
    /// Generated tokens (including reasoning tokens).
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Reasoning tokens (a subset of `output_tokens`) when the provider reports them.
    pub reasoning_tokens: u64,
    /// `input_tokens + output_tokens`.
    pub total_tokens: u64,
    /// Whether the counts come from the provider or are missing.
    pub source: UsageSource,
    /// The tap did not see the whole response: the stream ended before its
    /// terminal event or document end, an error event ended it, decoding failed,
    /// or a memory bound forced part of it to be skipped. The counts are what
    /// was seen.
    pub truncated: bool,
}

impl Usage {
    /// Usage that was not reported.
    pub const fn missing(truncated: bool) -> Self {
        Self {
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 0,
            source: UsageSource::Missing,
            truncated,
        }
    }

    /// Provider-reported usage; `total_tokens` is derived as input + output.
    pub const fn provider(
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        reasoning_tokens: u64,
    ) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            reasoning_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            source: UsageSource::Provider,
            truncated: false,
        }
    }

    /// Whether the provider reported the counts.
    pub fn is_reported(&self) -> bool {
        self.source == UsageSource::Provider
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_is_derived_and_saturates() {
        let u = Usage::provider(10, 5, 3, 1);
        assert_eq!(u.total_tokens, 15);
        assert!(u.is_reported());
        assert_eq!(Usage::provider(u64::MAX, 5, 0, 0).total_tokens, u64::MAX);
    }

    #[test]
    fn missing_serializes_as_missing() {
        let v = serde_json::to_value(Usage::missing(true)).unwrap();
        assert_eq!(v["source"], "missing");
        assert_eq!(v["truncated"], true);
        let v = serde_json::to_value(Usage::provider(1, 2, 0, 0)).unwrap();
        assert_eq!(v["source"], "provider");
        assert_eq!(v["total_tokens"], 3);
    }
}
