//! The change feed: PostgreSQL `LISTEN portcullis_changes`, so a replica learns within
//! milliseconds that another one changed the store.
//!
//! A notification is only a wake-up: the revision ([`Store::revision`]) stays the truth, so
//! a lost, duplicated or coalesced notification costs nothing but a read. While the feed's
//! connection is down, notifications sent meanwhile are lost; so after every (re)connect
//! the feed reports [`FeedEvent::Resync`] and the reader reloads everything. A slow poll of
//! the revision remains the safety net for what no feed can see (a half-open connection).

use crate::backend::Pool;
use crate::store::{backoff, Store};
use sqlx::postgres::{PgListener, PgPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The channel the revision trigger notifies (migration 0001, PostgreSQL).
pub const CHANGES_CHANNEL: &str = "portcullis_changes";
/// How often the feed checks its connection with a query: a connection that went silent
/// (a network partition leaves no error behind) is found within this plus [`PING_TIMEOUT`].
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// Longest wait for the answer to the check.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What woke the reader up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    /// Another process committed a change (or several): read the revision.
    Changed,
    /// The feed (re)connected: changes may have been missed while it was down; reload
    /// everything.
    Resync,
}

/// Wake-ups on changes to a shared store; see the module docs. Dropping it stops listening.
#[derive(Debug)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    wake: Notify,
    resync: AtomicBool,
    listening: AtomicBool,
    reconnect: Notify,
    last_error: Mutex<Option<String>>,
}

impl Store {
    /// A change feed on this store: `Some` on PostgreSQL (a task listening on a connection
    /// of its own, reconnecting with backoff), `None` on SQLite (poll [`Store::revision`]).
    /// Must be called inside a Tokio runtime.
    pub fn change_feed(&self) -> Option<ChangeFeed> {
        let Pool::Postgres(pool) = &self.pool else {
            return None;
        };
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(listen(pool.clone(), shared.clone()));
        Some(ChangeFeed { shared, task })
    }
}

impl ChangeFeed {
    /// Waits for the next wake-up. Several notifications arriving while nobody waits are
    /// reported once; a reconnect is always reported as [`FeedEvent::Resync`].
    pub async fn next(&self) -> FeedEvent {
        self.shared.wake.notified().await;
        if self.shared.resync.swap(false, Ordering::AcqRel) {
            FeedEvent::Resync
        } else {
            FeedEvent::Changed
        }
    }

    /// Whether the feed's connection is up and listening.
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::Acquire)
    }

    /// The last error of the feed's connection, if it is down.
    pub fn last_error(&self) -> Option<String> {
        if self.is_listening() {
            return None;
        }
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drops the feed's connection and connects again (then reports a resync). For a
    /// reader that suspects the connection is half-open: e.g. a poll found a change no
    /// notification announced.
    pub fn reconnect(&self) {
        self.shared.reconnect.notify_one();
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends the inner loop below; the outer loop reconnects.
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}

async fn listen(pool: PgPool, shared: Arc<Shared>) {
    let mut attempt: u32 = 0;
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match connect(&pool).await {
            Ok(l) => l,
            Err(e) => {
                if attempt == 0 {
                    warn!(error = %e, "store change feed cannot connect; retrying");
                }
                set_error(&shared, e.to_string());
                attempt = attempt.saturating_add(1);
                // 10 ms doubling to 320 ms (+ jitter), then every ~5 s.
                let pause = if attempt > 6 {
                    std::time::Duration::from_secs(5)
                } else {
                    backoff(attempt)
                };
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if attempt > 0 {
            info!(attempts = attempt, "store change feed reconnected");
        }
        shared.listening.store(true, Ordering::Release);
        shared.resync.store(true, Ordering::Release);
        shared.wake.notify_one();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let lost = loop {
            tokio::select! {
                r = listener.try_recv() => match r {
                    Ok(Some(_)) => shared.wake.notify_one(),
                    Ok(None) => break "connection lost".to_owned(),
                    Err(e) => break e.to_string(),
                },
                () = shared.reconnect.notified() => break "reconnect requested".to_owned(),
                _ = ping.tick() => {
                    // Interrupting a receive is harmless: what it had read stays buffered,
                    // and any doubt ends in a reconnect, which resyncs everything.
                    let check = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(PING_TIMEOUT, check).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break format!("connection check failed: {e}"),
                        Err(_) => break "connection check timed out".to_owned(),
                    }
                }
            }
        };
        shared.listening.store(false, Ordering::Release);
        if !pool.is_closed() {
            warn!(reason = %lost, "store change feed disconnected; reconnecting");
        }
        set_error(&shared, lost);
        attempt = 1;
    }
}

fn set_error(shared: &Shared, e: String) {
    *shared
        .last_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
}
