//! Normalised token usage, the same meaning for every provider (DESIGN §5).

use serde::{Deserialize, Serialize};

/// Where a [`Usage`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    /// The provider reported the counts in the response.
    Provider,
    /// No usage was found: the counts are unknown (held as 0 in [`Usage`], serialised
    /// as `null`), not evidence that nothing was spent.
    Missing,
}

/// Token usage of one response, normalised across providers.
///
/// With `source = missing` the counts are unknown, not zero: they serialise as `null`
/// (and must never be summed). [`Usage::counts`] gives them only when reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "UsageJson", try_from = "UsageJson")]
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

    /// The counts `[input, output, cached_input, reasoning, total]` when the provider
    /// reported them; `None` when they are missing (unknown, not zero).
    pub fn counts(&self) -> Option<[u64; 5]> {
        self.is_reported().then_some([
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.reasoning_tokens,
            self.total_tokens,
        ])
    }
}

/// The serialised form (the audit record's `usage`): counts are `null` when the usage is
/// missing. `truncated` is the data plane's own bookkeeping (it decides the settlement of a
/// token reservation) and is not part of the record.
#[derive(Serialize, Deserialize)]
struct UsageJson {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached_input_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    total_tokens: Option<u64>,
    source: UsageSource,
}

impl From<Usage> for UsageJson {
    fn from(u: Usage) -> Self {
        let c = u.counts();
        let at = |i: usize| c.map(|c| c[i]);
        Self {
            input_tokens: at(0),
            output_tokens: at(1),
            cached_input_tokens: at(2),
            reasoning_tokens: at(3),
            total_tokens: at(4),
            source: u.source,
        }
    }
}

impl TryFrom<UsageJson> for Usage {
    type Error = &'static str;

    fn try_from(j: UsageJson) -> Result<Self, Self::Error> {
        match j.source {
            UsageSource::Missing => Ok(Self::missing(false)),
            UsageSource::Provider => {
                let (Some(input), Some(output)) = (j.input_tokens, j.output_tokens) else {
                    return Err("provider usage needs input_tokens and output_tokens");
                };
                Ok(Self::provider(
                    input,
                    output,
                    j.cached_input_tokens.unwrap_or(0),
                    j.reasoning_tokens.unwrap_or(0),
                ))
            }
        }
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
    fn missing_serializes_as_missing_with_null_counts() {
        let v = serde_json::to_value(Usage::missing(true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"input_tokens": null, "output_tokens": null,
                "cached_input_tokens": null, "reasoning_tokens": null, "total_tokens": null,
                "source": "missing"})
        );
        assert_eq!(Usage::missing(false).counts(), None);
        let v = serde_json::to_value(Usage::provider(1, 2, 0, 0)).unwrap();
        assert_eq!(v["source"], "provider");
        assert_eq!(v["total_tokens"], 3);
        assert_eq!(v["cached_input_tokens"], 0);
        assert_eq!(Usage::provider(1, 2, 0, 0).counts(), Some([1, 2, 0, 0, 3]));
    }

    #[test]
    fn round_trips_and_refuses_provider_usage_without_counts() {
        for u in [
            Usage::missing(true),
            Usage::missing(false),
            Usage::provider(7, 3, 2, 1),
            Usage {
                truncated: true,
                ..Usage::provider(u64::MAX, 1, 0, 0)
            },
        ] {
            let text = serde_json::to_string(&u).unwrap();
            // `truncated` is bookkeeping of the data plane, not part of the record.
            let want = Usage {
                truncated: false,
                ..u
            };
            assert_eq!(
                serde_json::from_str::<Usage>(&text).unwrap(),
                want,
                "{text}"
            );
        }
        // Counts sent with `missing` are ignored: unknown stays unknown.
        let u: Usage = serde_json::from_str(
            r#"{"input_tokens":5,"output_tokens":5,"cached_input_tokens":0,"reasoning_tokens":0,"total_tokens":10,"source":"missing","truncated":false}"#,
        )
        .unwrap();
        assert_eq!(u, Usage::missing(false));
        assert!(serde_json::from_str::<Usage>(
            r#"{"input_tokens":null,"output_tokens":3,"cached_input_tokens":null,"reasoning_tokens":null,"total_tokens":null,"source":"provider","truncated":false}"#
        )
        .is_err());
    }
}
