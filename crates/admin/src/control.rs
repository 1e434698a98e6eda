//! The control plane: the store (source of truth), the in-memory agent registry the
//! data plane reads, and the operator-key cache. Every write goes to the store first
//! and is then loaded into the registry, so the next proxy request sees it.
//!
//! Changes made elsewhere (the CLI, another replica) arrive through [`ControlPlane::watch`]:
//! on PostgreSQL a notification wakes it within milliseconds of the other writer's commit
//! (the revision it then reads is the truth), every reconnect of that feed reloads
//! everything (notifications sent while it was down are lost), and a slow poll catches what
//! no notification announced. On SQLite it polls. While the store is unreachable the data
//! plane keeps deciding on the last state loaded, and `/readyz` says so ([`StoreReady`]).

use crate::operator::KeyCache;
use crate::ReadyCheck;
use portcullis_audit::AuditMetrics;
use portcullis_config::CredentialConfig;
use portcullis_core::Clock;
use portcullis_identity::Registry;
use portcullis_store::{Backend, FeedEvent, SealKey, Store};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, warn};

/// How often [`ControlPlane::watch`] polls [`Store::revision`] on SQLite (the only way it
/// learns of CLI writes there).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often it polls on PostgreSQL, where notifications do the work: the safety net for a
/// notification that never came.
pub const SAFETY_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for the revision; longer counts as the store being unreachable.
const REVISION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin API and the store watcher work on.
///
/// Construct it once in the binary with [`ControlPlane::new`], call
/// [`ControlPlane::reload_registry`] at start, spawn [`ControlPlane::watch`], and hand it
/// to [`crate::Admin::with_control_plane`].
pub struct ControlPlane {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    /// Serialises reloads (a slow reload that read the store before a write can never
    /// overwrite the snapshot of a later reload that read it after) and holds the store
    /// revision the current snapshot was loaded at.
    loaded: Mutex<Option<u64>>,
    /// Serialises admin read-modify-write sequences (two concurrent rotations must not
    /// both start from the same generation).
    pub(crate) write_lock: Mutex<()>,
    pub(crate) keys: KeyCache,
    hooks: std::sync::Mutex<Vec<Arc<dyn ReloadHook>>>,
    credentials: std::sync::OnceLock<CredentialsApi>,
    health: std::sync::Mutex<Health>,
}

/// What the watcher last learned about the store.
#[derive(Debug, Clone, Default)]
struct Health {
    /// Unix seconds since when the store has not answered, and its last error.
    down: Option<(u64, String)>,
    /// The change feed's state: `None` without a feed (SQLite).
    listening: Option<bool>,
    /// When the last reload happened (Unix seconds) and at which revision.
    loaded_at: Option<(u64, u64)>,
}

/// What the credentials endpoints need: the sealing key and the config-declared credentials.
pub struct CredentialsApi {
    /// Seals secrets written through the API.
    pub key: Arc<SealKey>,
    /// `[[credentials]]` of the config file (read-only here).
    pub config: Vec<CredentialConfig>,
}

/// Something else loaded from the store along with the registry (e.g. the stored
/// credentials the data plane injects): called after every registry reload.
pub trait ReloadHook: Send + Sync + 'static {
    /// Reloads from `store`; failures are the hook's to log (the last good state stays).
    fn reload<'a>(&'a self, store: &'a Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

