//! `[limits]`: default per-agent rate limits and token budgets.

use crate::duration;
use portcullis_core::{Usd, UtcOffset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Output tokens reserved for an LLM request that does not state `max_tokens` (default of
/// `limits.default_max_tokens`).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Request-body bytes per prompt token (default of `limits.chars_per_token`).
pub const DEFAULT_CHARS_PER_TOKEN: u64 = 4;

/// Where the limiter keeps its counters (`limits.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackend {
    /// In this process: each replica enforces its own limits.
    #[default]
    Memory,
    /// In Redis (`limits.redis_url`): every replica shares the same counters.
    Redis,
}

/// What requests get while Redis cannot be reached (`limits.on_redis_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Fall back to this replica's in-memory limits.
    #[default]
    Local,
    /// Refuse requests that need a limit check (503 `limits_unavailable`).
    Deny,
    /// Admit them without limits.
    Allow,
}

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
    /// LLM spend per day in US dollars (e.g. `25.0`), reset at midnight of
    /// `day_reset_offset`. Needs a price for every model the agent calls (see `docs/spend.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<Usd>,
    /// LLM spend per calendar month in US dollars, reset on the first at midnight of
    /// `day_reset_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<Usd>,
    /// Limits of a whole tenant, all of its agents together (`[limits.tenants."acme"]`):
    /// checked on top of each agent's own. The `[limits]` defaults above do not apply to a
    /// tenant; `default_max_tokens`, `chars_per_token` and `day_reset_offset` do.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantLimitsConfig>,
    /// Output tokens reserved when an LLM request has no `max_tokens` / `max_output_tokens`.
    pub default_max_tokens: u64,
    /// Request-body bytes per prompt token used for the prompt estimate.
    pub chars_per_token: u64,
    /// Fixed UTC offset whose midnight resets `tokens_per_day` (`"+02:00"`, `"-05:30"`, `"Z"`).
    pub day_reset_offset: UtcOffset,
    /// `memory` (default: per process) or `redis` (shared by every replica).
    pub backend: LimitsBackend,
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). The environment
    /// variable `PORTCULLIS_REDIS_URL` wins over this key, so the password can stay in a Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (several gateways can share one Redis).
    pub redis_prefix: String,
    /// Lifetime of a concurrency lease in Redis: a replica renews its leases every third of it;
    /// the slots of a replica that died come back at most this long after its last renewal.
    #[serde(with = "duration")]
    pub redis_lease: Duration,
    /// Longest wait for Redis per call before it counts as unreachable.
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
    /// While Redis cannot be reached: `local` (default), `deny` or `allow`.
    pub on_redis_error: OnRedisError,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            rpm: None,
            tpm: None,
            tokens_per_day: None,
            max_concurrent: None,
            usd_per_day: None,
            usd_per_month: None,
            tenants: BTreeMap::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            chars_per_token: DEFAULT_CHARS_PER_TOKEN,
            day_reset_offset: UtcOffset::UTC,
            backend: LimitsBackend::Memory,
            redis_url: None,
            redis_prefix: "portcullis:limits:".to_owned(),
            redis_lease: Duration::from_secs(30),
            redis_timeout: Duration::from_millis(250),
            on_redis_error: OnRedisError::Local,
        }
    }
}

/// `[limits.tenants."<tenant>"]`: the limits of all of a tenant's agents together. An unset
/// limit is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsConfig {
    /// Requests per minute of the whole tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// LLM tokens per minute of the whole tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// LLM tokens per day of the whole tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Concurrent in-flight requests of the whole tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// LLM spend per day of the whole tenant, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<Usd>,
    /// LLM spend per calendar month of the whole tenant, US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<Usd>,
}
