//! CLI commands that work on the store directly: agents, tokens, API keys.
//! A running gateway sees their writes within a second (it polls the store revision).

use crate::bootstrap;
use crate::cli::{AgentAction, AgentFields, ApikeyAction};
use anyhow::{anyhow, bail, Context};
use portcullis_config::{duration::parse_duration, Config};
use portcullis_core::{Agent, AgentStatus, Clock, SystemClock};
use portcullis_identity::{
    generate_secret, hash_secret, validate_agent, AgentConfigUpdate, TokenIssuer,
};
use portcullis_store::{Role, Store};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// `portcullis agent ...`.
pub(crate) async fn agent(cfg: &Config, action: AgentAction) -> anyhow::Result<()> {
    let store = bootstrap::open_store(cfg).await?;
    let now = SystemClock.unix_secs();
    match action {
        AgentAction::Create { id, tenant, fields } => {
            let mut agent = Agent::new(&id, &tenant, now);
            agent.token_ttl_secs = cfg.identity.token_ttl.as_secs();
            if let Some(update) = update_from(&fields)? {
                update.apply(&mut agent, now);
            }
            let secret = generate_secret();
            agent.secret_sha256 = Some(hash_secret(&secret));
            validate_agent(&agent).map_err(|e| anyhow!("{e}"))?;
            store.create_agent(&agent).await?;
            println!("created agent `{id}` (tenant {tenant}). Its secret is shown once:");
            println!("{secret}");
            println!(
                "use it as: HTTPS_PROXY=http://{id}:{secret}@{}",
                cfg.proxy.listen
            );
        }
        AgentAction::List { tenant, json } => {
            let agents = store.list_agents(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                println!(
                    "{:<24} {:<12} {:<10} {:<9} {:<9} {:>4}  SCOPES",
                    "ID", "TENANT", "STATUS", "MODE", "RISK", "GEN"
                );
                for a in agents {
                    let id = match &a.parent {
                        Some(p) => format!("{p}/{}", a.id),
                        None => a.id.clone(),
                    };
                    println!(
                        "{:<24} {:<12} {:<10} {:<9} {:<9} {:>4}  {}",
                        id,
                        a.tenant,
                        label(&a.status),
                        label(&a.mode),
                        label(&a.risk_level),
                        a.generation,
                        a.allowed_scopes.join(",")
                    );
                }
            }
        }
        AgentAction::Show { id } => {
            let a = get(&store, &id).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        AgentAction::Rotate { id } => {
            let mut a = get(&store, &id).await?;
            let secret = generate_secret();
            a.secret_sha256 = Some(hash_secret(&secret));
            a.generation += 1;
            store.update_agent(&a, now).await?;
            println!("rotated `{id}` (generation {}); old secret and tokens are refused. New secret, shown once:", a.generation);
            println!("{secret}");
        }
        AgentAction::Suspend { id } => set_status(&store, &id, AgentStatus::Suspended, now).await?,
        AgentAction::Activate { id } => set_status(&store, &id, AgentStatus::Active, now).await?,
        AgentAction::Revoke { id } => set_status(&store, &id, AgentStatus::Revoked, now).await?,
        AgentAction::Set { id, fields } => {
            let mut a = get(&store, &id).await?;
            let update = update_from(&fields)?.ok_or_else(|| anyhow!("No fields to update"))?;
            update.apply(&mut a, now);
            validate_agent(&a).map_err(|e| anyhow!("{e}"))?;
            store.update_agent(&a, now).await?;
            println!("updated `{id}`");
        }
    }
    store.close().await;
    Ok(())
}

/// `portcullis token --agent ID`.
pub(crate) async fn token(cfg: &Config, agent_id: &str, scopes: Vec<String>) -> anyhow::Result<()> {
    let store = bootstrap::open_store(cfg).await?;
    let agent = get(&store, agent_id).await?;
    if agent.status != AgentStatus::Active {
        bail!("agent `{agent_id}` is {}", label(&agent.status));
    }
    let scopes = if scopes.is_empty() {
        agent.allowed_scopes.clone()
    } else {
        if let Some(s) = scopes.iter().find(|s| !agent.allowed_scopes.contains(s)) {
            bail!("scope `{s}` is not allowed for `{agent_id}`");
        }
        scopes
    };
    let (key, _) = bootstrap::signing_key(cfg)?;
    let issuer = TokenIssuer::new(cfg.identity.issuer.clone(), Arc::new(key));
    let t = issuer
        .issue(&agent, &scopes, SystemClock.unix_secs())
        .map_err(|e| anyhow!("cannot sign token: {e}"))?;
    println!("{}", t.access_token);
    store.close().await;
    Ok(())
}

/// `portcullis apikey ...`.
pub(crate) async fn apikey(cfg: &Config, action: ApikeyAction) -> anyhow::Result<()> {
    let store = bootstrap::open_store(cfg).await?;
    let now = SystemClock.unix_secs();
    match action {
        ApikeyAction::Create { tenant, role, name } => {
            let role: Role = role
                .parse()
                .map_err(|_| anyhow!("--role must be admin or viewer"))?;
            let (rec, key) = store.create_api_key(&tenant, role, &name, now).await?;
            println!(
                "created API key {} (tenant {}, role {}). The key is shown once:",
                rec.id,
                rec.tenant,
                label(&rec.role)
            );
            println!("{key}");
        }
        ApikeyAction::List { tenant } => {
            let keys = store.list_api_keys(tenant.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
        }
        ApikeyAction::Revoke { id } => {
            store.revoke_api_key(None, &id, now).await?;
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}

async fn get(store: &Store, id: &str) -> anyhow::Result<Agent> {
    store
        .get_agent(id)
        .await?
        .with_context(|| format!("no agent `{id}`"))
}

async fn set_status(store: &Store, id: &str, status: AgentStatus, now: u64) -> anyhow::Result<()> {
    let mut a = get(store, id).await?;
    if a.status == AgentStatus::Revoked && status != AgentStatus::Revoked {
        bail!("agent `{id}` is revoked; revocation is final");
    }
    a.status = status;
    store.update_agent(&a, now).await?;
    println!("`{id}` is now {}", label(&status));
    Ok(())
}

/// Builds the same update the admin API's `PUT /v1/agents/{id}/config` takes,
/// so the CLI and the API validate identically.
fn update_from(f: &AgentFields) -> anyhow::Result<Option<AgentConfigUpdate>> {
    let mut m = Map::new();
    if let Some(v) = &f.mode {
        m.insert("mode".into(), json!(v));
    }
    if let Some(v) = &f.risk {
        m.insert("risk_level".into(), json!(v));
    }
    if let Some(v) = &f.scopes {
        m.insert("scopes".into(), json!(v));
    }
    if let Some(v) = &f.groups {
        m.insert("groups".into(), json!(v));
    }
    if let Some(v) = &f.ttl {
        let d = parse_duration(v).map_err(|e| anyhow!("--ttl: {e}"))?;
        m.insert("token_ttl".into(), json!(d.as_secs()));
    }
    if m.is_empty() {
        return Ok(None);
    }
    let body = serde_json::to_vec(&Value::Object(m))?;
    AgentConfigUpdate::from_json(&body)
        .map(Some)
        .map_err(|e| anyhow!("{}", e.to_api_error().to_json(None)))
}

fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `portcullis policy ...`; returns whether everything passed.
pub(crate) async fn policy(
    action: crate::cli::PolicyAction,
    cfg: Option<Config>,
) -> anyhow::Result<bool> {
    use crate::cli::PolicyAction;
    match action {
        PolicyAction::Check { dir, format } => {
            let sources = portcullis_policy::read_dir(&dir)?;
            let n = sources.len();
            let report = portcullis_policy::validate_sources(sources);
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else if report.is_empty() {
                println!("{}: {n} files ok", dir.display());
            } else {
                print!("{}", report.to_text());
            }
            Ok(report.is_empty())
        }
        PolicyAction::Test { dir } => {
            let report = portcullis_policy::run_tests(&dir, Arc::new(SystemClock))?;
            print!("{}", report.to_text());
            Ok(report.failed == 0)
        }
        PolicyAction::Eval { input, agent, .. } => {
            let cfg = cfg.unwrap_or_default();
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let mut doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", input.display()))?;
            if let Some(id) = agent {
                let store = bootstrap::open_store(&cfg).await?;
                let a = get(&store, &id).await?;
                store.close().await;
                let registry = portcullis_identity::Registry::from_agents(vec![a]);
                let snapshot = registry.snapshot();
                let entry = snapshot.get(&id).context("agent vanished")?;
                doc = portcullis_policy::with_principal(doc, entry.principal());
            }
            let engine = crate::policy::engine(&cfg, Arc::new(SystemClock))?;
            let sim = engine.simulate_json(doc)?;
            println!("{}", serde_json::to_string_pretty(&sim)?);
            Ok(true)
        }
    }
}
