//! CLI commands that work on the store directly: agents, tokens, API keys, audit.
//! A running gateway sees their writes within a second (it polls the store revision).

use crate::bootstrap;
use crate::cli::{
    AgentAction, AgentFields, ApikeyAction, AuditAction, AuditFilters, CredentialAction,
};
use anyhow::{anyhow, bail, Context};
use portcullis_config::{duration::parse_duration, Config};
use portcullis_core::{Agent, AgentStatus, Clock, SystemClock, Usd};
use portcullis_identity::{
    generate_secret, hash_secret, validate_agent, AgentConfigUpdate, TokenIssuer,
};
use portcullis_store::{Modified, Role, Store, StoreError};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::Arc;

/// `portcullis agent ...`.
pub(crate) async fn agent(cfg: &Config, action: AgentAction) -> anyhow::Result<()> {
    let store = bootstrap::open_existing_store(cfg).await?;
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
            let secret = generate_secret();
            let a = modify(&store, &id, now, |a| {
                a.secret_sha256 = Some(hash_secret(&secret));
                a.generation += 1;
                Ok(true)
            })
            .await?;
            println!("rotated `{id}` (generation {}); old secret and tokens are refused. New secret, shown once:", a.generation);
            println!("{secret}");
        }
        AgentAction::Suspend { id } => set_status(&store, &id, AgentStatus::Suspended, now).await?,
        AgentAction::Activate { id } => set_status(&store, &id, AgentStatus::Active, now).await?,
        AgentAction::Revoke { id } => set_status(&store, &id, AgentStatus::Revoked, now).await?,
        AgentAction::Set { id, fields } => {
            let update = update_from(&fields)?.ok_or_else(|| anyhow!("No fields to update"))?;
            modify(&store, &id, now, |a| {
                update.apply(a, now);
                validate_agent(a).map_err(|e| anyhow!("{e}"))?;
                Ok(true)
            })
            .await?;
            println!("updated `{id}`");
        }
    }
    store.close().await;
    Ok(())
}

/// `portcullis token --agent ID`.
pub(crate) async fn token(cfg: &Config, agent_id: &str, scopes: Vec<String>) -> anyhow::Result<()> {
    let store = bootstrap::open_existing_store(cfg).await?;
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
    bootstrap::require_existing(
        &cfg.identity.signing_key,
        "token signing key",
        "identity.signing_key",
    )?;
    let (key, _) = bootstrap::signing_key(cfg)?;
    let issuer = TokenIssuer::new(cfg.identity.issuer.clone(), Arc::new(key));
    let t = issuer
        .issue(&agent, &scopes, SystemClock.unix_secs())
        .map_err(|e| anyhow!("cannot sign token: {e}"))?;
    println!("{}", t.access_token);
    store.close().await;
    Ok(())
}

