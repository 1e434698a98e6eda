//! `/v1/credentials`: provider credentials the gateway injects. The secret is write-only:
//! it is sealed into the store on `PUT` and never appears in an answer, a log line or an
//! error. Credentials from the config file are listed read-only (platform tenant only).

use crate::body::parse_object;
use crate::control::{ControlPlane, CredentialsApi};
use crate::operator::{Operator, DEFAULT_PLATFORM_TENANT};
use crate::respond::store_error;
use portcullis_config::CredentialConfig;
use portcullis_core::{ApiError, ErrorSource, Status};
use portcullis_credentials::stored_binding;
use portcullis_store::{Store, StoreError, StoredCredential};
use portcullis_tls::HostMatcher;
use serde_json::{json, Map, Value};
use tracing::info;

fn not_found() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "not_found",
        "credential not found",
        ErrorSource::Client,
    )
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::new(
        Status::Unprocessable,
        "validation_error",
        format!("{field}: {reason}"),
        ErrorSource::Client,
    )
    .with("errors", json!([{"field": field, "reason": reason}]))
}

/// The answer for a credential: its binding, never its secret.
fn view(
    c: &CredentialConfig,
    source: &str,
    tenant: Option<&str>,
    times: Option<(u64, u64)>,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(c.name));
    m.insert("source".into(), json!(source));
    m.insert("tenant".into(), json!(tenant));
    m.insert("hosts".into(), json!(c.hosts));
    m.insert("header".into(), json!(c.header));
    m.insert("format".into(), json!(c.format));
    m.insert("agents".into(), json!(c.agents));
    m.insert("groups".into(), json!(c.groups));
    m.insert("tenants".into(), json!(c.tenants));
    m.insert("mode".into(), json!(c.mode));
    m.insert("secret".into(), json!("(write-only)"));
    if let Some((created, updated)) = times {
        m.insert("created_at".into(), json!(created));
        m.insert("updated_at".into(), json!(updated));
    }
    Value::Object(m)
}

/// Agents named by a credential binding that cannot use it: a stored credential applies to
/// its own tenant's agents only, so each named agent must exist in that tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnusableAgents {
    /// Names that are no registered (top-level) agent.
    pub unknown: Vec<String>,
    /// `(agent, its tenant)` for agents of another tenant.
    pub other_tenant: Vec<(String, String)>,
}

impl UnusableAgents {
    /// Whether every named agent can use the credential.
    pub fn is_empty(&self) -> bool {
        self.unknown.is_empty() && self.other_tenant.is_empty()
    }

    /// Every unusable name, in the order given.
    pub fn names(&self) -> Vec<&str> {
        self.unknown
            .iter()
            .map(String::as_str)
            .chain(self.other_tenant.iter().map(|(a, _)| a.as_str()))
            .collect()
    }
}

/// Checks the `agents` of a binding for a credential owned by `tenant` against the store.
pub async fn unusable_agents(
    store: &Store,
    tenant: &str,
    agents: &[String],
) -> Result<UnusableAgents, StoreError> {
    let mut out = UnusableAgents::default();
    for id in agents {
        match store.get_agent(id).await? {
            Some(a) if a.tenant == tenant => {}
            Some(a) => out.other_tenant.push((id.clone(), a.tenant)),
            None => out.unknown.push(id.clone()),
        }
    }
    Ok(out)
}

fn stored_view(c: &StoredCredential) -> Value {
    match stored_binding(c) {
        Ok(b) => view(
            &b,
            "store",
            Some(&c.tenant),
            Some((c.created_at, c.updated_at)),
        ),
        Err(_) => {
            json!({"name": c.name, "source": "store", "tenant": c.tenant, "error": "unreadable binding"})
        }
    }
}

fn api(cp: &ControlPlane) -> Result<&CredentialsApi, ApiError> {
    cp.credentials().ok_or_else(|| {
        ApiError::new(
            Status::NotFound,
            "credentials_disabled",
            "credential management is not enabled on this gateway",
            ErrorSource::Client,
        )
    })
}

/// The credentials the operator may see (`GET /v1/credentials`): the config file's for
/// the platform tenant, then the tenant's stored ones; never a secret.
pub async fn list(cp: &ControlPlane, op: &Operator) -> Result<Vec<Value>, ApiError> {
    let a = api(cp)?;
    let mut items: Vec<Value> = Vec::new();
    if op.tenant == DEFAULT_PLATFORM_TENANT {
        items.extend(a.config.iter().map(|c| view(c, "config", None, None)));
    }
    let stored = cp
        .store()
        .list_credentials(Some(&op.tenant))
        .await
        .map_err(store_error)?;
    items.extend(stored.iter().map(stored_view));
    Ok(items)
}

/// One credential as `GET /v1/credentials/{name}` shows it; 404 when unknown or
/// another tenant's.
pub async fn get(cp: &ControlPlane, op: &Operator, name: &str) -> Result<Value, ApiError> {
    let a = api(cp)?;
    if let Some(c) = a.config.iter().find(|c| c.name == name) {
        if op.tenant == DEFAULT_PLATFORM_TENANT {
            return Ok(view(c, "config", None, None));
        }
        return Err(not_found());
    }
    match cp.store().get_credential(name).await.map_err(store_error)? {
        Some(c) if c.tenant == op.tenant => Ok(stored_view(&c)),
        _ => Err(not_found()),
    }
}

