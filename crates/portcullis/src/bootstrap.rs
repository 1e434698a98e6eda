//! First steps of `serve` and of the CLI: open the store, load or create the
//! signing key, upsert config-declared agents, create the first-run demo agent.

use anyhow::{bail, Context};
use portcullis_config::{AgentConfig, Config};
use portcullis_core::{Agent, AgentSource, AgentStatus, Clock};
use portcullis_identity::{generate_secret, hash_secret, SigningKey};
use portcullis_policy::{example_sources, PolicyEngine};
use portcullis_store::{SealKey, Store, StoreError, StoreOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

/// Id of the agent created on first run.
pub(crate) const DEMO_AGENT: &str = "demo";

/// Opens the configured store for `serve` (creating its directory and file on first run,
/// applying migrations).
pub(crate) async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: cfg.store.max_connections,
    };
    Store::connect_with(&cfg.store.url, &options)
        .await
        .with_context(|| format!("opening store {}", Store::display_url(&cfg.store.url)))
}

/// Opens the store a gateway with this config uses, for CLI commands: never creates one.
///
/// A relative `store.url` resolves against the working directory, so a command run
/// elsewhere would otherwise work on a new, empty store the gateway never reads. Prints
/// which store it uses (one line on stderr); a missing store is an error naming the
/// absolute path and how to point the command at the right one.
pub(crate) async fn open_existing_store(cfg: &Config) -> anyhow::Result<Store> {
    let url = &cfg.store.url;
    let shown = match Store::file_path(url) {
        Ok(Some(path)) => format!("sqlite://{}", path.display()),
        _ => Store::display_url(url),
    };
    match Store::connect_existing(url).await {
        Ok(store) => {
            eprintln!("store: {shown}");
            Ok(store)
        }
        Err(StoreError::Missing { path }) => bail!(
            "no store at {} (store.url = {url:?}, resolved against the working directory {}). \
             Run this command from the gateway's directory, pass the gateway's config with \
             --config or PORTCULLIS_CONFIG, or start `portcullis serve` once to create the store",
            path.display(),
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "?".to_owned())
        ),
        Err(StoreError::NoSchema { url }) => bail!(
            "the database {url} holds no Portcullis store yet; start `portcullis serve` with \
             this store.url (or PORTCULLIS_STORE_URL) once to create it"
        ),
        Err(e) => Err(e).with_context(|| format!("opening store {shown}")),
    }
}

/// Fails unless `path` is an existing file: the CLI uses the gateway's keys, it never
/// makes new ones the gateway would not know.
pub(crate) fn require_existing(path: &Path, what: &str, key: &str) -> anyhow::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    bail!(
        "no {what} at {} ({key}); the gateway creates it on its first start. Run this command \
         from the gateway's directory or pass the gateway's config with --config or \
         PORTCULLIS_CONFIG",
        shown.display()
    )
}

/// Loads the signing key, generating it (mode 0600) on first run.
pub(crate) fn signing_key(cfg: &Config) -> anyhow::Result<(SigningKey, bool)> {
    portcullis_identity::load_or_generate(&cfg.identity.signing_key)
        .with_context(|| format!("signing key {}", cfg.identity.signing_key.display()))
}

/// The key sealing stored credential secrets: `PORTCULLIS_CREDENTIALS_KEY` (base64 of 32
/// bytes), else `store.credentials_key`, generated (mode 0600) on first use.
pub(crate) fn credentials_key(cfg: &Config) -> anyhow::Result<(SealKey, bool)> {
    if let Ok(text) = std::env::var(CREDENTIALS_KEY_ENV) {
        let key = SealKey::from_base64(&text).with_context(|| CREDENTIALS_KEY_ENV.to_owned())?;
        return Ok((key, false));
    }
    let path = &cfg.store.credentials_key;
    SealKey::load_or_generate(path)
        .with_context(|| format!("store.credentials_key {}", path.display()))
}

/// Environment variable that overrides `store.credentials_key`.
pub(crate) const CREDENTIALS_KEY_ENV: &str = "PORTCULLIS_CREDENTIALS_KEY";

