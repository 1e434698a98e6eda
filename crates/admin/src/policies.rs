//! The policy part of the operator API (`/v1/policies...`): list, validate, simulate and
//! runtime mode overrides on the gateway's [`PolicyEngine`].
//!
//! Policies are global (one set per gateway), so:
//! - every operator may list them, validate sources and simulate (all read-only, viewers
//!   included); operators outside the platform tenant see only the bindings that can
//!   apply to their tenant, reduced to their tenant and their agents;
//! - simulate runs as a registered agent of the operator's own tenant only (another
//!   tenant's agent is 404, like an unknown one);
//! - `PUT /v1/policies/{name}/mode` changes enforcement for every tenant, so it is
//!   reserved to `admin` keys of the platform tenant ([`DEFAULT_PLATFORM_TENANT`] unless
//!   [`PolicyApi::platform_tenant`] says otherwise); other admins get 403. Each change
//!   is logged with the operator's key id.
//!
//! Validation and simulation compile or evaluate Rego off the async threads, at most
//! [`MAX_CONCURRENT_EVALS`] at a time.

use crate::body::{parse_object, read_json_body};
use crate::control::ControlPlane;
use crate::operator::{Operator, DEFAULT_PLATFORM_TENANT};
use crate::respond::{agent_not_found, json_response};
use crate::routes::Route;
use crate::sim_request::{RequestReader, SimRequest};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use portcullis_core::{AgentStatus, ApiError, ErrorSource, PolicyMode, Status};
use portcullis_identity::{FieldError, Snapshot, ValidationErrors};
use portcullis_policy::{Binding, EngineError, PolicyEngine, PolicySummary};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Most validations and simulations running at once; more wait their turn.
pub const MAX_CONCURRENT_EVALS: usize = 2;

/// Longest policy name or validated file name accepted.
const MAX_NAME_LEN: usize = 128;

