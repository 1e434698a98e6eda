//! The operator API under `/v1`: authentication, routing and the JSON answers. The
//! operations themselves (with their role and tenant checks) are in [`crate::ops`],
//! shared with the console; this module turns requests into calls and results into JSON.

use crate::agents;
use crate::body::{parse_object, read_json_body};
use crate::control::ControlPlane;
use crate::credentials;
use crate::decisions;
use crate::operator::authenticate;
use crate::policies::{self, PolicyApi};
use crate::respond::{error, json_response, no_store};
use crate::routes::Route;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use portcullis_core::{Agent, AgentMode, ApiError, ErrorSource, Status};
use serde_json::{json, Map, Value};

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
    if write {
        // Refused before the body is read; each operation checks again itself.
        op.require_write()?;
    }
    match route {
        Route::Agents if !write => {
            let agents = agents::list(cp, &op).await?;
            let items: Vec<Value> = agents.iter().map(agent_json).collect();
            Ok(json_response(StatusCode::OK, &json!({ "agents": items })))
        }
        Route::Agents => {
            let body = read_json_body(req).await?;
            let created = agents::create(cp, &op, parse_object(&body)?).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({ "agent": agent_json(&created.agent), "secret": created.secret }),
            ))
        }
        Route::Agent(id) => {
            let agent = agents::get(cp, &op, id).await?;
            Ok(json_response(StatusCode::OK, &agent_json(&agent)))
        }
        Route::Config(id) => {
            let body = read_json_body(req).await?;
            let agent = agents::update_config(cp, &op, id, &body).await?;
            Ok(json_response(StatusCode::OK, &agent_json(&agent)))
        }
        Route::Action(id, action) => {
            let (agent, secret) = agents::lifecycle(cp, &op, id, action).await?;
            let body = match secret {
                Some(s) => json!({ "agent": agent_json(&agent), "secret": s }),
                None => agent_json(&agent),
            };
            Ok(json_response(StatusCode::OK, &body))
        }
        Route::Decisions => decisions::list(cp, &op, req.uri().query()).await,
        Route::Decision(id) => decisions::get_json(cp, &op, id).await,
        Route::Spend => decisions::spend(cp, &op, req.uri().query()).await,
        Route::Policies | Route::Validate | Route::Simulate | Route::PolicyMode(_) => {
            policies::handle(cp, policy, &op, route, req).await
        }
        Route::Credentials => {
            let items = credentials::list(cp, &op).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "credentials": items }),
            ))
        }
        Route::Credential(name) if *req.method() == http::Method::GET => {
            let c = credentials::get(cp, &op, name).await?;
            Ok(json_response(StatusCode::OK, &c))
        }
        Route::Credential(name) if *req.method() == http::Method::DELETE => {
            credentials::delete(cp, &op, name).await?;
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        Route::Credential(name) => {
            let name = name.to_owned();
            let body = read_json_body(req).await?;
            let (c, created) = credentials::put(cp, &op, &name, &body).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &c))
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
