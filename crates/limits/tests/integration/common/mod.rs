//! Shared helpers for the limiter tests.
#![allow(dead_code, unreachable_pub)]

use portcullis_core::ManualClock;
use portcullis_limits::{
    LimitSettings, Limiter, MemoryLimiter, Permit, Refusal, ScopeKey, TokenReservation,
};
use std::sync::Arc;
use std::time::Duration;

/// 2026-11-25T00:00:00Z, a UTC midnight.
pub const MIDNIGHT: u64 = 1_795_564_800;
/// Noon of that day: far from any day boundary.
pub const NOON: u64 = MIDNIGHT + 12 * 3600;

pub fn limiter_at(unix: u64) -> (Arc<ManualClock>, MemoryLimiter) {
    let clock = Arc::new(ManualClock::at(unix));
    let limiter = MemoryLimiter::new(clock.clone());
    (clock, limiter)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn settings() -> LimitSettings {
    LimitSettings::default()
}

pub fn llm(
    limiter: &MemoryLimiter,
    key: &ScopeKey,
    s: &LimitSettings,
    tokens: u64,
) -> Result<Permit, Refusal> {
    limiter.acquire_one(key, s, Some(TokenReservation::tokens(tokens)))
}

pub fn plain(
    limiter: &MemoryLimiter,
    key: &ScopeKey,
    s: &LimitSettings,
) -> Result<Permit, Refusal> {
    limiter.acquire_one(key, s, None)
}
