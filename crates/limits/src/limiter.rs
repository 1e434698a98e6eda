//! The limiter interface the data plane calls; backends implement it.

use crate::estimate::TokenReservation;
use crate::future::LimitFuture;
use crate::outcome::{LimitError, UsageSnapshot};
use crate::permit::{Admission, Permit};
use crate::scope::{LimitScopes, ScopeKey};
use crate::settings::LimitSettings;

/// Rate limits and token budgets for requests, keyed by scope.
///
/// Implemented by [`MemoryLimiter`](crate::MemoryLimiter) (the embedded default, whose answers
/// are always [`LimitFuture::ready`]) and by shared backends that ask a server (a boxed
/// future). A call copies what it needs from its arguments before it returns, so the future
/// borrows only the limiter. Settings are passed per call, so a change of settings applies to
/// the next request.
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
    ) -> LimitFuture<'_, Result<Permit, LimitError>>;

    /// Takes a concurrency slot in every scope of `scopes` for a request that just arrived
    /// (before its body is read, so a stalled upload holds a slot too). Charges nothing else.
    /// The admission carries the agent scope's usage, read in the same step.
    fn admit(&self, scopes: &LimitScopes<'_>) -> LimitFuture<'_, Result<Admission, LimitError>>;

    /// [`Limiter::acquire`] for a request that holds `admission` (its concurrency slot, taken by
    /// [`Limiter::admit`] with the same scopes): checks and charges the requests-per-minute and
    /// token limits, all or nothing. On success the permit holds the admission; on refusal the
    /// admission is dropped and the slot freed.
    fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>>;

    /// Usage of one scope, for the policy input. Unknown keys report zero.
    fn usage_snapshot(&self, key: &ScopeKey) -> LimitFuture<'_, UsageSnapshot>;

    /// Waits until every settlement this process started (permits settled or dropped) has
    /// reached the backend. Settling never blocks the request that settles; a shared backend
    /// sends it in the background, and this is how a graceful shutdown or a test waits for it.
    fn flush(&self) -> LimitFuture<'_, ()> {
        LimitFuture::ready(())
    }

    /// Forgets idle scopes to bound memory; returns how many were dropped. Call periodically
    /// (e.g. every minute). Backends that expire state by themselves do nothing.
    fn sweep(&self) -> usize {
        0
    }

    /// Why the backend is degraded (cannot reach its server and applies its fallback), or
    /// `None` when it works as configured. Shown in `/readyz`.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// [`Limiter::acquire`] for a single agent scope.
    fn acquire_one(
        &self,
        key: &ScopeKey,
        settings: &LimitSettings,
        reservation: Option<TokenReservation>,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        self.acquire(&LimitScopes::agent(key, settings), reservation)
    }
}

impl<L: Limiter + ?Sized> Limiter for std::sync::Arc<L> {
    fn acquire(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        (**self).acquire(scopes, reservation)
    }

    fn admit(&self, scopes: &LimitScopes<'_>) -> LimitFuture<'_, Result<Admission, LimitError>> {
        (**self).admit(scopes)
    }

    fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        (**self).acquire_admitted(scopes, reservation, admission)
    }

    fn usage_snapshot(&self, key: &ScopeKey) -> LimitFuture<'_, UsageSnapshot> {
        (**self).usage_snapshot(key)
    }

    fn flush(&self) -> LimitFuture<'_, ()> {
        (**self).flush()
    }

    fn sweep(&self) -> usize {
        (**self).sweep()
    }

    fn degraded(&self) -> Option<String> {
        (**self).degraded()
    }
}
