//! The limiter's background tasks: settlements in order, lease renewal, and the probe that
//! reconnects to an unreachable Redis. Each holds the limiter weakly and ends with it.

use futures_util::future::join_all;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;

use crate::lease::{Job, Settle};
use crate::scripts::{RENEW, SETTLE};
use crate::shared::Shared;
use crate::wire::MAX_EXACT;

/// Settlements sent together (concurrently on the multiplexed connection).
const BATCH: usize = 64;
/// Leases renewed per script call.
const RENEW_BATCH: usize = 256;

/// Runs settlements as they come, a batch at a time; a flush is answered once everything sent
/// before it is done. While Redis is unreachable a settlement is dropped: its lease expires by
/// itself and its reservation stays charged (never an overshoot).
pub(crate) async fn settle_worker(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(job) = rx.recv().await {
        batch.push(job);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut settles = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Settle(s) => settles.push(s),
                Job::Flush(tx) => flushes.push(tx),
            }
        }
        if let Some(shared) = shared.upgrade() {
            join_all(settles.iter().map(|s| settle(&shared, s))).await;
        }
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

async fn settle(shared: &Shared, s: &Settle) {
    if shared.health.is_degraded() {
        return;
    }
    let mut inv = SETTLE.prepare_invoke();
    for k in s.keys.iter() {
        inv.key(k.as_str());
    }
    inv.arg(shared.now_arg())
        .arg(s.lease.map(|n| shared.lease_id_of(n)).unwrap_or_default())
        .arg(s.usage.map_or(-1, |u| u as i64))
        .arg(s.reserved)
        .arg(s.usd.map_or(-1, |u| u as i64))
        .arg(s.reserved_usd);
    for &(sec, ds, ms, off) in &s.scopes {
        inv.arg(sec).arg(ds).arg(ms).arg(off);
    }
    if let Err(why) = shared.eval::<i64>(&inv).await {
        debug!(error = %why, "settlement not sent; the lease expires by itself");
    }
}

/// Renews every lease this process holds, three times per lease lifetime.
pub(crate) async fn renew_leases(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(s) => (s.settings.lease / 3).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.health.is_degraded() {
            continue;
        }
        let held = shared.book.snapshot();
        let ttl = shared.settings.lease.as_micros().min(u128::from(MAX_EXACT)) as u64;
        for chunk in held.chunks(RENEW_BATCH) {
            let mut inv = RENEW.prepare_invoke();
            for (set, _) in chunk {
                inv.key(set.as_str());
            }
            inv.arg(shared.now_arg()).arg(ttl);
            for (_, n) in chunk {
                inv.arg(shared.lease_id_of(*n));
            }
            if shared.eval::<i64>(&inv).await.is_err() {
                break;
            }
        }
    }
}

/// While degraded, tries to reconnect every `probe_every`; the first success ends the outage.
pub(crate) async fn probe(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(s) => s.settings.probe_every.max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.health.is_degraded() {
            continue;
        }
        match shared.connect().await {
            Ok(()) => shared.health.recover(),
            Err(why) => debug!(error = %why, "limits backend still unreachable"),
        }
    }
}