/// `portcullis credential ...`.
pub(crate) async fn credential(cfg: &Config, action: CredentialAction) -> anyhow::Result<()> {
    let store = bootstrap::open_existing_store(cfg).await?;
    match action {
        CredentialAction::Set {
            name,
            tenant,
            hosts,
            header,
            format,
            agents,
            groups,
            mode,
            secret_env,
            secret_file,
            secret_stdin,
        } => {
            if cfg.credentials.iter().any(|c| c.name == name) {
                bail!("credential `{name}` is declared in the config file; change it there");
            }
            let spec = json!({
                "hosts": hosts, "header": header, "format": format, "agents": agents,
                "groups": groups, "tenants": Vec::<String>::new(), "mode": mode,
            });
            let mut with_name = spec.clone();
            with_name["name"] = json!(name);
            let binding: portcullis_config::CredentialConfig =
                serde_json::from_value(with_name).map_err(|e| anyhow!("{e}"))?;
            binding
                .validate_binding("")
                .map_err(|e| anyhow!("--{}: {}", e.key.replace('_', "-"), e.reason))?;
            portcullis_tls::HostMatcher::new(&binding.hosts)
                .map_err(|e| anyhow!("--hosts: {e}"))?;
            let unusable =
                portcullis_admin::unusable_agents(&store, &tenant, &binding.agents).await?;
            if !unusable.is_empty() {
                let mut why = Vec::new();
                if !unusable.unknown.is_empty() {
                    why.push(format!("no such agent: {}", unusable.unknown.join(", ")));
                }
                for (agent, theirs) in &unusable.other_tenant {
                    why.push(format!("`{agent}` is in tenant `{theirs}`"));
                }
                bail!(
                    "--agents: {}; credential `{name}` belongs to tenant `{tenant}` and applies \
                     to that tenant's agents only (use --tenant to store it in the agents' tenant)",
                    why.join("; ")
                );
            }
            let secret = read_secret(secret_env, secret_file, secret_stdin)?;
            if std::env::var_os(bootstrap::CREDENTIALS_KEY_ENV).is_none() {
                bootstrap::require_existing(
                    &cfg.store.credentials_key,
                    "credentials sealing key",
                    "store.credentials_key",
                )?;
            }
            let (key, _) = bootstrap::credentials_key(cfg)?;
            let now = SystemClock.unix_secs();
            store
                .put_credential(&name, &tenant, &spec, secret.as_deref(), &key, now)
                .await?;
            println!(
                "credential `{name}` (tenant {tenant}) stored{}",
                if secret.is_some() {
                    "; secret sealed"
                } else {
                    "; secret kept"
                }
            );
        }
        CredentialAction::List { tenant } => {
            println!(
                "{:<24} {:<12} {:<7} {:<16} HOSTS / WHO",
                "NAME", "TENANT", "SOURCE", "HEADER"
            );
            for c in &cfg.credentials {
                println!(
                    "{:<24} {:<12} {:<7} {:<16} {} / {}",
                    c.name,
                    "-",
                    "config",
                    c.header,
                    c.hosts.join(","),
                    who(&c.agents, &c.groups, &c.tenants)
                );
            }
            for c in store.list_credentials(tenant.as_deref()).await? {
                match portcullis_credentials::stored_binding(&c) {
                    Ok(b) => println!(
                        "{:<24} {:<12} {:<7} {:<16} {} / {}",
                        c.name,
                        c.tenant,
                        "store",
                        b.header,
                        b.hosts.join(","),
                        who(&b.agents, &b.groups, &b.tenants)
                    ),
                    Err(e) => println!(
                        "{:<24} {:<12} {:<7} unreadable binding: {e}",
                        c.name, c.tenant, "store"
                    ),
                }
            }
        }
        CredentialAction::Remove { name, tenant } => {
            if !store.delete_credential(&name, &tenant).await? {
                bail!("no credential `{name}` in tenant {tenant}");
            }
            println!("removed credential `{name}`");
        }
    }
    store.close().await;
    Ok(())
}

fn who(agents: &[String], groups: &[String], tenants: &[String]) -> String {
    let mut parts = Vec::new();
    if !agents.is_empty() {
        parts.push(format!("agents={}", agents.join(",")));
    }
    if !groups.is_empty() {
        parts.push(format!("groups={}", groups.join(",")));
    }
    if !tenants.is_empty() {
        parts.push(format!("tenants={}", tenants.join(",")));
    }
    if parts.is_empty() {
        "nobody".to_owned()
    } else {
        parts.join(" ")
    }
}

/// The secret of `credential set`, from exactly one source, or `None` (keep the stored one).
fn read_secret(
    env: Option<String>,
    file: Option<std::path::PathBuf>,
    stdin: bool,
) -> anyhow::Result<Option<String>> {
    let raw = match (env, file, stdin) {
        (Some(var), _, _) => {
            std::env::var(&var).map_err(|_| anyhow!("--secret-env: variable {var} is not set"))?
        }
        (None, Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("--secret-file {}: {e}", path.display()))?,
        (None, None, true) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| anyhow!("--secret-stdin: {e}"))?;
            s
        }
        (None, None, false) => return Ok(None),
    };
    let secret = raw.trim();
    if secret.is_empty() || secret.bytes().any(|b| b.is_ascii_control()) {
        bail!("the secret must be non-empty and free of control characters");
    }
    Ok(Some(secret.to_owned()))
}

