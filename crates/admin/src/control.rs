//! The control plane: the store (source of truth), the in-memory agent registry the
//! data plane reads, and the operator-key cache. Every write goes to the store first
//! and is then loaded into the registry, so the next proxy request sees it.

use crate::operator::KeyCache;
use portcullis_config::CredentialConfig;
use portcullis_core::Clock;
use portcullis_identity::Registry;
use portcullis_store::{SealKey, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, warn};

/// How often [`ControlPlane::watch`] polls [`Store::revision`].
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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
        Ok(self.registry.len())
    }

    /// The store revision the registry was last loaded at (`None` before the first load).
    pub async fn loaded_revision(&self) -> Option<u64> {
        *self.loaded.lock().await
    }

    /// Polls [`Store::revision`] every [`WATCH_INTERVAL`] and reloads the registry when it
    /// changed (a CLI or another gateway wrote to the shared store), until `shutdown`
    /// turns true. Store errors are logged and retried on the next tick; the registry
    /// keeps serving the last good snapshot meanwhile.
    pub async fn watch(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = tick.tick() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            }
            let rev = match self.store.revision().await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "store revision poll failed");
                    continue;
                }
            };
            if self.loaded_revision().await == Some(rev) {
                continue;
            }
            // Operator keys may have been revoked by the CLI: forget cached lookups too.
            self.keys.clear();
            match self.reload_registry().await {
                Ok(n) => info!(
                    revision = rev,
                    agents = n,
                    "agent registry reloaded from store"
                ),
                Err(e) => warn!(error = %e, "agent registry reload failed"),
            }
        }
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

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("store", &self.store.describe())
            .field("agents", &self.registry.len())
            .finish_non_exhaustive()
    }
}
