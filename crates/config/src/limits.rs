//! `[limits]`: default per-agent rate limits and token budgets.

use portcullis_core::UtcOffset;
use serde::{Deserialize, Serialize};

/// Output tokens reserved for an LLM request that does not state `max_tokens` (default of
/// `limits.default_max_tokens`).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Request-body bytes per prompt token (default of `limits.chars_per_token`).
pub const DEFAULT_CHARS_PER_TOKEN: u64 = 4;

/// `[limits]`: the defaults for every agent; `[agents.limits]` overrides `rpm`, `tpm`,
/// `tokens_per_day` and `max_concurrent` per agent. An unset limit is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per minute (GCRA): a burst of `rpm` back to back, refilled at `rpm` per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// LLM tokens per minute: tokens charged in any 60-second interval never exceed this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// LLM tokens per day, reset at midnight of `day_reset_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Concurrent in-flight requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Output tokens reserved when an LLM request has no `max_tokens` / `max_output_tokens`.
    pub default_max_tokens: u64,
    /// Request-body bytes per prompt token used for the prompt estimate.
    pub chars_per_token: u64,
    /// Fixed UTC offset whose midnight resets `tokens_per_day` (`"+02:00"`, `"-05:30"`, `"Z"`).
    pub day_reset_offset: UtcOffset,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rpm: None,
            tpm: None,
            tokens_per_day: None,
            max_concurrent: None,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            chars_per_token: DEFAULT_CHARS_PER_TOKEN,
            day_reset_offset: UtcOffset::UTC,
        }
    }
}
