//! The policy engine the data plane calls: an atomically swapped compiled set,
//! bindings and runtime mode overrides, the decision cache and reload status.

use crate::binding::{Binding, DefaultDecision, OnBlock, Subject};
use crate::bundle::Bundle;
use crate::cache::DecisionCache;
use crate::combine::{combine, Applied, Combined};
use crate::compile::{compile, compile_with_data, CompiledSet, SourceFile};
use crate::error::{EngineError, ErrorReport};
use crate::eval::{evaluate_rvm, one_pass};
use crate::ids::DecisionIds;
use crate::input::PolicyInput;
use crate::loader::read_dir;
use crate::mask::FieldMask;
use crate::plan::{Applicable, EvalStrategy};
use arc_swap::ArcSwap;
use portcullis_core::{AgentMode, Clock, Decision, PolicyMode};
use serde::Serialize;
use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Engine settings (the `[policy]` config section).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Policy directory (`policy.dir`); `None` when running on embedded sources.
    pub dir: Option<PathBuf>,
    /// Decision when no active policy applies (`policy.default`).
    pub default: DefaultDecision,
    /// Global blocked-response style (`policy.on_block`).
    pub on_block: OnBlock,
    /// Decision cache lifetime (`policy.cache_ttl`); zero disables the cache.
    pub cache_ttl: Duration,
    /// Maximum cached decisions.
    pub cache_capacity: usize,
    /// `[[policy.bindings]]`.
    pub bindings: Vec<Binding>,
    /// How the RVM evaluates the applicable policies.
    pub strategy: EvalStrategy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            dir: None,
            default: DefaultDecision::Deny,
            on_block: OnBlock::Json,
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 10_000,
            bindings: Vec::new(),
            strategy: EvalStrategy::Auto,
        }
    }
}

/// Result of the last reload, for `/readyz` and the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadStatus {
    /// Whether the last reload succeeded.
    pub ok: bool,
    /// When it happened (Unix seconds).
    pub at: u64,
    /// Version of the active set (unchanged by a failed reload).
    pub version: u64,
    /// Revision of the active set: the bundle's manifest revision, or `sha256:…` of the
    /// policy files (unchanged by a failed reload).
    pub revision: String,
    /// Policies in the active set.
    pub policies: usize,
    /// Errors of the last reload (empty when ok).
    pub errors: Vec<crate::PolicyError>,
    /// Non-fatal problems, e.g. a binding naming a policy that does not exist.
    pub warnings: Vec<String>,
}

/// Counters the caller exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Decisions made (cached or not).
    pub decisions: u64,
    /// Decisions served from the cache.
    pub cache_hits: u64,
    /// Decisions in which a policy failed to evaluate (fail closed).
    pub policy_errors: u64,
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Failed reloads.
    pub reloads_error: u64,
}

/// A decision plus what the data plane needs to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// The decision.
    pub decision: Decision,
    /// Blocked-response style for this decision (binding override or global).
    pub on_block: OnBlock,
    /// A policy failed to evaluate (counted in [`EngineStats::policy_errors`]).
    pub policy_error: bool,
}

/// One policy as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// Name.
    pub name: String,
    /// File.
    pub file: String,
    /// Runtime mode override, if set.
    pub mode_override: Option<PolicyMode>,
    /// Mode for agents without a binding-specific mode (override, else declared, else `active`).
    pub mode: PolicyMode,
    /// Configured bindings.
    pub bindings: Vec<Binding>,
    /// Whether decisions involving it can be cached.
    pub cacheable: bool,
    /// Non-deterministic builtins it reaches.
    pub non_deterministic: Vec<String>,
}

/// The active state, swapped whole.
pub(crate) struct State {
    pub(crate) set: Arc<CompiledSet>,
    pub(crate) version: u64,
    pub(crate) overrides: BTreeMap<String, PolicyMode>,
    /// Bindings per policy index (config order).
    pub(crate) bindings: Vec<Vec<Binding>>,
    pub(crate) all_cacheable: bool,
    /// Union of every policy's input fields.
    pub(crate) set_mask: FieldMask,
}

impl State {
    fn new(
        set: Arc<CompiledSet>,
        version: u64,
        overrides: BTreeMap<String, PolicyMode>,
        config_bindings: &[Binding],
    ) -> Self {
        let mut bindings = vec![Vec::new(); set.policies.len()];
        for b in config_bindings {
            if let Some(i) = set.position(&b.policy) {
                bindings[i].push(b.clone());
            }
        }
        let all_cacheable = set.policies.iter().all(|p| p.cacheable);
        let set_mask = set
            .policies
            .iter()
            .fold(FieldMask::default(), |m, p| m.union(p.mask));
        Self {
            set_mask,
            set,
            version,
            overrides,
            bindings,
            all_cacheable,
        }
    }

