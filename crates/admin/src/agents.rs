//! Agent operations: list, read, create, change the config, and the lifecycle actions.
//! The JSON API (`/v1/agents...`) and the console call these same functions; the role
//! and tenant checks are made here, so neither front end can skip them. Every write goes
//! to the store, then the registry is reloaded before the answer, so the next proxy
//! request sees the change.

use crate::body::parse_object;
use crate::control::ControlPlane;
use crate::operator::Operator;
use crate::respond::{agent_not_found, store_error};
use portcullis_core::{Agent, AgentStatus, ApiError, ErrorSource, Status};
use portcullis_identity::{
    generate_secret, hash_secret, validate_agent, AgentConfigUpdate, FieldError, UpdateError,
    ValidationErrors,
};
use portcullis_store::Modified;
use serde_json::{Map, Value};
use tracing::info;

/// A lifecycle action on one agent (`POST /v1/agents/{id}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// New secret, generation + 1.
    Rotate,
    /// Status `suspended`.
    Suspend,
    /// Status `active` (not from `revoked`).
    Activate,
    /// Status `revoked`, permanent.
    Revoke,
}

impl Action {
    /// The action's name in paths and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rotate => "rotate",
            Action::Suspend => "suspend",
            Action::Activate => "activate",
            Action::Revoke => "revoke",
        }
    }

    /// The action named `s` in a path.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rotate" => Some(Action::Rotate),
            "suspend" => Some(Action::Suspend),
            "activate" => Some(Action::Activate),
            "revoke" => Some(Action::Revoke),
            _ => None,
        }
    }
}

/// The answer of a create or a rotation: the stored agent and its new secret, shown once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    /// The agent as stored.
    pub agent: Agent,
    /// The plaintext secret (never stored; only its hash is).
    pub secret: String,
}

/// Every agent and sub-agent of the operator's tenant.
pub async fn list(cp: &ControlPlane, op: &Operator) -> Result<Vec<Agent>, ApiError> {
    cp.store()
        .list_agents(Some(&op.tenant))
        .await
        .map_err(store_error)
}

/// The top-level agent `id` if it belongs to the operator's tenant; 404 otherwise
/// (an invalid id, an unknown id and another tenant's agent look the same).
pub async fn get(cp: &ControlPlane, op: &Operator, id: &str) -> Result<Agent, ApiError> {
    if !portcullis_core::is_valid_id(id) {
        return Err(agent_not_found());
    }
    match cp.store().get_agent(id).await.map_err(store_error)? {
        Some(a) if a.tenant == op.tenant => Ok(a),
        _ => Err(agent_not_found()),
    }
}

/// Creates an agent from a JSON object: id, groups, allowed_scopes (or scopes), mode,
/// enabled, risk_level, token_ttl, attributes, limits. The tenant is the operator's. The
/// secret is returned this once.
pub async fn create(
    cp: &ControlPlane,
    op: &Operator,
    mut map: Map<String, Value>,
) -> Result<WithSecret, ApiError> {
    op.require_write()?;
    let mut errs: Vec<FieldError> = Vec::new();
    let mut id_reported = false;
    let id = match map.remove("id") {
        Some(Value::String(s)) => s,
        Some(_) => {
            errs.push(FieldError::new("id", "must be a string"));
            id_reported = true;
            String::new()
        }
        None => {
            errs.push(FieldError::new("id", "is required"));
            id_reported = true;
            String::new()
        }
    };
    match map.remove("tenant") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == op.tenant => {}
        Some(_) => errs.push(FieldError::new(
            "tenant",
            "must be omitted or equal to the operator's tenant",
        )),
    }
    let attributes = match map.remove("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            errs.push(FieldError::new("attributes", "must be a JSON object"));
            Map::new()
        }
    };
    let scopes_name = if map.contains_key("allowed_scopes") {
        if map.contains_key("scopes") {
            errs.push(FieldError::new(
                "allowed_scopes",
                "give either allowed_scopes or scopes, not both",
            ));
            map.remove("scopes");
        }
        if let Some(v) = map.remove("allowed_scopes") {
            map.insert("scopes".into(), v);
        }
        "allowed_scopes"
    } else {
        "scopes"
    };
    let update = if map.values().all(Value::is_null) {
        AgentConfigUpdate::default()
    } else {
        let rest = serde_json::to_vec(&Value::Object(map)).unwrap_or_default();
        match AgentConfigUpdate::from_json(&rest) {
            Ok(u) => u,
            Err(UpdateError::Invalid(v)) => {
                errs.extend(v.0.into_iter().map(|e| rename(e, scopes_name)));
                AgentConfigUpdate::default()
            }
            Err(UpdateError::NoFields) => AgentConfigUpdate::default(),
            Err(e @ UpdateError::Malformed) => return Err(e.to_api_error()),
        }
    };
    let now = cp.clock().unix_secs();
    let mut agent = Agent::new(id, op.tenant.clone(), now);
    update.apply(&mut agent, now);
    agent.attributes = attributes;
    let secret = generate_secret();
    agent.secret_sha256 = Some(hash_secret(&secret));
    if let Err(v) = validate_agent(&agent) {
        errs.extend(
            v.0.into_iter()
                .filter(|e| !(id_reported && e.field == "id"))
                .map(|e| rename(e, scopes_name)),
        );
    }
    if !errs.is_empty() {
        return Err(ValidationErrors(errs).to_api_error());
    }
    let _write = cp.write_lock.lock().await;
    cp.store().create_agent(&agent).await.map_err(store_error)?;
    cp.reload_after_write().await;
    info!(operator = %op.key_id, tenant = %op.tenant, agent = %agent.id, "agent created");
    let stored = cp
        .store()
        .get_agent(&agent.id)
        .await
        .map_err(store_error)?
        .unwrap_or(agent);
    Ok(WithSecret {
        agent: stored,
        secret,
    })
}

