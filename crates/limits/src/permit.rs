//! The admission ticket of a request: holds its concurrency slot and its token reservation.

use std::fmt;

use crate::outcome::RateInfo;

/// Backend side of a [`Permit`]: what to give back when the request ends.
///
/// Implemented by each [`Limiter`](crate::Limiter) backend; [`Permit`] calls
/// [`Lease::finish`] exactly once.
pub trait Lease: Send + Sync {
    /// The request ended. Releases the concurrency slot in every scope. With
    /// `Some(actual_total_tokens)`, replaces the token reservation by the actual usage (releasing
    /// the difference, or charging the excess when the estimate was too low); with `None`
    /// (usage missing, error, or client abort) the full reservation stays charged.
    fn finish(self: Box<Self>, usage: Option<u64>);
}

/// An admitted request. Hold it for the life of the request.
///
/// - [`Permit::settle`] with the usage the tap recorded when the response ends;
/// - dropping it without settling (client abort, error path) keeps the token reservation but
///   releases the concurrency slot.
///
/// When the upstream failed before answering (connect error, timeout before headers), nothing
/// was billed: settle with `Some(0)` to give the whole reservation back.
#[must_use = "dropping a permit ends the request: its concurrency slot is released"]
pub struct Permit {
    lease: Option<Box<dyn Lease>>,
    rate: Option<RateInfo>,
    reserved_tokens: u64,
}

impl Permit {
    /// A permit from a backend `lease`, the tightest-limit `rate` info and the reservation.
    pub fn new(lease: Box<dyn Lease>, rate: Option<RateInfo>, reserved_tokens: u64) -> Self {
        Self {
            lease: Some(lease),
            rate,
            reserved_tokens,
        }
    }

    /// The tightest rate limit after this admission, for `X-RateLimit-*` headers; `None` when no
    /// rate limit applies.
    pub fn rate_info(&self) -> Option<&RateInfo> {
        self.rate.as_ref()
    }

    /// Tokens reserved for this request (0 for a request without reservation).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved_tokens
    }

    /// Ends the request with the recorded usage (`Some(total_tokens)` when the provider reported
    /// it, `None` when usage is missing: then the full reservation is kept).
    pub fn settle(mut self, usage: Option<u64>) {
        if let Some(lease) = self.lease.take() {
            lease.finish(usage);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish(None);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("rate", &self.rate)
            .field("reserved_tokens", &self.reserved_tokens)
            .field("open", &self.lease.is_some())
            .finish()
    }
}

/// A request's concurrency slot, taken when it arrives (before its body is read), so a stalled
/// upload holds a slot too. [`Limiter::acquire_admitted`](crate::Limiter::acquire_admitted)
/// turns it into the request's [`Permit`]; dropping it frees the slot.
#[must_use = "dropping an admission frees its concurrency slot"]
pub struct Admission {
    lease: Option<Box<dyn Lease>>,
}

impl Admission {
    /// An admission from a backend `lease` that frees the slot when finished.
    pub fn new(lease: Box<dyn Lease>) -> Self {
        Self { lease: Some(lease) }
    }

    /// An admission that holds nothing (no limiter).
    pub fn none() -> Self {
        Self { lease: None }
    }

    /// The slot now belongs to the request's permit, whose lease frees it: forget it here.
    pub fn into_permit(mut self) {
        self.lease = None;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish(None);
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("open", &self.lease.is_some())
            .finish()
    }
}