    /// Applicable, non-disabled policies for the subject, in name order.
    pub(crate) fn applicable(&self, subject: &Subject<'_>) -> Vec<Applicable> {
        let mut out = Vec::with_capacity(self.set.policies.len());
        for (i, meta) in self.set.policies.iter().enumerate() {
            let (mode, on_block) = if self.bindings[i].is_empty() {
                (meta.declared_mode.unwrap_or(PolicyMode::Active), None)
            } else {
                match self.bindings[i].iter().find(|b| b.matches(subject)) {
                    Some(b) => (b.mode, b.on_block),
                    None => continue,
                }
            };
            let mode = self.overrides.get(&meta.name).copied().unwrap_or(mode);
            if mode != PolicyMode::Disabled {
                out.push(Applicable {
                    index: i,
                    mode,
                    on_block,
                });
            }
        }
        out
    }
}

/// The policy engine. Cheap to share (`Arc<PolicyEngine>`); every method takes `&self`.
pub struct PolicyEngine {
    state: ArcSwap<State>,
    config: EngineConfig,
    status: Mutex<ReloadStatus>,
    cache: DecisionCache,
    clock: Arc<dyn Clock>,
    ids: DecisionIds,
    hash_keys: (RandomState, RandomState),
    next_version: AtomicU64,
    reload_lock: Mutex<()>,
    decisions: AtomicU64,
    cache_hits: AtomicU64,
    policy_errors: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("version", &self.version())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn binding_warnings(set: &CompiledSet, bindings: &[Binding]) -> Vec<String> {
    bindings
        .iter()
        .filter(|b| set.position(&b.policy).is_none())
        .map(|b| format!("binding names unknown policy {:?}", b.policy))
        .collect()
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

impl PolicyEngine {
    /// An engine over `sources` (e.g. the embedded example set).
    pub fn with_sources(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        sources: Vec<SourceFile>,
    ) -> Result<Self, EngineError> {
        Self::with_set(config, clock, compile(sources))
    }

    /// An engine over a bundle's policies and data, with its revision.
    pub fn with_bundle(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        bundle: Bundle,
    ) -> Result<Self, EngineError> {
        let revision = bundle.revision;
        let compiled = compile_with_data(bundle.sources, bundle.data).map(|mut set| {
            set.revision = revision;
            set
        });
        Self::with_set(config, clock, compiled)
    }

    fn with_set(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        compiled: Result<CompiledSet, ErrorReport>,
    ) -> Result<Self, EngineError> {
        let set = compiled.map_err(EngineError::Invalid)?;
        let warnings = binding_warnings(&set, &config.bindings);
        // Compiled glob/regex patterns are cached process-wide by regorus; size the caches
        // for catalogue-style policies so patterns are not recompiled per request.
        regorus::cache::configure(regorus::cache::Config {
            regex: 1024,
            glob: 1024,
        });
        let now = clock.unix_secs();
        let policies = set.policies.len();
        let revision = set.revision.clone();
        let state = State::new(Arc::new(set), 1, BTreeMap::new(), &config.bindings);
        let ttl_ns = config.cache_ttl.as_nanos().min(u128::from(u64::MAX)) as u64;
        Ok(Self {
            state: ArcSwap::from_pointee(state),
            cache: DecisionCache::new(ttl_ns, config.cache_capacity),
            config,
            status: Mutex::new(ReloadStatus {
                ok: true,
                at: now,
                version: 1,
                revision,
                policies,
                errors: Vec::new(),
                warnings,
            }),
            clock,
            ids: DecisionIds::default(),
            hash_keys: (RandomState::new(), RandomState::new()),
            next_version: AtomicU64::new(2),
            reload_lock: Mutex::new(()),
            decisions: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            policy_errors: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(1),
            reloads_error: AtomicU64::new(0),
        })
    }

    /// An engine over the `.rego` files of `config.dir`.
    pub fn open(config: EngineConfig, clock: Arc<dyn Clock>) -> Result<Self, EngineError> {
        let dir = config.dir.clone().ok_or(EngineError::NoDirectory)?;
        let sources = read_dir(&dir)?;
        Self::with_sources(config, clock, sources)
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Version of the active set; bumped by every successful reload and mode change.
    pub fn version(&self) -> u64 {
        self.state.load().version
    }

    /// The active compiled set.
    pub fn compiled(&self) -> Arc<CompiledSet> {
        self.state.load().set.clone()
    }

    pub(crate) fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// Status of the last reload.
    pub fn reload_status(&self) -> ReloadStatus {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            decisions: self.decisions.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            policy_errors: self.policy_errors.load(Ordering::Relaxed),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_error: self.reloads_error.load(Ordering::Relaxed),
        }
    }

    /// Re-reads `config.dir`, compiles everything, and swaps atomically on success.
    /// On failure the last good set stays active and the errors are recorded.
    pub fn reload_from_dir(&self) -> Result<ReloadStatus, EngineError> {
        let dir = self.config.dir.clone().ok_or(EngineError::NoDirectory)?;
        match read_dir(&dir) {
            Ok(sources) => self.reload_sources(sources),
            Err(e) => {
                let report = ErrorReport::new(vec![crate::PolicyError::new(
                    dir.display().to_string(),
                    0,
                    0,
                    e.to_string(),
                    crate::Stage::Load,
                )]);
                self.record_failure(&report);
                Err(EngineError::Invalid(report))
            }
        }
    }

    /// Compiles `sources` and swaps them in atomically on success.
    pub fn reload_sources(&self, sources: Vec<SourceFile>) -> Result<ReloadStatus, EngineError> {
        self.install(compile(sources))
    }

    /// Compiles a bundle's policies and data and swaps them in atomically on success, with the
    /// bundle's revision; a broken bundle keeps the last good set (as a broken file does).
    pub fn reload_bundle(&self, bundle: Bundle) -> Result<ReloadStatus, EngineError> {
        let revision = bundle.revision;
        self.install(
            compile_with_data(bundle.sources, bundle.data).map(|mut set| {
                set.revision = revision;
                set
            }),
        )
    }

    /// Records a bundle that could not even be read (not a tarball, unsafe paths, too large):
    /// a failed reload like a compile error, the last good set stays.
    pub fn record_bundle_error(&self, what: &str, error: &str) -> EngineError {
        let report = ErrorReport::new(vec![crate::PolicyError::new(
            what,
            0,
            0,
            error.to_owned(),
            crate::Stage::Load,
        )]);
        self.record_failure(&report);
        EngineError::Invalid(report)
    }

    /// Revision of the active set (see [`ReloadStatus::revision`]).
    pub fn revision(&self) -> String {
        self.state.load().set.revision.clone()
    }

    fn install(
        &self,
        compiled: Result<CompiledSet, ErrorReport>,
    ) -> Result<ReloadStatus, EngineError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        match compiled {
            Ok(set) => {
                let version = self.next_version.fetch_add(1, Ordering::SeqCst);
                let policies = set.policies.len();
                let revision = set.revision.clone();
                let warnings = binding_warnings(&set, &self.config.bindings);
                let old = self.state.load();
                let state = State::new(
                    Arc::new(set),
                    version,
                    old.overrides.clone(),
                    &self.config.bindings,
                );
                self.state.store(Arc::new(state));
                self.cache.clear();
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                let status = ReloadStatus {
                    ok: true,
                    at: self.clock.unix_secs(),
                    version,
                    revision: revision.clone(),
                    policies,
                    errors: Vec::new(),
                    warnings,
                };
                *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.clone();
                tracing::info!(version, %revision, policies, "policy set reloaded");
                Ok(status)
            }
            Err(report) => {
                self.record_failure(&report);
                Err(EngineError::Invalid(report))
            }
        }
    }

    fn record_failure(&self, report: &ErrorReport) {
        self.reloads_error.fetch_add(1, Ordering::Relaxed);
        for e in &report.errors {
            tracing::warn!(file = %e.file, row = e.row, col = e.col, stage = e.stage.as_str(), "policy error: {}", e.message);
        }
        let state = self.state.load();
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = ReloadStatus {
            ok: false,
            at: self.clock.unix_secs(),
            version: state.version,
            revision: state.set.revision.clone(),
            policies: state.set.policies.len(),
            errors: report.errors.clone(),
            warnings: Vec::new(),
        };
    }

    /// Overrides a policy's mode at runtime (`PUT /v1/policies/{name}/mode`); survives
    /// reloads. The next request sees it.
    pub fn set_mode(&self, name: &str, mode: PolicyMode) -> Result<(), EngineError> {
        self.update_overrides(name, |o| {
            o.insert(name.to_owned(), mode);
        })
    }

    /// Removes a runtime mode override.
    pub fn clear_mode(&self, name: &str) -> Result<(), EngineError> {
        self.update_overrides(name, |o| {
            o.remove(name);
        })
    }

    fn update_overrides(
        &self,
        name: &str,
        f: impl FnOnce(&mut BTreeMap<String, PolicyMode>),
    ) -> Result<(), EngineError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.state.load();
        if old.set.position(name).is_none() {
            return Err(EngineError::UnknownPolicy(name.to_owned()));
        }
        let mut overrides = old.overrides.clone();
        f(&mut overrides);
        let version = self.next_version.fetch_add(1, Ordering::SeqCst);
        let state = State::new(old.set.clone(), version, overrides, &self.config.bindings);
        self.state.store(Arc::new(state));
        self.cache.clear();
        if let Ok(mut s) = self.status.lock() {
            s.version = version;
        }
        Ok(())
    }