/// `portcullis apikey ...`.
pub(crate) async fn apikey(cfg: &Config, action: ApikeyAction) -> anyhow::Result<()> {
    let store = bootstrap::open_existing_store(cfg).await?;
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

/// Read-modify-write of agent `id` in one store transaction (a gateway or another CLI
/// changing it meanwhile is never undone).
async fn modify(
    store: &Store,
    id: &str,
    now: u64,
    edit: impl FnOnce(&mut Agent) -> anyhow::Result<bool>,
) -> anyhow::Result<Agent> {
    match store.modify_agent(id, now, edit).await {
        Ok(a) => Ok(a),
        Err(Modified::Refused(e)) => Err(e),
        Err(Modified::Store(StoreError::NotFound { .. })) => bail!("no agent `{id}`"),
        Err(Modified::Store(e)) => Err(e.into()),
    }
}

async fn set_status(store: &Store, id: &str, status: AgentStatus, now: u64) -> anyhow::Result<()> {
    modify(store, id, now, |a| {
        if a.status == AgentStatus::Revoked && status != AgentStatus::Revoked {
            bail!("agent `{id}` is revoked; revocation is final");
        }
        a.status = status;
        Ok(true)
    })
    .await?;
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
    let mut limits = Map::new();
    for (key, flag, v) in [
        ("rpm", "--rpm", &f.rpm),
        ("tpm", "--tpm", &f.tpm),
        ("tokens_per_day", "--tokens-per-day", &f.tokens_per_day),
        ("max_concurrent", "--max-concurrent", &f.max_concurrent),
        (
            "mcp_calls_per_minute",
            "--mcp-calls-per-minute",
            &f.mcp_calls_per_minute,
        ),
    ] {
        let Some(v) = v else { continue };
        let value = match v.as_str() {
            "default" => Value::Null,
            n => match n.parse::<u64>() {
                Ok(n) if n >= 1 => json!(n),
                _ => bail!("{flag}: expected a positive integer or `default`, got `{n}`"),
            },
        };
        limits.insert(key.into(), value);
    }
    for (key, flag, v) in [
        ("usd_per_day", "--usd-per-day", &f.usd_per_day),
        ("usd_per_month", "--usd-per-month", &f.usd_per_month),
    ] {
        let Some(v) = v else { continue };
        let value = match v.as_str() {
            "default" => Value::Null,
            n => match n.trim_start_matches('$').parse::<f64>() {
                Ok(d) if d.is_finite() && d > 0.0 => json!(d),
                _ => bail!("{flag}: expected a positive number of dollars or `default`, got `{n}`"),
            },
        };
        limits.insert(key.into(), value);
    }
    if !limits.is_empty() {
        m.insert("limits".into(), Value::Object(limits));
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
            eval(&cfg, &input, agent.as_deref()).await
        }
    }
}

