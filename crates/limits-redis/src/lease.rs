//! What an admitted request holds in Redis, and giving it back: the slot's lease and the
//! token charge, settled in the background so the request never waits for it.

use portcullis_limits::{Lease, Settlement};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

use crate::wire::{cap, Charged};

/// The leases this process holds, renewed while their requests are in flight.
#[derive(Debug, Default)]
pub(crate) struct LeaseBook {
    held: Mutex<HashMap<u64, Arc<[String]>>>,
}

impl LeaseBook {
    pub(crate) fn insert(&self, lease: u64, lease_sets: Arc<[String]>) {
        if let Ok(mut h) = self.held.lock() {
            h.insert(lease, lease_sets);
        }
    }

    pub(crate) fn remove(&self, lease: u64) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&lease);
        }
    }

    /// Every (lease set, lease number) pair held now.
    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        let Ok(h) = self.held.lock() else {
            return Vec::new();
        };
        h.iter()
            .flat_map(|(n, sets)| sets.iter().map(move |s| (s.clone(), *n)))
            .collect()
    }
}

/// A settlement for the background worker (`lua/settle.lua`).
#[derive(Debug)]
pub(crate) struct Settle {
    pub(crate) keys: Arc<[String]>,
    /// The lease to remove, if this lease took a slot.
    pub(crate) lease: Option<u64>,
    /// Actual tokens, when the reservation is to be replaced.
    pub(crate) usage: Option<u64>,
    pub(crate) reserved: u64,
    /// Actual micro-dollars, when the dollar reservation is to be replaced.
    pub(crate) usd: Option<u64>,
    pub(crate) reserved_usd: u64,
    /// Per scope: window second, day start, month start, day-reset offset (−1, −1, −1 when
    /// nothing was charged).
    pub(crate) scopes: Vec<(i64, i64, i64, i64)>,
}

/// Work for the background worker, in order.
#[derive(Debug)]
pub(crate) enum Job {
    Settle(Settle),
    /// Answered once every job sent before it is done.
    Flush(oneshot::Sender<()>),
}

/// What one Redis admission took.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) reserved: u64,
    pub(crate) reserved_usd: u64,
    pub(crate) charged: Option<Charged>,
    pub(crate) offsets: Vec<i64>,
}

/// The backend side of a permit or admission the Redis limiter granted.
pub(crate) struct RedisLease {
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    pub(crate) book: Arc<LeaseBook>,
    pub(crate) keys: Arc<[String]>,
    pub(crate) lease: Option<u64>,
    pub(crate) taken: Taken,
}

impl Lease for RedisLease {
    fn finish(self: Box<Self>, settlement: Settlement) {
        if let Some(n) = self.lease {
            self.book.remove(n);
        }
        let t = &self.taken;
        let usage = settlement
            .tokens
            .map(cap)
            .filter(|u| t.charged.is_some() && *u != t.reserved);
        let usd = settlement
            .usd
            .map(|u| cap(u.micros()))
            .filter(|u| t.charged.is_some() && *u != t.reserved_usd);
        if self.lease.is_none() && usage.is_none() && usd.is_none() {
            return;
        }
        let scopes = match &t.charged {
            Some(c) => c
                .iter()
                .zip(&t.offsets)
                .map(|(&(sec, ds, ms), &off)| (sec, ds, ms, off))
                .collect(),
            None => t.offsets.iter().map(|&off| (-1, -1, -1, off)).collect(),
        };
        // The worker is gone only when the process is shutting down: the lease then expires
        // in Redis by itself and the reservation stays charged (never an overshoot).
        let _ = self.jobs.send(Job::Settle(Settle {
            keys: self.keys.clone(),
            lease: self.lease,
            usage,
            reserved: t.reserved,
            usd,
            reserved_usd: t.reserved_usd,
            scopes,
        }));
    }
}

/// The lease of a fallback that admits without limits (`on_redis_error = "allow"`).
pub(crate) struct NoLease;

impl Lease for NoLease {
    fn finish(self: Box<Self>, _: Settlement) {}
}