/// The policy engine as the operator API serves it. Hand it to
/// [`crate::Admin::with_policy`].
///
/// # `POST /v1/policies/simulate`
///
/// Evaluates a described request as the data plane would (interpreter path, no cache,
/// nothing forwarded, no metrics counted) and answers the full decision with a
/// per-policy trace. The input document comes from the data plane's own builder
/// ([`portcullis_policy::build_input`]) over the facts the gateway would derive: the
/// request is classified with the gateway's classifier and body bound (see
/// [`PolicyApi::request_reader`]). Malformed JSON is 400; an invalid body 422 with
/// `errors: [{field, reason}]`; an unknown agent or another tenant's agent 404.
///
/// Two forms, exactly one of `request` and `input`:
///
/// ```json
/// {"agent": "bot",
///  "request": {"kind": "http", "method": "POST", "scheme": "https",
///              "host": "api.openai.com", "port": 443,
///              "path": "/v1/chat/completions", "query": "a=1",
///              "headers": {"content-type": "application/json", "x-multi": ["a", "b"]},
///              "body": {"model": "gpt-4o", "stream": false, "max_tokens": 512}},
///  "llm": {"provider": "openai", "api": "chat.completions", "model": "gpt-4o"},
///  "usage": {"requests_last_minute": 3, "tokens_today": 1200},
///  "token": {"scopes": ["openai:chat:create"], "exp": 1767225600},
///  "subagent": "planner", "credential": "openai_prod",
///  "now": "2026-01-01T12:00:00Z"}
/// ```
///
/// ```json
/// {"agent": "bot", "input": {"kind": "http", "request": {"host": "api.stripe.com", ...}}}
/// ```
///
/// - `agent` (required): a top-level agent of the operator's tenant, as the registry holds
///   it; its identity (`input.agent`) always comes from the registry, never from the body.
/// - `request.kind`: `http` (default), `connect` or `token`. `host` is required for `http`
///   and `connect`; `method` defaults to `GET` (`CONNECT` for connect); `scheme` to
///   `https` (`http` when `port` is 80); `port` to 443 for https, 80 for http; `path`
///   to `/` (empty for connect; a `?query` suffix is split off into `query`).
///   `request` may be left out when `token` is given: that simulates a token request
///   (`kind = token`, as the token endpoint decides it) for `token.scopes`.
/// - `token.scopes`: simulate token authentication with these scopes (for `kind = token`,
///   the scopes being requested); without it the agent's allowed scopes apply, as for
///   secret authentication. Scopes are not checked against the agent's allowed scopes:
///   the simulator shows what policy says, the token endpoint enforces the rest.
/// - `request.body` is the body the agent sends, as JSON (sent serialized), or
///   `request.body_raw` as its exact text (malformed JSON, a duplicated field, a form).
///   As in the gateway, the body is read only for a request the gateway buffers: a `POST`
///   to an LLM provider (built-in or `[[llm.providers]]`), not an upgrade, JSON by
///   `content-type` if one is given, at most `proxy.max_inspect_body` bytes. Then
///   `input.llm` has the provider, API, model, stream and max tokens it states and
///   `input.request.body` the parsed body; otherwise the body reaches no policy (a request
///   to a provider still gets `input.llm` without body fields). Only `http` requests have
///   a body. `input.request.method_override` is derived from the headers and query.
/// - `llm` (optional; `provider` and `api` required when given) states the classification
///   the caller expects; every stated field that differs from what the gateway derives is
///   a 422 naming it (`llm.model`: "the gateway derives model \"gpt-4-32k\" from the
///   request body ..."). It never replaces the derived classification.
/// - `input`: a raw input document (DESIGN §4) evaluated as given (nothing is classified),
///   except that `input.agent` is replaced with the registered agent's and
///   `input.request.method_override` is derived from its headers and query, as the gateway
///   derives it. It cannot be combined with
///   `request`, `llm`, `usage`, `token`, `subagent`, `credential` or `now`.
///
/// In both forms credential headers (`authorization`, `cookie`, `x-api-key`, anything
/// named like a token, secret or session, ...) are dropped from `request.headers`, so
/// neither the policies nor the answer ever see them.
///
/// The answer: `{"decision": {allowed, verdict, policy, reasons, code, decision_id,
/// would_deny, evaluations, eval_us, cached}, "on_block", "trace": [{policy, applicable,
/// mode, allow, deny, error, eval_us}], "input", "version", "agent": {id, tenant, status,
/// mode}, "authenticates", "forwarded": false, "classification"}`. `authenticates` is false
/// for a suspended or revoked agent, which the proxy refuses before policy is consulted;
/// `classification` is the derived one (`provider`, `api`, `model`, `stream`,
/// `max_tokens`, `tools`, `body_inspected`, `note` saying why body fields are absent), or
/// null.
pub struct PolicyApi {
    engine: Arc<PolicyEngine>,
    platform_tenant: String,
    reader: RequestReader,
    slots: Semaphore,
}

impl PolicyApi {
    /// Serves `engine`; mode changes are reserved to admins of
    /// [`DEFAULT_PLATFORM_TENANT`].
    pub fn new(engine: Arc<PolicyEngine>) -> Self {
        Self {
            engine,
            platform_tenant: DEFAULT_PLATFORM_TENANT.to_owned(),
            reader: RequestReader::default(),
            slots: Semaphore::new(MAX_CONCURRENT_EVALS),
        }
    }

    /// Sets how simulated requests are read: the gateway's own classifier and
    /// `proxy.max_inspect_body` (default: the built-in providers and 1 MiB), so a
    /// simulation sees the facts the data plane would.
    pub fn request_reader(mut self, reader: RequestReader) -> Self {
        self.reader = reader;
        self
    }

    /// Sets the tenant whose admins may change policy modes (and who see every binding).
    pub fn platform_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.platform_tenant = tenant.into();
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }

    fn is_platform(&self, op: &Operator) -> bool {
        op.tenant == self.platform_tenant
    }

    /// Runs CPU-bound Rego work off the async threads, bounded by [`MAX_CONCURRENT_EVALS`].
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&PolicyEngine) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::internal("policy evaluation unavailable"))?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| {
                warn!(error = %e, "policy evaluation task failed");
                ApiError::internal("policy evaluation failed")
            })
    }
}

impl std::fmt::Debug for PolicyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyApi")
            .field("engine", &self.engine)
            .field("platform_tenant", &self.platform_tenant)
            .finish_non_exhaustive()
    }
}

/// 404 `policy_disabled`: the gateway runs without a policy engine.
pub(crate) fn disabled() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "policy_disabled",
        "the policy engine is not enabled on this gateway",
        ErrorSource::Client,
    )
}

