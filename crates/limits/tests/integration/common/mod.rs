//! The in-memory backend for the shared test bodies.
#![allow(dead_code, unreachable_pub)]

#[path = "../harness.rs"]
mod harness;

pub use harness::*;

use portcullis_core::ManualClock;
use portcullis_limits::MemoryLimiter;
use std::sync::Arc;

/// Where token counts saturate.
pub const SATURATED: u64 = u64::MAX;

/// A fresh in-memory limiter on a manual clock at `unix`.
pub async fn limiter_at(unix: u64) -> (Arc<ManualClock>, TestLimiter<MemoryLimiter>) {
    let clock = Arc::new(ManualClock::at(unix));
    let limiter = MemoryLimiter::new(clock.clone());
    (clock, TestLimiter(limiter))
}
