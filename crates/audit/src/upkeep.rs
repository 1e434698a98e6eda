//! The store's audit upkeep, run in the background: day partitions made ahead (PostgreSQL)
//! and `audit.retention` applied, at start and then every [`UPKEEP_EVERY`].

use portcullis_core::Clock;
use portcullis_store::Store;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the upkeep runs (partitions are made three days ahead, so an hour leaves room
/// for long outages of the upkeep itself).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// Runs [`Store::maintain_audit`] now and every [`UPKEEP_EVERY`] until `shutdown` turns
/// true. Failures are logged and retried on the next round (records still go to the
/// default partition, or wait in the spool, meanwhile).
pub async fn run_upkeep(
    store: Store,
    retention: Option<Duration>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        let now_ms = clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        match store.maintain_audit(now_ms, retention).await {
            Ok(done) if done.partitions_dropped > 0 || done.rows_deleted > 0 => info!(
                partitions_created = done.partitions_created,
                partitions_dropped = done.partitions_dropped,
                rows_deleted = done.rows_deleted,
                "audit retention applied"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "audit upkeep failed; retrying next round"),
        }
    }
}