/// Upserts `[[agents]]` into the store; secrets from `secret_env` are hashed here
/// and never stored in clear.
///
/// Run-time decisions win over a config that has not changed since
/// ([`Agent::reconcile_config`]): an existing agent keeps its status (the config never
/// declares one), a mode set at run time while the config still declares the mode it
/// overrode, and a secret rotated at run time while the config still declares the secret
/// that was rotated away. A new config secret moves the generation on, killing old tokens.
pub(crate) async fn upsert_config_agents(
    cfg: &Config,
    store: &Store,
    clock: &dyn Clock,
) -> anyhow::Result<usize> {
    let now = clock.unix_secs();
    for a in &cfg.agents {
        let hash = config_secret_hash(a)?;
        let mut agent = match store.get_agent(&a.id).await? {
            Some(e) if e.source != AgentSource::Config => bail!(
                "agents: `{}` already exists in the store (created by CLI/API); rename the config agent or remove it",
                a.id
            ),
            Some(mut e) => {
                e.reconcile_config(a.mode, &hash);
                e
            }
            None => {
                let mut fresh = Agent::new(&a.id, &a.tenant, now);
                fresh.mode = a.mode;
                fresh.secret_sha256 = Some(hash);
                fresh
            }
        };
        agent.tenant = a.tenant.clone();
        agent.groups = a.groups.clone();
        agent.allowed_scopes = a.allowed_scopes.clone();
        agent.risk_level = a.risk_level;
        agent.token_ttl_secs = a.token_ttl.unwrap_or(cfg.identity.token_ttl).as_secs();
        agent.limits = a.limits.clone();
        agent.source = AgentSource::Config;
        let stored = store.upsert_agent(&agent, now).await?;
        if !stored.config_overrides.is_empty() {
            info!(
                agent = %stored.id,
                kept = ?stored.config_overrides.fields(),
                "config agent: run-time changes kept over the unchanged config"
            );
        }
    }
    Ok(cfg.agents.len())
}

fn config_secret_hash(a: &AgentConfig) -> anyhow::Result<String> {
    match (&a.secret_sha256, &a.secret_env) {
        (Some(h), _) => Ok(h.clone()),
        (None, Some(var)) => {
            let secret = std::env::var(var).with_context(|| {
                format!(
                    "agents: `{}` reads its secret from ${var}, which is not set",
                    a.id
                )
            })?;
            if secret.len() < 16 {
                bail!(
                    "agents: ${var} for `{}` is shorter than 16 characters",
                    a.id
                );
            }
            Ok(hash_secret(&secret))
        }
        (None, None) => bail!("agents: `{}` has no secret", a.id),
    }
}

/// On a store with no agents at all, creates `demo` and returns its secret (shown once).
pub(crate) async fn create_demo_agent(
    cfg: &Config,
    store: &Store,
    clock: &dyn Clock,
) -> anyhow::Result<Option<String>> {
    if !cfg.identity.create_demo_agent || !store.list_agents(None).await?.is_empty() {
        return Ok(None);
    }
    let now = clock.unix_secs();
    let secret = generate_secret();
    let mut agent = Agent::new(DEMO_AGENT, "default", now);
    agent.status = AgentStatus::Active;
    // Enough for the default policy's catalog checks on the LLM providers.
    agent.allowed_scopes = vec!["openai:*:*".to_owned(), "anthropic:*:*".to_owned()];
    agent.token_ttl_secs = cfg.identity.token_ttl.as_secs();
    agent.secret_sha256 = Some(hash_secret(&secret));
    match store.create_agent(&agent).await {
        Ok(()) => {}
        // Replicas starting together on an empty shared store: another one created it.
        Err(StoreError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    info!(agent = DEMO_AGENT, "first run: demo agent created");
    Ok(Some(secret))
}

/// Where policies come from, for the banner.
pub(crate) fn policy_dir(cfg: &Config) -> Option<PathBuf> {
    if cfg.policy.bundle_url.is_some() {
        return None;
    }
    cfg.policy.dir.clone().or_else(|| {
        let d = PathBuf::from("config/policies");
        d.is_dir().then_some(d)
    })
}

/// Builds the engine: from the policy directory, or the built-in example set.
pub(crate) fn policy_engine(
    cfg: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<PolicyEngine>> {
    if let Some(bs) = portcullis_app::settings::bundle_settings(cfg) {
        // Commands that only read policies use the last good bundle; `serve` fetches first.
        let ec = portcullis_app::settings::policy_settings(cfg, None);
        let bundle = portcullis_app::bundles::load_persisted(&bs).map_err(anyhow::Error::msg)?;
        return Ok(Arc::new(
            PolicyEngine::with_bundle(ec, clock, bundle)
                .with_context(|| format!("loading the policy bundle {}", bs.path.display()))?,
        ));
    }
    let dir = policy_dir(cfg);
    let ec = portcullis_app::settings::policy_settings(cfg, dir.clone());
    let engine = match &dir {
        Some(d) => PolicyEngine::open(ec, clock)
            .with_context(|| format!("loading policies from {}", d.display()))?,
        None => PolicyEngine::with_sources(ec, clock, example_sources())
            .context("loading the built-in example policies")?,
    };
    Ok(Arc::new(engine))
}