fn policy_not_found() -> ApiError {
    ApiError::new(
        Status::NotFound,
        "not_found",
        "policy not found",
        ErrorSource::Client,
    )
}

/// Answers a `/v1/policies...` route for an authenticated operator whose role already
/// passed the read/write check.
pub(crate) async fn handle(
    cp: &ControlPlane,
    api: Option<&PolicyApi>,
    op: &Operator,
    route: Route<'_>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let api = api.ok_or_else(disabled)?;
    let v = match route {
        Route::Policies => list(cp, api, op),
        Route::Validate => {
            let body = read_json_body(req).await?;
            validate(api, &body).await?
        }
        Route::Simulate => {
            let body = read_json_body(req).await?;
            simulate(cp, api, op, parse_object(&body)?).await?
        }
        Route::PolicyMode(name) => {
            // Refused before the body is read; set_mode checks again itself.
            api.require_platform_admin(op)?;
            let body = read_json_body(req).await?;
            set_mode(cp, api, op, name, &body).await?
        }
        _ => {
            return Err(ApiError::new(
                Status::NotFound,
                "not_found",
                "no such endpoint",
                ErrorSource::Client,
            ))
        }
    };
    Ok(json_response(StatusCode::OK, &v))
}

impl PolicyApi {
    /// Whether `op` belongs to the platform tenant (sees every binding and the sources).
    pub fn is_platform_operator(&self, op: &Operator) -> bool {
        self.is_platform(op)
    }

    /// 403 unless `op` is an admin of the platform tenant: policies are global, so only
    /// they may change a policy's mode.
    pub fn require_platform_admin(&self, op: &Operator) -> Result<(), ApiError> {
        op.require_write()?;
        if self.is_platform(op) {
            Ok(())
        } else {
            Err(ApiError::new(
                Status::Forbidden,
                "forbidden",
                format!(
                    "policies are global: only admins of tenant {:?} may change a policy's mode",
                    self.platform_tenant
                ),
                ErrorSource::Policy,
            ))
        }
    }
}

/// The Rego source of policy `name`'s file, for the platform tenant's operators only
/// (sources are global and may name any tenant's agents); 404 otherwise.
pub fn source(api: &PolicyApi, op: &Operator, name: &str) -> Result<(String, String), ApiError> {
    if !api.is_platform(op) {
        return Err(policy_not_found());
    }
    let compiled = api.engine.compiled();
    let file = api
        .engine
        .list_policies()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.file)
        .ok_or_else(policy_not_found)?;
    compiled
        .sources()
        .iter()
        .find(|s| s.path == file)
        .map(|s| (s.path.clone(), s.contents.clone()))
        .ok_or_else(policy_not_found)
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ValidationErrors(vec![FieldError::new(field, reason)]).to_api_error()
}

/// One policy as listed.
fn policy_json(p: PolicySummary, bindings: Vec<Binding>) -> Value {
    json!({
        "name": p.name,
        "file": p.file,
        "mode": p.mode,
        "mode_override": p.mode_override,
        "bindings": bindings,
        "cacheable": p.cacheable,
        "non_deterministic": p.non_deterministic,
    })
}

/// The bindings an operator of `tenant` may see: those that can apply to the tenant,
/// with `tenants` narrowed to it and `agents` to its own agents. A binding naming only
/// other tenants' agents is left out rather than shown as "every agent".
fn visible_bindings(bindings: Vec<Binding>, tenant: &str, agents: &Snapshot) -> Vec<Binding> {
    bindings
        .into_iter()
        .filter(|b| b.tenants.is_empty() || b.tenants.iter().any(|t| t == tenant))
        .filter_map(|mut b| {
            if !b.tenants.is_empty() {
                b.tenants = vec![tenant.to_owned()];
            }
            let named_agents = !b.agents.is_empty();
            b.agents.retain(|id| {
                agents
                    .get(id)
                    .is_some_and(|e| e.agent.tenant.as_str() == tenant)
            });
            if named_agents && b.agents.is_empty() && b.groups.is_empty() {
                None
            } else {
                Some(b)
            }
        })
        .collect()
}