/// Replaces the secret of the operator's stored credential `name`, keeping its binding.
/// The secret is write-only: the answer is the binding, as [`get`] shows it.
pub async fn rotate_secret(
    cp: &ControlPlane,
    op: &Operator,
    name: &str,
    secret: &str,
) -> Result<Value, ApiError> {
    op.require_write()?;
    let a = api(cp)?;
    if a.config.iter().any(|c| c.name == name) {
        return Err(config_declared(name, "change it there"));
    }
    let stored = match cp.store().get_credential(name).await.map_err(store_error)? {
        Some(c) if c.tenant == op.tenant => c,
        _ => return Err(not_found()),
    };
    let binding = stored_binding(&stored)
        .map_err(|_| ApiError::internal("the stored binding of this credential cannot be read"))?;
    let mut body = binding_body(&binding);
    body.insert("secret".into(), json!(secret));
    let raw = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    put(cp, op, name, &raw).await.map(|(v, _)| v)
}

/// The fields of a binding as a `PUT` body takes them.
fn binding_body(c: &CredentialConfig) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("hosts".into(), json!(c.hosts));
    m.insert("header".into(), json!(c.header));
    m.insert("format".into(), json!(c.format));
    m.insert("agents".into(), json!(c.agents));
    m.insert("groups".into(), json!(c.groups));
    m.insert("tenants".into(), json!(c.tenants));
    m.insert("mode".into(), json!(c.mode));
    m
}

fn config_declared(name: &str, what: &str) -> ApiError {
    ApiError::new(
        Status::Conflict,
        "conflict",
        format!("credential {name:?} is declared in the config file; {what}"),
        ErrorSource::Client,
    )
}

/// `PUT /v1/credentials/{name}`: `hosts` (required), `header`, `format`, `agents`, `groups`,
/// `tenants` (only the operator's own), `mode`, and `secret` (required to create; omitted on
/// an update keeps the stored one). Returns the binding and whether it was created
/// (the API answers 201 then, 200 on an update).
pub async fn put(
    cp: &ControlPlane,
    op: &Operator,
    name: &str,
    body: &[u8],
) -> Result<(Value, bool), ApiError> {
    op.require_write()?;
    let a = api(cp)?;
    let mut map = parse_object(body)?;
    let secret = match map.remove("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim().to_owned();
            if s.is_empty() || s.bytes().any(|b| b.is_ascii_control()) {
                return Err(invalid(
                    "secret",
                    "must be a non-empty string without control characters",
                ));
            }
            Some(s)
        }
        Some(_) => return Err(invalid("secret", "must be a string")),
    };
    if map.contains_key("name") {
        return Err(invalid("name", "is taken from the path"));
    }
    for source in ["env", "file"] {
        if map.contains_key(source) {
            return Err(invalid(
                source,
                "is for config-file credentials; send `secret`",
            ));
        }
    }
    let mut spec_with_name = map.clone();
    spec_with_name.insert("name".into(), json!(name));
    let binding: CredentialConfig = serde_json::from_value(Value::Object(spec_with_name))
        .map_err(|e| invalid("body", e.to_string()))?;
    binding
        .validate_binding("")
        .map_err(|e| invalid(&e.key, e.reason))?;
    HostMatcher::new(&binding.hosts).map_err(|e| invalid("hosts", e.to_string()))?;
    if let Some(t) = binding.tenants.iter().find(|t| **t != op.tenant) {
        return Err(invalid(
            "tenants",
            format!("`{t}`: a credential applies to its own tenant's agents only"),
        ));
    }
    if a.config.iter().any(|c| c.name == name) {
        return Err(config_declared(name, "change it there"));
    }
    let now = cp.clock().unix_secs();
    let _write = cp.write_lock.lock().await;
    let existing = cp.store().get_credential(name).await.map_err(store_error)?;
    let existed = existing.is_some();
    // Another tenant's name is a conflict whatever the body says (the store refuses it).
    if existing.is_none_or(|c| c.tenant == op.tenant) {
        // Another tenant's agent and an unknown one read the same: the answer never tells
        // whether an id exists elsewhere.
        let unusable = unusable_agents(cp.store(), &op.tenant, &binding.agents)
            .await
            .map_err(store_error)?;
        if !unusable.is_empty() {
            let names = unusable.names();
            return Err(invalid(
                "agents",
                format!(
                    "no agent {} in tenant `{}`; a credential applies to its own tenant's agents only",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    op.tenant
                ),
            )
            .with("agents", json!(names)));
        }
    }
    let stored = cp
        .store()
        .put_credential(
            name,
            &op.tenant,
            &Value::Object(map),
            secret.as_deref(),
            &a.key,
            now,
        )
        .await
        .map_err(store_error)?;
    cp.reload_after_write().await;
    info!(operator = %op.key_id, tenant = %op.tenant, credential = name, secret_changed = secret.is_some(), "credential written");
    Ok((stored_view(&stored), !existed))
}

/// Deletes the operator's stored credential `name`; 404 when unknown or another tenant's.
pub async fn delete(cp: &ControlPlane, op: &Operator, name: &str) -> Result<(), ApiError> {
    op.require_write()?;
    let a = api(cp)?;
    if a.config.iter().any(|c| c.name == name) {
        return Err(config_declared(name, "remove it there"));
    }
    let _write = cp.write_lock.lock().await;
    if !cp
        .store()
        .delete_credential(name, &op.tenant)
        .await
        .map_err(store_error)?
    {
        return Err(not_found());
    }
    cp.reload_after_write().await;
    info!(operator = %op.key_id, tenant = %op.tenant, credential = name, "credential deleted");
    Ok(())
}
