//! Shared rate limits and token budgets for Portcullis replicas, kept in Redis.
//!
//! [`RedisLimiter`] implements [`portcullis_limits::Limiter`] with the in-memory limiter's
//! semantics (GCRA requests per minute, concurrency slots, per-minute and per-day token budgets
//! with reserve-then-settle, all or nothing over the tenant, agent and sub-agent scopes), so
//! every replica decides the same:
//!
//! - **One atomic script per check.** Checking and charging a request is one Lua script over
//!   the keys of all its scopes (`lua/acquire.lua`). Redis runs a script alone, so two
//!   replicas can never both see the same free budget: no overshoot under concurrency.
//! - **The server's clock.** Scripts read `TIME`, so replicas whose clocks disagree still share
//!   one notion of "now" (GCRA arrival times, the minute window, the day boundary).
//! - **Concurrency as leases.** A slot is a member of a sorted set scored by its expiry. The
//!   process holding it renews it every third of `lease` while the request is in flight and
//!   removes it when the request ends; the slots of a replica that died (SIGKILL, lost node)
//!   expire at most `lease` after its last renewal, and the next check drops them.
//! - **Settlement in the background.** Replacing a reservation by the actual usage (and
//!   freeing the slot) is a script too, sent by a background worker so the response never
//!   waits for Redis. [`Limiter::flush`](portcullis_limits::Limiter::flush) waits for it.
//! - **When Redis is unreachable** (error or no answer within `timeout`): the call is counted
//!   (`portcullis_limits_backend_errors_total`), the backend turns degraded
//!   (`portcullis_limits_backend_degraded` = 1, one warning in the log, a `/readyz` detail) and
//!   [`OnRedisError`] decides: `local` (the default) falls back to this replica's in-memory
//!   limiter, `deny` refuses (503), `allow` admits without limits. A probe reconnects every
//!   `probe_every`; the first answer ends the outage (one log line). While degraded no call
//!   waits on Redis.
//!
//! Keys (`<prefix><scope>`, `…:w`, `…:c`) expire by themselves once they carry no
//! information. Numbers are capped at 2^53 − 1 (what a script's numbers hold exactly), far
//! above any real limit. Redis Cluster is not supported: a request's scopes are different keys
//! that one script must reach (use a single primary, with replicas or Sentinel for failover).
//!
//! # Why this client
//!
//! The `redis` crate is the maintained Redis client for Rust with Tokio support and script
//! helpers (`EVALSHA`, reloading on `NOSCRIPT`). One multiplexed connection pipelines every
//! call of the process; reconnection is done here rather than by its connection manager,
//! because an outage must fail calls at once (and apply the fallback) instead of queueing
//! them behind reconnect attempts.
#![warn(missing_docs)]

mod background;
mod health;
mod lease;
mod limiter;
mod scripts;
mod settings;
mod shared;
mod wire;

pub use health::RedisMetrics;
pub use limiter::{RedisLimiter, StartError};
pub use settings::{redact_url, OnRedisError, RedisSettings, TimeSource};