/// Reports scope errors under the name the client used.
fn rename(mut e: FieldError, scopes_name: &str) -> FieldError {
    if scopes_name != "scopes" {
        if let Some(rest) = e.field.strip_prefix("scopes") {
            e.field = format!("{scopes_name}{rest}");
        }
    }
    e
}

/// Applies a config change (a JSON object body, see [`AgentConfigUpdate::from_json`]).
/// Malformed JSON is 400 whichever agent it names; the fields are validated only once the
/// agent is known to be the operator's, so a 422 never confirms that another tenant's id
/// exists.
pub async fn update_config(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
    body: &[u8],
) -> Result<Agent, ApiError> {
    op.require_write()?;
    let map = parse_object(body)?;
    let _write = cp.write_lock.lock().await;
    // Checked before the edit so a 422 never confirms another tenant's id.
    get(cp, op, id).await?;
    let body = serde_json::to_vec(&Value::Object(map)).unwrap_or_default();
    let update = AgentConfigUpdate::from_json(&body).map_err(|e| e.to_api_error())?;
    let now = cp.clock().unix_secs();
    // Read, edit and write as one store transaction: a change made meanwhile through
    // another gateway is never undone.
    let stored = modify_owned(cp, op, id, now, |agent| {
        update.apply(agent, now);
        validate_agent(agent).map_err(|v| v.to_api_error())?;
        Ok(true)
    })
    .await?;
    cp.reload_after_write().await;
    info!(operator = %op.key_id, tenant = %op.tenant, agent = %stored.id, "agent config updated");
    Ok(stored)
}

/// [`Store::modify_agent`] on an agent of the operator's tenant (another tenant's is 404).
///
/// [`Store::modify_agent`]: portcullis_store::Store::modify_agent
async fn modify_owned(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
    now: u64,
    edit: impl FnOnce(&mut Agent) -> Result<bool, ApiError>,
) -> Result<Agent, ApiError> {
    if !portcullis_core::is_valid_id(id) {
        return Err(agent_not_found());
    }
    let res = cp
        .store()
        .modify_agent(id, now, |agent| {
            if agent.tenant != op.tenant {
                return Err(agent_not_found());
            }
            edit(agent)
        })
        .await;
    match res {
        Ok(a) => Ok(a),
        Err(Modified::Refused(e)) => Err(e),
        Err(Modified::Store(e)) => Err(store_error(e)),
    }
}

fn revoked_conflict(action: Action) -> ApiError {
    ApiError::new(
        Status::Conflict,
        "agent_revoked",
        format!(
            "agent is revoked; revocation is permanent, cannot {}",
            action.as_str()
        ),
        ErrorSource::Client,
    )
}

/// Rotates, suspends, activates or revokes `id`. Returns the agent and, for a rotation,
/// the new secret (shown once).
pub async fn lifecycle(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
    action: Action,
) -> Result<(Agent, Option<String>), ApiError> {
    op.require_write()?;
    let _write = cp.write_lock.lock().await;
    let mut secret = None;
    let mut changed = false;
    let now = cp.clock().unix_secs();
    let stored = modify_owned(cp, op, id, now, |agent| {
        changed = match (action, agent.status) {
            (Action::Revoke, AgentStatus::Revoked) => false,
            (Action::Revoke, _) => {
                agent.status = AgentStatus::Revoked;
                true
            }
            (_, AgentStatus::Revoked) => return Err(revoked_conflict(action)),
            (Action::Suspend, AgentStatus::Suspended) => false,
            (Action::Suspend, _) => {
                agent.status = AgentStatus::Suspended;
                true
            }
            (Action::Activate, AgentStatus::Active) => false,
            (Action::Activate, _) => {
                agent.status = AgentStatus::Active;
                true
            }
            (Action::Rotate, _) => {
                let s = generate_secret();
                agent.secret_sha256 = Some(hash_secret(&s));
                agent.generation = agent.generation.saturating_add(1);
                secret = Some(s);
                true
            }
        };
        Ok(changed)
    })
    .await?;
    if !changed {
        return Ok((stored, None));
    }
    cp.reload_after_write().await;
    info!(
        operator = %op.key_id,
        tenant = %op.tenant,
        agent = %stored.id,
        action = action.as_str(),
        generation = stored.generation,
        "agent lifecycle change"
    );
    Ok((stored, secret))
}
