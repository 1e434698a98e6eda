//! The admission ticket of a request: holds its concurrency slot and its token reservation.

use portcullis_core::{TokenPrice, Usage, UsageSource, Usd};
use std::fmt;

use crate::outcome::{RateInfo, UsageSnapshot};

/// What a request actually used, to replace its reservation with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Tokens the provider reported; `None` (missing, incomplete, error, abort) keeps the
    /// whole token reservation charged.
    pub tokens: Option<u64>,
    /// What they cost; `None` keeps the whole dollar reservation charged.
    pub usd: Option<Usd>,
}

impl Settlement {
    /// Nothing known: every reservation stays charged.
    pub const KEEP: Self = Self {
        tokens: None,
        usd: None,
    };

    /// What a finished response settles with: the provider's count (and its cost at `price`)
    /// when it reported one for the whole response; otherwise nothing, which keeps the whole
    /// reservation (usage missing, a truncated stream, a client abort: what the provider
    /// bills is unknown).
    pub fn of(usage: Option<&Usage>, price: Option<TokenPrice>) -> Self {
        let complete = usage.filter(|u| u.source == UsageSource::Provider && !u.truncated);
        Self {
            tokens: complete.map(|u| u.total_tokens),
            usd: complete.and_then(|u| price.and_then(|p| p.cost(u))),
        }
    }
}

/// Backend side of a [`Permit`]: what to give back when the request ends.
///
/// Implemented by each [`Limiter`](crate::Limiter) backend; [`Permit`] calls
/// [`Lease::finish`] exactly once.
pub trait Lease: Send + Sync {
    /// The request ended. Releases the concurrency slot in every scope. With
    /// `settlement.tokens = Some(actual_total_tokens)`, replaces the token reservation by the
    /// actual usage (releasing the difference, or charging the excess when the estimate was too
    /// low); with `None` (usage missing, error, or client abort) the full reservation stays
    /// charged. `settlement.usd` does the same for the dollar reservation.
    fn finish(self: Box<Self>, settlement: Settlement);
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
    price: Option<TokenPrice>,
}

impl Permit {
    /// A permit from a backend `lease`, the tightest-limit `rate` info and the reservation.
    pub fn new(lease: Box<dyn Lease>, rate: Option<RateInfo>, reserved_tokens: u64) -> Self {
        Self {
            lease: Some(lease),
            rate,
            reserved_tokens,
            price: None,
        }
    }

    /// The same permit for a request priced at `price` (its reservation's), so that
    /// [`Permit::settle_usage`] can settle the dollar reservation with the real cost.
    pub fn with_price(mut self, price: Option<TokenPrice>) -> Self {
        self.price = price;
        self
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

    /// The price the request was reserved at, when it was priced.
    pub fn price(&self) -> Option<&TokenPrice> {
        self.price.as_ref()
    }

    /// Tokens reserved for this request (0 for a request without reservation).
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved_tokens
    }

    /// Ends the request with the recorded token count (`Some(total_tokens)` when the provider
    /// reported it, `None` when usage is missing: then the full reservation is kept). Without
    /// the token kinds the cost is unknown: a dollar reservation stays charged, except with
    /// `Some(0)` (nothing was billed, e.g. the upstream could not be reached), which gives
    /// everything back.
    pub fn settle(self, usage: Option<u64>) {
        let usd = (usage == Some(0)).then_some(Usd::ZERO);
        self.finish(Settlement { tokens: usage, usd });
    }

    /// Ends the request with the usage the tap recorded: a complete, provider-reported usage
    /// replaces the token reservation by its total and the dollar reservation by its cost at
    /// the permit's price; a missing or truncated usage (`None` too) keeps both reservations.
    pub fn settle_usage(self, usage: Option<&Usage>) {
        let settlement = Settlement::of(usage, self.price);
        self.finish(settlement);
    }

    /// Ends the request with `settlement`.
    pub fn finish(mut self, settlement: Settlement) {
        if let Some(lease) = self.lease.take() {
            lease.finish(settlement);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.finish(Settlement::KEEP);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("rate", &self.rate)
            .field("reserved_tokens", &self.reserved_tokens)
            .field("priced", &self.price.is_some())
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
    fn finish(self: Box<Self>, settlement: Settlement) {
        let Admitted { lease, admission } = *self;
        lease.finish(settlement);
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
            lease.finish(Settlement::KEEP);
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