impl ControlPlane {
    /// A control plane over `store`, publishing agents into `registry`, stamping writes
    /// with `clock`. The registry is not loaded until [`ControlPlane::reload_registry`].
    pub fn new(store: Store, registry: Arc<Registry>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            clock,
            loaded: Mutex::new(None),
            write_lock: Mutex::new(()),
            keys: KeyCache::default(),
            hooks: std::sync::Mutex::new(Vec::new()),
            credentials: std::sync::OnceLock::new(),
            health: std::sync::Mutex::new(Health::default()),
        })
    }

    /// Runs `hook` after every registry reload (at start, on store changes, after writes).
    pub fn add_reload_hook(&self, hook: Arc<dyn ReloadHook>) {
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hook);
    }

    /// Enables `/v1/credentials` (once).
    pub fn enable_credentials(&self, api: CredentialsApi) {
        let _ = self.credentials.set(api);
    }

    pub(crate) fn credentials(&self) -> Option<&CredentialsApi> {
        self.credentials.get()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registry the data plane reads.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The clock writes are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Loads every agent and sub-agent from the store into the registry in one swap and
    /// returns the number of top-level agents (the banner's `agents=N`).
    pub async fn reload_registry(&self) -> portcullis_store::Result<usize> {
        let mut loaded = self.loaded.lock().await;
        // Revision first: a write landing between the two reads is loaded now and
        // loaded again on the next watcher tick, never missed.
        let revision = self.store.revision().await?;
        let agents = self.store.list_agents(None).await?;
        self.registry.replace(agents);
        let hooks: Vec<_> = self
            .hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for hook in hooks {
            hook.reload(&self.store).await;
        }
        *loaded = Some(revision);
        let now = self.clock.unix_secs();
        self.with_health(|h| {
            h.loaded_at = Some((now, revision));
            h.down = None;
        });
        Ok(self.registry.len())
    }

    /// The store revision the registry was last loaded at (`None` before the first load).
    pub async fn loaded_revision(&self) -> Option<u64> {
        *self.loaded.lock().await
    }

    /// Keeps the registry (and every reload hook) in step with the store until `shutdown`
    /// turns true: on PostgreSQL, woken by the store's change feed, reloading everything
    /// after each (re)connect of the feed, and polling [`Store::revision`] every
    /// [`SAFETY_POLL_INTERVAL`]; on SQLite, polling every [`WATCH_INTERVAL`]. Reloads only
    /// when the revision moved (or after a reconnect). Store errors are logged and retried;
    /// the registry keeps serving the last good snapshot meanwhile.
    pub async fn watch(&self, mut shutdown: watch::Receiver<bool>) {
        let feed = self.store.change_feed();
        let every = match self.store.backend() {
            Backend::Sqlite => WATCH_INTERVAL,
            Backend::Postgres => SAFETY_POLL_INTERVAL,
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let listening = feed.as_ref().map(|f| f.is_listening());
            self.with_health(|h| h.listening = listening);
            let resync = tokio::select! {
                _ = tick.tick() => false,
                ev = next_event(feed.as_ref()) => ev == FeedEvent::Resync,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            };
            self.sync(resync).await;
        }
    }

    /// One watcher step: read the revision, reload when it moved or when `resync`.
    async fn sync(&self, resync: bool) {
        let rev = match tokio::time::timeout(REVISION_TIMEOUT, self.store.revision()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.store_down(&e.to_string()),
            Err(_) => return self.store_down("the store did not answer in time"),
        };
        if !resync && self.loaded_revision().await == Some(rev) {
            self.with_health(|h| h.down = None);
            return;
        }
        // Operator keys may have been revoked elsewhere: forget cached lookups too.
        self.keys.clear();
        match self.reload_registry().await {
            Ok(n) => info!(
                revision = rev,
                agents = n,
                resync,
                "agent registry reloaded from store"
            ),
            Err(e) => {
                warn!(error = %e, "agent registry reload failed");
                self.store_down(&e.to_string());
            }
        }
    }

    fn store_down(&self, error: &str) {
        let now = self.clock.unix_secs();
        let first = self.with_health(|h| {
            let first = h.down.is_none();
            let since = h.down.as_ref().map_or(now, |d| d.0);
            h.down = Some((since, error.to_owned()));
            first
        });
        if first {
            warn!(store = %self.store.describe(), error, "store unreachable; deciding on the last loaded state");
        } else {
            debug!(error, "store still unreachable");
        }
    }

    fn with_health<T>(&self, f: impl FnOnce(&mut Health) -> T) -> T {
        f(&mut self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The store's state for `/readyz`: `(degraded, detail)`.
    pub fn store_status(&self) -> (bool, Value) {
        let h = self.with_health(|h| h.clone());
        let feed = match h.listening {
            None => "none (polling)",
            Some(true) => "listening",
            Some(false) => "reconnecting",
        };
        let mut detail = json!({
            "backend": self.store.describe(),
            "state": if h.down.is_some() { "unreachable" } else { "ok" },
            "change_feed": feed,
        });
        if let Some((since, error)) = &h.down {
            detail["unreachable_since"] = json!(since);
            detail["error"] = json!(error);
            detail["serving"] = json!("the last state loaded from the store");
        }
        if let Some((at, rev)) = h.loaded_at {
            detail["loaded_at"] = json!(at);
            detail["revision"] = json!(rev);
        }
        (h.down.is_some() || h.listening == Some(false), detail)
    }

    /// Like [`ControlPlane::reload_registry`], for use after an admin write: a failure is
    /// logged (the watcher retries within a second) instead of failing the request that
    /// already committed.
    pub(crate) async fn reload_after_write(&self) {
        match self.reload_registry().await {
            Ok(n) => debug!(agents = n, "agent registry reloaded after admin write"),
            Err(e) => warn!(error = %e, "agent registry reload after admin write failed"),
        }
    }
}

/// The next event of `feed`; never, without one.
async fn next_event(feed: Option<&portcullis_store::ChangeFeed>) -> FeedEvent {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

/// `/readyz` component `store`: always ready (the data plane decides on the last loaded
/// state while the store is away), degraded while the store does not answer or its change
/// feed reconnects; the detail names the store (never its password), when it went away and
/// why, and how many audit bytes wait in the spool.
pub struct StoreReady {
    control: Arc<ControlPlane>,
    audit: Option<AuditMetrics>,
}

impl StoreReady {
    /// The check for `control`'s store; `audit` adds the spool's backlog to the detail.
    pub fn new(control: Arc<ControlPlane>, audit: Option<AuditMetrics>) -> Self {
        Self { control, audit }
    }
}

impl ReadyCheck for StoreReady {
    fn name(&self) -> &'static str {
        "store"
    }

    fn check(&self) -> (bool, Value) {
        let (_, mut detail) = self.control.store_status();
        if let Some(m) = &self.audit {
            detail["audit_spool_bytes"] = json!(m.spool_bytes());
        }
        (true, detail)
    }

    fn degraded(&self) -> bool {
        let spooling = self.audit.as_ref().is_some_and(|m| m.spool_bytes() > 0);
        self.control.store_status().0 || spooling
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("store", &self.store.describe())
            .field("agents", &self.registry.len())
            .finish_non_exhaustive()
    }
}
