//! The limiter interface the data plane calls; backends implement it.

use crate::estimate::TokenReservation;
use crate::outcome::{Refusal, UsageSnapshot};
use crate::permit::{Admission, Permit};
use crate::scope::{LimitScopes, ScopeKey};
use crate::settings::LimitSettings;

/// Rate limits and token budgets for requests, keyed by scope.
///
/// Implemented by [`MemoryLimiter`](crate::MemoryLimiter) (the embedded default) and later by a
/// shared backend. Every method is non-blocking; settings are passed per call, so a change of
/// settings applies to the next request.
pub trait Limiter: Send + Sync {
    /// Admits or refuses one request against every scope in `scopes`, all or nothing.
    ///
    /// Admission takes one request from each `rpm` budget, one concurrency slot from each
    /// scope, and charges `reservation` (for LLM requests) to each per-minute and per-day token
    /// budget. A refusal charges nothing anywhere.
    fn acquire(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> Result<Permit, Refusal>;

    /// Takes a concurrency slot in every scope of `scopes` for a request that just arrived
    /// (before its body is read, so a stalled upload holds a slot too). Charges nothing else.
    fn admit(&self, scopes: &LimitScopes<'_>) -> Result<Admission, Refusal>;

    /// [`Limiter::acquire`] for a request that holds `admission` (its concurrency slot, taken by
    /// [`Limiter::admit`] with the same scopes): checks and charges the requests-per-minute and
    /// token limits, all or nothing. On success the permit holds the slot; on refusal the
    /// admission is dropped and the slot freed.
    fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> Result<Permit, Refusal>;

    /// Usage of one scope, for the policy input. Unknown keys report zero.
    fn usage_snapshot(&self, key: &ScopeKey) -> UsageSnapshot;

    /// Forgets idle scopes to bound memory; returns how many were dropped. Call periodically
    /// (e.g. every minute). Backends that expire state by themselves do nothing.
    fn sweep(&self) -> usize {
        0
    }

    /// [`Limiter::acquire`] for a single agent scope.
    fn acquire_one(
        &self,
        key: &ScopeKey,
        settings: &LimitSettings,
        reservation: Option<TokenReservation>,
    ) -> Result<Permit, Refusal> {
        self.acquire(&LimitScopes::agent(key, settings), reservation)
    }
}
