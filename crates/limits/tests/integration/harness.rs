//! The limiter under test, the same for every backend: the test bodies in this directory run
//! against the in-memory limiter here and against Redis in `portcullis-limits-redis` (which
//! includes them), so both backends answer the same table of cases.
#![allow(dead_code, unreachable_pub)]

use portcullis_limits::{
    Admission, LimitError, LimitScopes, LimitSettings, Limiter, Permit, Refusal, ScopeKey,
    TokenReservation, UsageSnapshot,
};
use std::ops::Deref;
use std::time::Duration;

/// 2026-11-25T00:00:00Z, a UTC midnight.
pub const MIDNIGHT: u64 = 1_795_564_800;
/// Noon of that day: far from any day boundary.
pub const NOON: u64 = MIDNIGHT + 12 * 3600;

/// A limiter with answers shaped for assertions: refusals as [`Refusal`] (a backend that is
/// unavailable fails the test). Every call first waits for the settlements started before it
/// ([`Limiter::flush`]): a shared backend frees slots and refunds tokens in the background,
/// and the table checks what the backend decides once they landed, not how soon they land.
pub struct TestLimiter<L>(pub L);

impl<L> Deref for TestLimiter<L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.0
    }
}

fn refusal<T>(r: Result<T, LimitError>) -> Result<T, Refusal> {
    r.map_err(|e| match e {
        LimitError::Limited(r) => r,
        LimitError::Unavailable(why) => panic!("the limits backend is unavailable: {why}"),
    })
}

impl<L: Limiter> TestLimiter<L> {
    pub async fn acquire(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> Result<Permit, Refusal> {
        self.0.flush().await;
        refusal(self.0.acquire(scopes, reservation).await)
    }

    pub async fn acquire_one(
        &self,
        key: &ScopeKey,
        settings: &LimitSettings,
        reservation: Option<TokenReservation>,
    ) -> Result<Permit, Refusal> {
        self.0.flush().await;
        refusal(self.0.acquire_one(key, settings, reservation).await)
    }

    pub async fn admit(&self, scopes: &LimitScopes<'_>) -> Result<Admission, Refusal> {
        self.0.flush().await;
        refusal(self.0.admit(scopes).await)
    }

    pub async fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> Result<Permit, Refusal> {
        self.0.flush().await;
        refusal(
            self.0
                .acquire_admitted(scopes, reservation, admission)
                .await,
        )
    }

    /// Usage once every settlement started before has landed.
    pub async fn usage_snapshot(&self, key: &ScopeKey) -> UsageSnapshot {
        self.0.flush().await;
        self.0.usage_snapshot(key).await
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn settings() -> LimitSettings {
    LimitSettings::default()
}

pub async fn llm<L: Limiter>(
    limiter: &TestLimiter<L>,
    key: &ScopeKey,
    s: &LimitSettings,
    tokens: u64,
) -> Result<Permit, Refusal> {
    limiter
        .acquire_one(key, s, Some(TokenReservation::tokens(tokens)))
        .await
}

pub async fn plain<L: Limiter>(
    limiter: &TestLimiter<L>,
    key: &ScopeKey,
    s: &LimitSettings,
) -> Result<Permit, Refusal> {
    limiter.acquire_one(key, s, None).await
}