/// Every policy as `GET /v1/policies` shows it to `op` (bindings narrowed to its tenant
/// outside the platform tenant), with the set's version, default and reload status.
pub fn list(cp: &ControlPlane, api: &PolicyApi, op: &Operator) -> Value {
    let engine = &api.engine;
    let snapshot = cp.registry().snapshot();
    let platform = api.is_platform(op);
    let policies: Vec<Value> = engine
        .list_policies()
        .into_iter()
        .map(|p| {
            let bindings = if platform {
                p.bindings.clone()
            } else {
                visible_bindings(p.bindings.clone(), &op.tenant, &snapshot)
            };
            policy_json(p, bindings)
        })
        .collect();
    let cfg = engine.config();
    json!({
        "version": engine.version(),
        "default": cfg.default,
        "on_block": cfg.on_block,
        "reload": engine.reload_status(),
        "policies": policies,
    })
}

/// A file name for validation: relative, `[A-Za-z0-9_./-]`, no `..`.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('/')
        && !name.split('/').any(|seg| seg.is_empty() || seg == "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
}

/// `POST /v1/policies/validate` with `{"source": "<rego>", "name": "file.rego"}`:
/// `{"valid", "errors"}`.
pub async fn validate(api: &PolicyApi, body: &[u8]) -> Result<Value, ApiError> {
    let map = parse_object(body)?;
    let mut errs = Vec::new();
    for k in map.keys() {
        if k != "source" && k != "name" {
            errs.push(FieldError::new(k.clone(), "unknown field"));
        }
    }
    let source = match map.get("source") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            errs.push(FieldError::new("source", "is required"));
            String::new()
        }
        Some(_) => {
            errs.push(FieldError::new("source", "must be a string"));
            String::new()
        }
    };
    let name = match map.get("name") {
        None | Some(Value::Null) => "policy.rego".to_owned(),
        Some(Value::String(n)) if valid_file_name(n) => n.clone(),
        Some(_) => {
            errs.push(FieldError::new(
                "name",
                "must be a relative file name of [A-Za-z0-9_./-] (at most 128 characters, no ..)",
            ));
            String::new()
        }
    };
    if !errs.is_empty() {
        return Err(ValidationErrors(errs).to_api_error());
    }
    let errors = api
        .blocking(move |engine| engine.validate_source(&name, &source))
        .await?;
    Ok(json!({ "valid": errors.is_empty(), "errors": errors }))
}

/// `POST /v1/policies/simulate`: see [`PolicyApi`] for the body. Answers the full
/// decision (`decision`, `on_block`, `trace`, `input`, `version`) plus `agent` (id,
/// tenant, status, mode), `authenticates` (false when the proxy would refuse the agent
/// before policy: suspended or revoked), `forwarded: false` and `classification`.
pub async fn simulate(
    cp: &ControlPlane,
    api: &PolicyApi,
    op: &Operator,
    map: serde_json::Map<String, Value>,
) -> Result<Value, ApiError> {
    let sim = SimRequest::parse(&map, &api.reader).map_err(|v| v.to_api_error())?;
    if !portcullis_core::is_valid_id(sim.agent()) {
        return Err(agent_not_found());
    }
    let snapshot = cp.registry().snapshot();
    let entry = match snapshot.get(sim.agent()) {
        Some(e) if e.agent.tenant == op.tenant => e.clone(),
        _ => return Err(agent_not_found()),
    };
    let doc = sim.to_doc(
        entry.principal(),
        cp.clock().unix_secs(),
        entry.agent.token_ttl_secs,
    );
    let result = api
        .blocking(move |engine| engine.simulate_json(doc))
        .await?;
    let simulation = match result {
        Ok(s) => s,
        Err(EngineError::InvalidInput(reason)) => return Err(invalid("input", &reason)),
        Err(e) => {
            warn!(error = %e, "simulation failed");
            return Err(ApiError::internal("simulation failed"));
        }
    };
    let mut out = match serde_json::to_value(&simulation) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::internal("simulation could not be encoded")),
    };
    let a = &entry.agent;
    out.insert(
        "agent".into(),
        json!({"id": a.id, "tenant": a.tenant, "status": a.status, "mode": a.mode}),
    );
    out.insert(
        "authenticates".into(),
        Value::Bool(a.status == AgentStatus::Active),
    );
    out.insert("forwarded".into(), Value::Bool(false));
    out.insert(
        "classification".into(),
        serde_json::to_value(sim.classification()).unwrap_or(Value::Null),
    );
    info!(operator = %op.key_id, tenant = %op.tenant, agent = %a.id, verdict = ?simulation.decision.verdict, "policy simulation");
    Ok(Value::Object(out))
}

