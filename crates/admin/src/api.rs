//! The operator API under `/v1`: authentication, role and tenant checks, agent CRUD and
//! lifecycle. Every write goes to the store, then the registry is reloaded before the
//! answer is sent, so the next proxy request sees the change. `/v1/policies...` are
//! authenticated and role-checked here and answered by [`crate::policies`].

use crate::body::{parse_object, read_json_body};
use crate::control::ControlPlane;
use crate::credentials;
use crate::decisions;
use crate::operator::{authenticate, Operator};
use crate::policies::{self, PolicyApi};
use crate::respond::{agent_not_found, error, json_response, no_store, store_error};
use crate::routes::{Action, Route};
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use portcullis_core::{Agent, AgentMode, AgentStatus, ApiError, ErrorSource, Status};
use portcullis_identity::{
    generate_secret, hash_secret, validate_agent, AgentConfigUpdate, FieldError, UpdateError,
    ValidationErrors,
};
use portcullis_store::Modified;
use serde_json::{json, Map, Value};
use tracing::info;

/// Answers one `/v1/*` request; `/v1/policies...` go to `policy` (404 `policy_disabled`
/// when the gateway runs without a policy engine).
pub(crate) async fn handle(
    cp: &ControlPlane,
    policy: Option<&PolicyApi>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    no_store(match dispatch(cp, policy, req).await {
        Ok(r) => r,
        Err(e) => error(e),
    })
}

async fn dispatch(
    cp: &ControlPlane,
    policy: Option<&PolicyApi>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let op = authenticate(cp.store(), &cp.keys, auth).await?;
    let path = req.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        return Err(ApiError::new(
            Status::NotFound,
            "not_found",
            "no such endpoint",
            ErrorSource::Client,
        ));
    };
    if !route.allowed().contains(req.method()) {
        let mut r = error(ApiError::new(
            Status::MethodNotAllowed,
            "method_not_allowed",
            format!("use {}", route.allow_header()),
            ErrorSource::Client,
        ));
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(route.allow_header()));
        return Ok(r);
    }
    if route.is_policy() && policy.is_none() {
        return Err(policies::disabled());
    }
    let write = route.is_write(req.method());
    if write && !op.can_write() {
        return Err(ApiError::new(
            Status::Forbidden,
            "forbidden",
            "role viewer may only read",
            ErrorSource::Policy,
        ));
    }
    match route {
        Route::Agents if !write => list(cp, &op).await,
        Route::Agents => {
            let body = read_json_body(req).await?;
            create(cp, &op, &body).await
        }
        Route::Agent(id) => {
            let agent = load_owned(cp, &op, id).await?;
            Ok(json_response(StatusCode::OK, &agent_json(&agent)))
        }
        Route::Config(id) => {
            let body = read_json_body(req).await?;
            update_config(cp, &op, id, &body).await
        }
        Route::Action(id, action) => lifecycle(cp, &op, id, action).await,
        Route::Decisions => decisions::list(cp, &op, req.uri().query()).await,
        Route::Decision(id) => decisions::get(cp, &op, id).await,
        Route::Policies | Route::Validate | Route::Simulate | Route::PolicyMode(_) => {
            policies::handle(cp, policy, &op, route, req).await
        }
        Route::Credentials => credentials::list(cp, &op).await,
        Route::Credential(name) if *req.method() == http::Method::GET => {
            credentials::get(cp, &op, name).await
        }
        Route::Credential(name) if *req.method() == http::Method::DELETE => {
            credentials::delete(cp, &op, name).await
        }
        Route::Credential(name) => {
            let name = name.to_owned();
            let body = read_json_body(req).await?;
            credentials::put(cp, &op, &name, &body).await
        }
    }
}

/// The agent as the API shows it: never the secret hash.
pub(crate) fn agent_json(a: &Agent) -> Value {
    let mut m = Map::with_capacity(18);
    m.insert("id".into(), Value::from(a.id.as_str()));
    m.insert("tenant".into(), Value::from(a.tenant.as_str()));
    m.insert(
        "parent".into(),
        a.parent.as_deref().map_or(Value::Null, Value::from),
    );
    m.insert("groups".into(), json!(a.groups));
    m.insert("status".into(), json!(a.status));
    m.insert("enabled".into(), Value::Bool(a.mode != AgentMode::Disabled));
    m.insert("mode".into(), json!(a.mode));
    m.insert("risk_level".into(), json!(a.risk_level));
    m.insert("allowed_scopes".into(), json!(a.allowed_scopes));
    m.insert("token_ttl".into(), Value::from(a.token_ttl_secs));
    m.insert("attributes".into(), Value::Object(a.attributes.clone()));
    m.insert("generation".into(), Value::from(a.generation));
    m.insert("limits".into(), json!(a.limits));
    m.insert("source".into(), json!(a.source));
    // Config-declared values an operator changed at run time (kept across restarts).
    m.insert(
        "config_overrides".into(),
        json!(a.config_overrides.fields()),
    );
    m.insert("created_at".into(), Value::from(a.created_at));
    m.insert("updated_at".into(), Value::from(a.updated_at));
    Value::Object(m)
}

async fn list(cp: &ControlPlane, op: &Operator) -> Result<Response<Full<Bytes>>, ApiError> {
    let agents = cp
        .store()
        .list_agents(Some(&op.tenant))
        .await
        .map_err(store_error)?;
    let items: Vec<Value> = agents.iter().map(agent_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "agents": items })))
}

/// The top-level agent `id` if it belongs to the operator's tenant; 404 otherwise
/// (an invalid id, an unknown id and another tenant's agent look the same).
async fn load_owned(cp: &ControlPlane, op: &Operator, id: &str) -> Result<Agent, ApiError> {
    if !portcullis_core::is_valid_id(id) {
        return Err(agent_not_found());
    }
    match cp.store().get_agent(id).await.map_err(store_error)? {
        Some(a) if a.tenant == op.tenant => Ok(a),
        _ => Err(agent_not_found()),
    }
}

/// `POST /v1/agents`: id, groups, allowed_scopes (or scopes), mode, enabled, risk_level,
/// token_ttl, attributes. The tenant is the operator's. Answers 201 with the agent and
/// its secret, shown this once.
async fn create(
    cp: &ControlPlane,
    op: &Operator,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut map = parse_object(body)?;
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
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "agent": agent_json(&stored), "secret": secret }),
    ))
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

/// `PUT /v1/agents/{id}/config`.
async fn update_config(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    // Malformed JSON is 400 whichever agent it names; validity of the fields is checked
    // only once the agent is known to be the operator's, so a 422 never confirms that
    // another tenant's id exists.
    let map = parse_object(body)?;
    let _write = cp.write_lock.lock().await;
    // Checked before the edit so a 422 never confirms another tenant's id.
    load_owned(cp, op, id).await?;
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
    Ok(json_response(StatusCode::OK, &agent_json(&stored)))
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

/// `POST /v1/agents/{id}/{rotate|suspend|activate|revoke}`.
async fn lifecycle(
    cp: &ControlPlane,
    op: &Operator,
    id: &str,
    action: Action,
) -> Result<Response<Full<Bytes>>, ApiError> {
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
    if changed {
        cp.reload_after_write().await;
        info!(
            operator = %op.key_id,
            tenant = %op.tenant,
            agent = %stored.id,
            action = action.as_str(),
            generation = stored.generation,
            "agent lifecycle change"
        );
    }
    let body = match secret {
        Some(s) => json!({ "agent": agent_json(&stored), "secret": s }),
        None => agent_json(&stored),
    };
    Ok(json_response(StatusCode::OK, &body))
}
