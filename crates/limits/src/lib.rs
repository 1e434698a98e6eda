//! Rate limits and LLM token budgets for Portcullis.
//!
//! Per scope — an agent, and optionally its sub-agent and its tenant — the limiter enforces
//! requests per minute, concurrent in-flight requests, and LLM tokens per minute and per day.
//! The in-memory backend is pure logic: time comes from an injected [`portcullis_core::Clock`],
//! there is no I/O, and every operation is a short critical section (no blocking). Calls return
//! a [`LimitFuture`], which the in-memory backend fills at once (no allocation, no task
//! switch) and a shared backend (`portcullis-limits-redis`) fills after asking its server.
//!
//! # Using it from the data plane
//!
//! ```
//! use std::sync::Arc;
//! use portcullis_core::SystemClock;
//! use portcullis_limits::{
//!     LimitError, Limiter, LimitSettings, MemoryLimiter, ScopeKey, TokenReservation,
//! };
//!
//! let limiter = MemoryLimiter::new(Arc::new(SystemClock));
//! let key = ScopeKey::agent("demo");
//! let settings = LimitSettings { rpm: Some(60), tpm: Some(100_000), ..LimitSettings::default() };
//! // An LLM request with max_tokens = 512 and a 2 KiB body reserves 512 + 512 tokens.
//! let reservation = TokenReservation::estimate(&settings, Some(512), 2048);
//! // In async code: `limiter.acquire_one(..).await`. The in-memory answer is ready at once.
//! let answer = limiter.acquire_one(&key, &settings, Some(reservation)).into_ready();
//! match answer.expect("the in-memory limiter answers at once") {
//!     Ok(permit) => {
//!         let rate = permit.rate_info(); // X-RateLimit-* of the tightest limit
//!         assert_eq!(rate.map(|r| r.remaining), Some(59));
//!         // ... forward, stream, tap ...
//!         permit.settle(Some(700)); // usage recorded by the tap; None when missing
//!     }
//!     Err(LimitError::Limited(refusal)) => {
//!         let _ = (refusal.retry_after_secs, refusal.detail()); // the proxy answers 429
//!     }
//!     Err(LimitError::Unavailable(why)) => {
//!         let _ = why; // a shared backend that is down and set to refuse: the proxy answers 503
//!     }
//! }
//! ```
//!
//! # Semantics
//!
//! - **Requests per minute** (GCRA): `rpm = N` admits a burst of N back to back and refills at
//!   N per minute (one every 60/N s); `X-RateLimit-Remaining` goes N−1 … 0.
//! - **Concurrency**: the [`Permit`] holds a slot in every scope; dropping it releases the slot
//!   whatever happened (success, upstream error, client abort). A shared backend holds slots
//!   as leases that its process renews while the request is in flight, so the slots of a
//!   process that died come back when their lease expires.
//! - **Token budgets with reservation**: an LLM request reserves its worst case
//!   ([`TokenReservation::estimate`]: `max_tokens`, or `default_max_tokens` when absent, plus
//!   the prompt estimate) against the per-minute and per-day budgets before it is forwarded.
//!   [`Permit::settle`] replaces the reservation by the usage the tap recorded (releasing the
//!   difference, or charging the excess if the estimate was low); when usage is missing, or the
//!   permit is dropped without settling, the whole reservation stays charged. Check and charge
//!   happen under one lock per scope, so concurrent requests can never overshoot a budget. A
//!   reservation larger than a whole budget is refused with [`Refusal::never_fits`] set.
//! - **All or nothing**: a request is admitted only if every limit of every scope admits it; a
//!   refusal charges nothing.
//! - **Per-minute token window**: a sliding window of 61 one-second buckets. A charge counts for
//!   60 to 61 seconds, so the tokens charged in *any* 60-second interval never exceed `tpm`
//!   (beyond overruns of a response that used more than it reserved). The error is one-sided:
//!   freed capacity returns up to 1 s later than an exact 60 s window would return it.
//! - **Dollar budgets** (`usd_per_day`, `usd_per_month`, in [`Usd`]): a reservation priced with
//!   [`TokenReservation::with_price`] also reserves its worst-case cost
//!   ([`TokenReservation::usd`]) against them, and [`Permit::settle_usage`] replaces it by the
//!   cost of the recorded [`Usage`]; missing usage keeps it. Checked like the daily token
//!   budget, all or nothing with every other limit. An LLM request without a price is refused
//!   where a dollar budget applies ([`LimitScopes::unpriced_refusal`], `unpriced` set). The
//!   month starts at midnight of the first day of the month at `day_reset_offset`. Dollar
//!   budgets are never reported in [`RateInfo`]; [`UsageSnapshot`] has `usd_today` and
//!   `usd_month`.
//! - **Per-day budget**: resets at midnight of `day_reset_offset`, a fixed UTC offset (UTC by
//!   default). IANA zone names are not supported: that needs the tz database, a heavy
//!   dependency for one boundary. A settlement after midnight refunds nothing to the new day.
//! - **Headers**: [`Permit::rate_info`] is the rate limit (rpm, or tpm/tokens per day for LLM
//!   requests) with the smallest fraction remaining — `X-RateLimit-Limit`, `-Remaining`, and
//!   `-Reset` (Unix second at which that limit is fully replenished). [`Refusal`] carries the
//!   same plus `retry_after_secs` (≥ 1) for `Retry-After`.
//! - **Changes** of settings apply to the next request: settings are passed on every call
//!   (merge per-agent overrides with [`LimitSettings::with_overrides`]). When `rpm` changes,
//!   the requests already made in the current burst keep counting: used 2 of `rpm = 2`, raised
//!   to 5, 3 are left.
//!
//! # Why GCRA is implemented here rather than with `governor`
//!
//! `governor` supports custom clocks, but its keyed limiters apply one quota to every key
//! (ours differ per agent and change at run time), and a positive check consumes at once, so it
//! cannot take part in one all-or-nothing decision with the concurrency and token limits. GCRA
//! is one timestamp per scope (see `memory/gcra.rs`); keeping it next to the other counters
//! lets a single short lock per scope check everything and then charge everything.
//!
//! # Prompt estimate and its error
//!
//! The prompt part of a reservation is `ceil(body bytes / chars_per_token)` with
//! `chars_per_token = 4` by default ([`estimate_prompt_tokens`]). It counts the whole JSON body,
//! keys and punctuation included, so for English text (about 4 characters per token) it
//! **overestimates** by the JSON overhead, typically 10–40 %. It **underestimates** text
//! that tokenises densely: CJK text is 3 bytes per character and close to one token per
//! character, so the estimate is about 25 % low (use `chars_per_token = 2` for such traffic).
//! Base64 images and files overestimate heavily (an image costs far fewer tokens than its
//! bytes / 4). The estimate only sizes the reservation: settlement replaces it with the
//! provider's reported usage, and an underestimate is charged in full at settlement.
//!
//! # Memory and restarts
//!
//! The [`MemoryLimiter`] keeps about 1 KiB per active scope. [`Limiter::sweep`] (call it every
//! minute or so) forgets scopes with nothing in flight, a full burst, an empty minute window and
//! no tokens or dollars charged to the running day (or dollars to the running month), so a
//! scope is kept at most until the end of the day of its last LLM request (of the month of its
//! last priced one). State is not persisted: a restart grants every scope fresh budgets, and
//! each replica enforces its own limits; a shared backend implements the same [`Limiter`] trait.
#![warn(missing_docs)]

mod estimate;
mod future;
mod limiter;
mod mcp;
mod memory;
mod outcome;
mod permit;
mod scope;
mod settings;

pub use estimate::{estimate_prompt_tokens, estimate_prompt_tokens_with, TokenReservation};
pub use future::{BoxLimitFuture, LimitFuture};
pub use limiter::Limiter;
pub use mcp::McpCallCounter;
pub use memory::MemoryLimiter;
pub use outcome::{
    keep_tightest, keep_worst, LimitError, LimitKind, RateInfo, Refusal, UsageSnapshot,
};
pub use permit::{Admission, Lease, Permit, Settlement};
pub use portcullis_core::UtcOffset;
pub use portcullis_core::{TokenPrice, Usage, Usd};
pub use scope::{LimitScopes, Scope, ScopeKey, ScopeKind};
pub use settings::{LimitSettings, SettingsError, DEFAULT_CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS};
