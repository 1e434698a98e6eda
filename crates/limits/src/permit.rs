//! The admission ticket of a request: holds its concurrency slot and its token reservation.

use std::fmt;

use crate::outcome::{RateInfo, UsageSnapshot};

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

    /// A permit for a request that holds `admission` (its concurrency slot): `lease` gives back
    /// the request's charge, then the admission frees the slot. Whichever backend took the slot
    /// frees it, so an admission from one backend and a charge from another (a shared backend
    /// that fell back to local limits in between) each give back what they took.
    pub fn with_admission(
        lease: Box<dyn Lease>,
        admission: Admission,
        rate: Option<RateInfo>,
        reserved_tokens: u64,
    ) -> Self {
        Self::new(
            Box::new(Admitted { lease, admission }),
            rate,
            reserved_tokens,
        )
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

/// A charge and the admission whose slot it rides on, finished in that order.
struct Admitted {
    lease: Box<dyn Lease>,
    admission: Admission,
}

impl Lease for Admitted {
    fn finish(self: Box<Self>, usage: Option<u64>) {
        let Admitted { lease, admission } = *self;
        lease.finish(usage);
        drop(admission);
    }
}

/// A request's concurrency slot, taken when it arrives (before its body is read), so a stalled
/// upload holds a slot too. [`Limiter::acquire_admitted`](crate::Limiter::acquire_admitted)
/// turns it into the request's [`Permit`] (which then holds it); dropping it frees the slot.
#[must_use = "dropping an admission frees its concurrency slot"]
pub struct Admission {
    lease: Option<Box<dyn Lease>>,
    usage: UsageSnapshot,
}

impl Admission {
    /// An admission from a backend `lease` that frees the slot when finished, with the agent
    /// scope's `usage` as the backend saw it when it took the slot.
    pub fn new(lease: Box<dyn Lease>, usage: UsageSnapshot) -> Self {
        Self {
            lease: Some(lease),
            usage,
        }
    }

    /// An admission that holds nothing (no limiter, or a backend that admits without limits).
    pub fn none() -> Self {
        Self {
            lease: None,
            usage: UsageSnapshot::default(),
        }
    }

    /// An admission that holds nothing but reports `usage`.
    pub fn unlimited(usage: UsageSnapshot) -> Self {
        Self { lease: None, usage }
    }

    /// The agent scope's usage when the slot was taken (before this request is charged): what
    /// the policy input's `usage` shows, read in the same step as the slot.
    pub fn usage(&self) -> UsageSnapshot {
        self.usage
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
            .field("usage", &self.usage)
            .finish()
    }
}
