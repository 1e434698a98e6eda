//! Policy modes set at run time live in the store; this brings them into the gateway's
//! policy engine.
//!
//! `PUT /v1/policies/{name}/mode` writes the store (bumping the revision), so every replica
//! sharing it reloads, and [`PolicyModeSync`] (a [`ReloadHook`]) makes its engine's
//! run-time modes equal to the stored ones; at start the same reload applies what an
//! earlier run or another replica set. A stored mode for a policy this engine has not
//! loaded yet (the policy directory or bundle changes later) is applied as soon as the
//! engine has it: [`PolicyModeSync::follow_engine`] re-applies after every engine reload.

use crate::control::ReloadHook;
use portcullis_core::PolicyMode;
use portcullis_policy::PolicyEngine;
use portcullis_store::Store;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often [`PolicyModeSync::follow_engine`] looks for an engine reload.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Keeps an engine's run-time policy modes equal to the store's; see the module docs.
pub struct PolicyModeSync {
    engine: Arc<PolicyEngine>,
    wanted: Mutex<Option<BTreeMap<String, PolicyMode>>>,
}

impl PolicyModeSync {
    /// A sync for `engine`; register it with
    /// [`crate::ControlPlane::add_reload_hook`] before the first reload.
    pub fn new(engine: Arc<PolicyEngine>) -> Arc<Self> {
        Arc::new(Self {
            engine,
            wanted: Mutex::new(None),
        })
    }

    /// Re-applies the stored modes whenever the engine reloads its policies (a policy may
    /// have appeared that a stored mode names), until `shutdown` turns true.
    pub async fn follow_engine(&self, mut shutdown: watch::Receiver<bool>) {
        let mut seen = self.engine.version();
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
            let now = self.engine.version();
            if now != seen {
                self.apply();
                seen = self.engine.version();
            }
        }
    }

    /// Sets or clears the engine's run-time modes so they equal the last stored ones
    /// (nothing before the first load). Stored modes of policies the engine does not have
    /// wait for them.
    pub fn apply(&self) {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(wanted) = wanted else {
            return;
        };
        for p in self.engine.list_policies() {
            let want = wanted.get(&p.name).copied();
            if p.mode_override == want {
                continue;
            }
            let res = match want {
                Some(m) => self.engine.set_mode(&p.name, m),
                None => self.engine.clear_mode(&p.name),
            };
            match res {
                Ok(()) => info!(
                    policy = %p.name,
                    mode = want.map_or("declared", PolicyMode::as_str),
                    "policy mode applied from the store"
                ),
                Err(e) => warn!(policy = %p.name, error = %e, "policy mode not applied"),
            }
        }
    }
}

/// A stored mode name as a [`PolicyMode`].
pub(crate) fn parse_mode(s: &str) -> Option<PolicyMode> {
    match s {
        "active" => Some(PolicyMode::Active),
        "shadow" => Some(PolicyMode::Shadow),
        "disabled" => Some(PolicyMode::Disabled),
        _ => None,
    }
}

impl ReloadHook for PolicyModeSync {
    fn reload<'a>(&'a self, store: &'a Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let stored = match store.policy_modes().await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "policy modes not loaded from the store; keeping the last ones");
                    return;
                }
            };
            let mut wanted = BTreeMap::new();
            for (name, mode) in stored {
                match parse_mode(&mode) {
                    Some(m) => {
                        wanted.insert(name, m);
                    }
                    None => {
                        warn!(policy = %name, mode = %mode, "unknown stored policy mode ignored")
                    }
                }
            }
            *self
                .wanted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(wanted);
            self.apply();
        })
    }
}