    /// Policies with their modes and bindings.
    pub fn list_policies(&self) -> Vec<PolicySummary> {
        let state = self.state.load();
        state
            .set
            .policies
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let o = state.overrides.get(&m.name).copied();
                PolicySummary {
                    name: m.name.clone(),
                    file: m.file.clone(),
                    mode_override: o,
                    mode: o.or(m.declared_mode).unwrap_or(PolicyMode::Active),
                    bindings: state.bindings[i].clone(),
                    cacheable: m.cacheable,
                    non_deterministic: m.non_deterministic.clone(),
                }
            })
            .collect()
    }

    /// Decides one request on the RVM path (with the cache). Never fails: errors and
    /// undefined results become a `policy_error` deny.
    pub fn decide(&self, input: &PolicyInput<'_>) -> PolicyOutcome {
        let started = Instant::now();
        let now = input.now.unwrap_or_else(|| self.clock.now());
        self.decisions.fetch_add(1, Ordering::Relaxed);
        let state = self.state.load();
        let principal = input.principal;
        let decision_id = self.ids.next(now);

        if principal.mode == AgentMode::Disabled {
            let c = combine(&[], AgentMode::Disabled, self.config.default);
            return self.finish(
                c,
                self.config.on_block,
                decision_id,
                started,
                false,
                &state.set.revision,
            );
        }

        let subject = Subject::from(principal);
        let applicable = state.applicable(&subject);

        // Cache lookup when every applicable policy is deterministic.
        let now_ns = unix_ns(self.clock.now());
        let mask = applicable.iter().fold(FieldMask::default(), |m, a| {
            m.union(state.set.policies[a.index].mask)
        });
        let cache_key = if self.cache.enabled()
            && (state.all_cacheable
                || applicable
                    .iter()
                    .all(|a| state.set.policies[a.index].cacheable))
        {
            Some(input.cache_key(mask, &self.hash_keys))
        } else {
            None
        };
        if let Some(key) = cache_key {
            if let Some((mut decision, on_block)) = self.cache.get(key, state.version, now_ns) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                decision.decision_id = decision_id;
                decision.cached = true;
                decision.eval_us = started.elapsed().as_micros() as u64;
                return PolicyOutcome {
                    decision,
                    on_block,
                    policy_error: false,
                };
            }
        }

        // One pass evaluates every policy, so the input must carry what any of them reads.
        let read = if one_pass(
            self.config.strategy,
            applicable.len(),
            state.set.policies.len(),
        ) {
            state.set_mask
        } else {
            mask
        };
        let value = input.build_value(now, read);
        let results = evaluate_rvm(&state.set, &applicable, value, self.config.strategy);
        let applied: Vec<Applied> = applicable
            .iter()
            .zip(results)
            .map(|(a, result)| Applied {
                name: state.set.policies[a.index].name.clone(),
                mode: a.mode,
                result,
            })
            .collect();
        let combined = combine(&applied, principal.mode, self.config.default);
        let on_block = self.on_block_for(&combined.decision, &state, &applicable);
        let policy_error = combined.policy_error;
        let outcome = self.finish(
            combined,
            on_block,
            decision_id,
            started,
            false,
            &state.set.revision,
        );
        if let (Some(key), false) = (cache_key, policy_error) {
            let mut cached = outcome.decision.clone();
            cached.decision_id.clear();
            self.cache
                .insert(key, state.version, now_ns, cached, outcome.on_block);
        }
        outcome
    }

    pub(crate) fn on_block_for(
        &self,
        d: &Decision,
        state: &State,
        applicable: &[Applicable],
    ) -> OnBlock {
        d.policy
            .as_deref()
            .and_then(|p| state.set.position(p))
            .and_then(|i| applicable.iter().find(|a| a.index == i))
            .and_then(|a| a.on_block)
            .unwrap_or(self.config.on_block)
    }

    pub(crate) fn finish(
        &self,
        combined: Combined,
        on_block: OnBlock,
        decision_id: String,
        started: Instant,
        cached: bool,
        revision: &str,
    ) -> PolicyOutcome {
        if combined.policy_error {
            self.policy_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut decision = combined.decision;
        decision.decision_id = decision_id;
        decision.cached = cached;
        decision.revision = Some(revision.to_owned());
        decision.eval_us = started.elapsed().as_micros() as u64;
        PolicyOutcome {
            decision,
            on_block,
            policy_error: combined.policy_error,
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn next_id(&self, now: SystemTime) -> String {
        self.ids.next(now)
    }

    pub(crate) fn count_decision(&self, policy_error: bool) {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if policy_error {
            self.policy_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