/// `PUT /v1/policies/{name}/mode` with `{"mode": "active|shadow|disabled"}`, or
/// `{"mode": null}` to drop the override. Kept in the store: every gateway sharing it
/// applies it (within a second), and it survives policy reloads and restarts.
/// Platform-tenant admins only.
pub async fn set_mode(
    cp: &ControlPlane,
    api: &PolicyApi,
    op: &Operator,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    api.require_platform_admin(op)?;
    let map = parse_object(body)?;
    let engine = &api.engine;
    let known = name.len() <= MAX_NAME_LEN && engine.compiled().position(name).is_some();
    if !known {
        return Err(policy_not_found());
    }
    if let Some(k) = map.keys().find(|k| k.as_str() != "mode") {
        return Err(invalid(k, "unknown field"));
    }
    let mode = match map.get("mode") {
        None => return Err(invalid("mode", "is required")),
        Some(Value::Null) => None,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "active" => Some(PolicyMode::Active),
            "shadow" => Some(PolicyMode::Shadow),
            "disabled" => Some(PolicyMode::Disabled),
            _ => return Err(invalid("mode", "must be active, shadow, disabled or null")),
        },
        Some(_) => return Err(invalid("mode", "must be active, shadow, disabled or null")),
    };
    let before = engine
        .list_policies()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.mode);
    // The store first: the change then reaches every replica (and the next start).
    let now = cp.clock().unix_secs();
    cp.store()
        .set_policy_mode(name, mode.map(PolicyMode::as_str), now)
        .await
        .map_err(crate::respond::store_error)?;
    let r = match mode {
        Some(m) => engine.set_mode(name, m),
        None => engine.clear_mode(name),
    };
    match r {
        Ok(()) => {}
        // Removed by a reload since the check above.
        Err(EngineError::UnknownPolicy(_)) => return Err(policy_not_found()),
        Err(e) => {
            warn!(error = %e, "policy mode change failed");
            return Err(ApiError::internal("policy mode change failed"));
        }
    }
    cp.reload_after_write().await;
    let summary = engine
        .list_policies()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(policy_not_found)?;
    info!(
        operator = %op.key_id,
        tenant = %op.tenant,
        policy = %name,
        from = ?before,
        to = ?summary.mode,
        override_set = mode.is_some(),
        version = engine.version(),
        "policy mode changed"
    );
    let bindings = summary.bindings.clone();
    let mut v = policy_json(summary, bindings);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("version".into(), Value::from(engine.version()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Agent;
    use portcullis_identity::Registry;

    #[test]
    fn file_names() {
        for ok in ["p.rego", "lib/catalog.rego", "a-b_c.rego", "x"] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x.rego",
            "a/../b",
            "a//b",
            "a/",
            "a b",
            "a\\b",
            &"x".repeat(129),
        ] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn bindings_are_narrowed_to_the_tenant() {
        let registry = Registry::from_agents(vec![
            Agent::new("mine", "acme", 1),
            Agent::new("theirs", "globex", 1),
        ]);
        let snap = registry.snapshot();
        let b = |agents: &[&str], groups: &[&str], tenants: &[&str]| Binding {
            agents: agents.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
            ..Binding::all("p", PolicyMode::Shadow)
        };
        let out = visible_bindings(
            vec![
                b(&[], &[], &[]),
                b(&[], &[], &["globex"]),
                b(&[], &[], &["globex", "acme"]),
                b(&["theirs"], &[], &[]),
                b(&["theirs", "mine"], &[], &[]),
                b(&["theirs"], &["ops"], &[]),
                b(&["ghost"], &[], &[]),
            ],
            "acme",
            &snap,
        );
        assert_eq!(
            out,
            vec![
                b(&[], &[], &[]),
                b(&[], &[], &["acme"]),
                b(&["mine"], &[], &[]),
                b(&[], &["ops"], &[]),
            ]
        );
    }
}