/// `portcullis policy eval`: decides one request (or raw input document) the way the
/// gateway would, prints the simulation, and returns whether the decision allows.
async fn eval(cfg: &Config, input: &std::path::Path, agent: Option<&str>) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", input.display()))?;
    let Value::Object(mut map) = doc else {
        bail!("{} must hold a JSON object", input.display());
    };
    let engine = crate::bootstrap::policy_engine(cfg, Arc::new(SystemClock))?;
    // A raw input document (as the gateway builds it) is evaluated as given.
    let raw = map.contains_key("kind") || map.get("agent").is_some_and(Value::is_object);
    let (doc, classification) = if raw {
        let mut doc = Value::Object(map);
        if let Some(id) = agent {
            let a = load_agent(cfg, id).await?;
            let registry = portcullis_identity::Registry::from_agents(vec![a]);
            let snapshot = registry.snapshot();
            let entry = snapshot.get(id).context("agent vanished")?;
            doc = portcullis_policy::with_principal(doc, entry.principal());
        }
        (doc, None)
    } else {
        if let Some(id) = agent {
            map.insert("agent".into(), Value::String(id.to_owned()));
        }
        let reader = portcullis_admin::RequestReader {
            classifier: Arc::new(
                portcullis_llm::Classifier::new(&portcullis_app::settings::providers(cfg))
                    .context("llm.providers")?,
            ),
            max_inspect_body: cfg.proxy.max_inspect_body,
            mcp: portcullis_app::settings::mcp_settings(cfg)?.map(|s| {
                crate::serve::mcp_reader(Arc::new(portcullis_proxy::mcp::McpGate::new(
                    s,
                    Arc::new(portcullis_core::SystemClock),
                )))
            }),
        };
        let sim = portcullis_admin::SimRequest::parse(&map, &reader).map_err(|v| {
            let fields: Vec<String> =
                v.0.iter()
                    .map(|e| format!("{}: {}", e.field, e.reason))
                    .collect();
            anyhow!("invalid {}: {}", input.display(), fields.join("; "))
        })?;
        let id = sim.agent();
        let a = load_agent(cfg, id).await?;
        if a.status != AgentStatus::Active {
            eprintln!(
                "note: agent `{id}` is {}: the gateway refuses it before policy is consulted",
                label(&a.status)
            );
        }
        let ttl = a.token_ttl_secs;
        let registry = portcullis_identity::Registry::from_agents(vec![a]);
        let snapshot = registry.snapshot();
        let entry = snapshot.get(id).context("agent vanished")?;
        let doc = sim.to_doc(entry.principal(), SystemClock.unix_secs(), ttl);
        (doc, sim.classification().cloned())
    };
    let sim = engine.simulate_json(doc)?;
    let mut out = serde_json::to_value(&sim)?;
    if let Some(obj) = out.as_object_mut() {
        obj.insert(
            "classification".into(),
            serde_json::to_value(classification)?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(sim.decision.allowed)
}

async fn load_agent(cfg: &Config, id: &str) -> anyhow::Result<Agent> {
    let store = bootstrap::open_existing_store(cfg).await?;
    let a = get(&store, id).await;
    store.close().await;
    a
}

/// Records fetched per `audit tail` poll (memory stays bounded by one page).
const TAIL_PAGE: u32 = 200;
/// Pause between `audit tail` polls when caught up.
const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `portcullis audit ...`.
pub(crate) async fn audit(cfg: &Config, action: AuditAction) -> anyhow::Result<()> {
    let store = bootstrap::open_existing_store(cfg).await?;
    match action {
        AuditAction::Query {
            tenant,
            filters,
            format,
        } => audit_query(&store, tenant.as_deref(), &filters, &format).await,
        AuditAction::Tail {
            tenant,
            json,
            lines,
        } => audit_tail(&store, tenant.as_deref(), json, lines).await,
    }
}

async fn audit_query(
    store: &Store,
    tenant: Option<&str>,
    f: &AuditFilters,
    format: &str,
) -> anyhow::Result<()> {
    let params: Vec<(&str, &str)> = [
        ("agent_id", &f.agent_id),
        ("subagent", &f.subagent),
        ("verdict", &f.verdict),
        ("policy", &f.policy),
        ("provider", &f.provider),
        ("model", &f.model),
        ("since", &f.since),
        ("until", &f.until),
        ("limit", &f.limit),
        ("offset", &f.offset),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect();
    let now_ms = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let q = portcullis_audit::build_query(params, tenant, now_ms)
        .map_err(|e| anyhow!("invalid --{}: {}", e.field.replace('_', "-"), e.reason))?;
    let page = store.query_audit(&q).await?;
    let mut out = std::io::stdout().lock();
    let written = if format == "json" {
        let v = json!({
            "decisions": page.records,
            "total": page.total,
            "limit": q.limit,
            "offset": q.offset,
            "cost_usd": page.cost_usd_micros.map(|c| Usd::from_micros(c).dollars()),
            "priced": page.priced,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)
    } else {
        write_table(&mut out, &page, q.offset)
    };
    ignore_broken_pipe(written)
}

fn write_table(
    out: &mut impl Write,
    page: &portcullis_store::AuditPage,
    offset: u64,
) -> std::io::Result<()> {
    let (records, total) = (&page.records, page.total);
    writeln!(
        out,
        "{:<24} {:<12} {:<20} {:<12} {:>4}  {:<32} {:<16} {:>11} ID",
        "TIME", "TENANT", "AGENT", "VERDICT", "CODE", "TARGET", "POLICY", "COST"
    )?;
    for r in records {
        writeln!(out, "{}", record_line(r, true))?;
    }
    let shown = u64::try_from(records.len()).unwrap_or(u64::MAX);
    let cost = match page.cost_usd_micros {
        Some(c) => format!(
            "; cost {} over {} priced record{}",
            Usd::from_micros(c),
            page.priced,
            if page.priced == 1 { "" } else { "s" }
        ),
        None => String::new(),
    };
    if shown == 0 {
        writeln!(out, "(no records; {total} match{cost})")
    } else {
        writeln!(
            out,
            "({}-{} of {total}{cost})",
            offset.saturating_add(1),
            offset.saturating_add(shown)
        )
    }
}

/// A record's `cost_usd` as `$0.0035`, or `-` when unpriced.
fn cost_of(r: &Value) -> String {
    r.get("cost_usd")
        .and_then(Value::as_f64)
        .and_then(Usd::from_dollars)
        .map_or_else(|| "-".to_owned(), |c| c.to_string())
}

/// One record on one line: time, tenant, agent[/sub-agent], verdict, status, target
/// (`METHOD host/path` or `provider model`), policy, cost, id.
fn record_line(r: &Value, padded: bool) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let agent = match r.get("subagent").and_then(Value::as_str) {
        Some(sub) => format!("{}/{sub}", s("agent_id")),
        None => s("agent_id"),
    };
    let status = r
        .get("status")
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |c| c.to_string());
    let target = match (
        r.get("provider").and_then(Value::as_str),
        r.get("model").and_then(Value::as_str),
    ) {
        (Some(p), Some(m)) => format!("{p} {m}"),
        _ => format!(
            "{} {}{}",
            s("method"),
            s("host"),
            r.get("path").and_then(Value::as_str).unwrap_or("")
        ),
    };
    let (ts, tenant, verdict, policy, id) =
        (s("ts"), s("tenant"), s("verdict"), s("policy"), s("id"));
    let cost = cost_of(r);
    if padded {
        format!("{ts:<24} {tenant:<12} {agent:<20} {verdict:<12} {status:>4}  {target:<32} {policy:<16} {cost:>11} {id}")
    } else {
        format!("{ts} {tenant} {agent} {verdict} {status} {target} {policy} {cost} {id}")
    }
}

/// Follows the trail: prints the last `lines` records, then every new one, polling every
/// 500 ms until Ctrl-C. Holds only the cursor and one page in memory.
async fn audit_tail(
    store: &Store,
    tenant: Option<&str>,
    json: bool,
    lines: u32,
) -> anyhow::Result<()> {
    let lines = lines.min(TAIL_PAGE);
    // With nothing to show, still take the newest id as the starting cursor.
    let first = store.audit_after(tenant, None, lines.max(1)).await?;
    let skip = usize::from(lines == 0);
    let mut cursor = first.last().map(|e| e.id.clone());
    if !print_entries(&first[skip.min(first.len())..], json)? {
        return Ok(());
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let page = store
            .audit_after(tenant, cursor.as_deref(), TAIL_PAGE)
            .await?;
        if let Some(last) = page.last() {
            cursor = Some(last.id.clone());
        }
        if !print_entries(&page, json)? {
            return Ok(());
        }
        // A full page means more are waiting: fetch again at once.
        if u32::try_from(page.len()).unwrap_or(u32::MAX) >= TAIL_PAGE {
            continue;
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(TAIL_POLL) => {}
        }
    }
}

/// Prints entries, flushing; `false` once stdout is closed (e.g. piped into `head`).
fn print_entries(entries: &[portcullis_store::AuditEntry], json: bool) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        for e in entries {
            if json {
                writeln!(out, "{}", e.record)?;
            } else {
                writeln!(out, "{}", record_line(&e.record, false))?;
            }
        }
        out.flush()
    };
    match write() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn ignore_broken_pipe(r: std::io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
