//! The simulator: full decisions with a per-policy trace on the interpreter path
//! (`portcullis policy eval`, `POST /v1/policies/simulate`), and source validation
//! (`POST /v1/policies/validate`).

use crate::binding::{OnBlock, Subject};
use crate::combine::{combine, Applied, PolicyResult};
use crate::compile::{compile, policy_entry, CompiledSet, SourceFile};
use crate::engine::{PolicyEngine, State};
use crate::error::{EngineError, PolicyError};
use crate::eval::{evaluate_rvm, first_line, interpret};
use crate::input::{agent_mode_str, rfc3339, risk_str, PolicyInput};
use crate::overrides::derive_method_override;
use portcullis_core::{AgentMode, Decision, PolicyMode, Principal};
use serde::Serialize;
use serde_json::Value as Json;
use std::time::Instant;

/// One policy's line in a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyTrace {
    /// Policy name.
    pub policy: String,
    /// Whether its bindings select the agent (and it is not disabled).
    pub applicable: bool,
    /// Effective mode for this agent (`disabled` when not applicable by mode).
    pub mode: Option<PolicyMode>,
    /// `allow` result.
    pub allow: bool,
    /// `deny` reasons.
    pub deny: Vec<String>,
    /// Evaluation error, if any.
    pub error: Option<String>,
    /// Evaluation time in microseconds (0 when not evaluated).
    pub eval_us: u64,
}

/// A simulated decision with its trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// The decision, as the data plane would make it (never cached).
    pub decision: Decision,
    /// Blocked-response style.
    pub on_block: OnBlock,
    /// Every policy, applicable or not, in name order.
    pub trace: Vec<PolicyTrace>,
    /// The input document that was evaluated.
    pub input: Json,
    /// Policy-set version used.
    pub version: u64,
}

/// The identity fields of a JSON input document.
#[derive(Debug, Clone)]
pub(crate) struct DocSubject {
    pub(crate) id: String,
    pub(crate) tenant: String,
    pub(crate) groups: Vec<String>,
    pub(crate) mode: AgentMode,
}

impl DocSubject {
    pub(crate) fn from_doc(doc: &Json) -> Result<Self, EngineError> {
        let agent = doc
            .get("agent")
            .and_then(Json::as_object)
            .ok_or_else(|| EngineError::InvalidInput("input.agent must be an object".into()))?;
        let text = |k: &str, default: &str| {
            agent
                .get(k)
                .and_then(Json::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let groups = agent
            .get("groups")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mode = match agent.get("mode").and_then(Json::as_str).unwrap_or("active") {
            "active" => AgentMode::Active,
            "shadow" => AgentMode::Shadow,
            "disabled" => AgentMode::Disabled,
            other => {
                return Err(EngineError::InvalidInput(format!(
                    "input.agent.mode {other:?} is not active, shadow or disabled"
                )))
            }
        };
        Ok(Self {
            id: text("id", "anonymous"),
            tenant: text("tenant", "default"),
            groups,
            mode,
        })
    }

    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject {
            agent_id: &self.id,
            tenant: &self.tenant,
            groups: &self.groups,
        }
    }
}

/// The `input.agent` (and `input.token`) JSON for a principal, to merge into a request
/// description (`policy eval --agent ID`, admin simulate).
pub fn principal_json(p: &Principal) -> (Json, Option<Json>) {
    let agent = serde_json::json!({
        "id": &*p.agent_id,
        "tenant": &*p.tenant,
        "groups": &*p.groups,
        "risk_level": risk_str(p.risk_level),
        "mode": agent_mode_str(p.mode),
        "attributes": &*p.attributes,
        "scopes": &*p.scopes,
    });
    let token = p
        .token
        .as_ref()
        .map(|t| serde_json::json!({"scopes": t.scopes, "exp": t.exp, "jti": t.jti}));
    (agent, token)
}

/// Sets `input.agent` (and `input.token` when the principal has one) in a document.
pub fn with_principal(mut doc: Json, p: &Principal) -> Json {
    let (agent, token) = principal_json(p);
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("agent".into(), agent);
        if let Some(t) = token {
            obj.insert("token".into(), t);
        }
    }
    doc
}

/// Evaluates `doc` against `state` with the interpreter, policy by policy, with timing.
pub(crate) fn evaluate_interpreter(
    set: &CompiledSet,
    state: &State,
    subject: &Subject<'_>,
    doc: &Json,
) -> (Vec<Applied>, Vec<PolicyTrace>, Vec<crate::plan::Applicable>) {
    let applicable = state.applicable(subject);
    let mut engine = set.engine.clone();
    engine.set_input(regorus::Value::from(doc.clone()));
    let mut applied = Vec::new();
    let mut trace = Vec::new();
    for (i, meta) in set.policies.iter().enumerate() {
        let Some(a) = applicable.iter().find(|a| a.index == i) else {
            trace.push(PolicyTrace {
                policy: meta.name.clone(),
                applicable: false,
                mode: None,
                allow: false,
                deny: Vec::new(),
                error: None,
                eval_us: 0,
            });
            continue;
        };
        let started = Instant::now();
        let result = match engine.eval_rule(policy_entry(i)) {
            Ok(v) => interpret(&v, meta),
            Err(e) => PolicyResult::Error(first_line(&e.to_string())),
        };
        let eval_us = started.elapsed().as_micros() as u64;
        let (allow, deny, error) = match &result {
            PolicyResult::Evaluated { allow, deny } => (*allow, deny.clone(), None),
            PolicyResult::Error(e) => (false, Vec::new(), Some(e.clone())),
        };
        trace.push(PolicyTrace {
            policy: meta.name.clone(),
            applicable: true,
            mode: Some(a.mode),
            allow,
            deny,
            error,
            eval_us,
        });
        applied.push(Applied {
            name: meta.name.clone(),
            mode: a.mode,
            result,
        });
    }
    (applied, trace, applicable)
}

impl PolicyEngine {
    /// Simulates a request on the interpreter path (no cache, nothing forwarded).
    pub fn simulate(&self, input: &PolicyInput<'_>) -> Simulation {
        let now = input.now.unwrap_or_else(|| self.now());
        let doc = input.to_json(now);
        match self.simulate_json(doc.clone()) {
            Ok(s) => s,
            // The document built from a PolicyInput always has an agent object.
            Err(e) => Simulation {
                decision: Decision {
                    reasons: vec![e.to_string()],
                    ..Decision::allow_unconditionally(self.next_id(now))
                },
                on_block: self.config().on_block,
                trace: Vec::new(),
                input: doc,
                version: self.version(),
            },
        }
    }

    /// Simulates a raw input document (`policy eval --input FILE`). `input.agent` selects
    /// bindings and agent mode; `input.now` defaults to the engine clock;
    /// `input.request.method_override` is derived from the document's headers and query,
    /// as the gateway derives it.
    pub fn simulate_json(&self, mut doc: Json) -> Result<Simulation, EngineError> {
        let subject = DocSubject::from_doc(&doc)?;
        derive_method_override(&mut doc);
        let now = self.now();
        if let Some(obj) = doc.as_object_mut() {
            obj.entry("now")
                .or_insert_with(|| Json::String(rfc3339(now)));
        }
        let started = Instant::now();
        let state = self.state();
        let (applied, trace, applicable) =
            evaluate_interpreter(&state.set, &state, &subject.subject(), &doc);
        let combined = if subject.mode == AgentMode::Disabled {
            combine(&[], AgentMode::Disabled, self.config().default)
        } else {
            combine(&applied, subject.mode, self.config().default)
        };
        let on_block = self.on_block_for(&combined.decision, &state, &applicable);
        let outcome = self.finish(
            combined,
            on_block,
            self.next_id(now),
            started,
            false,
            &state.set.revision,
        );
        Ok(Simulation {
            decision: outcome.decision,
            on_block,
            trace,
            input: doc,
            version: state.version,
        })
    }

    /// Decides a raw input document on the RVM path without the cache (fixtures, parity checks).
    pub fn decide_json(&self, mut doc: Json) -> Result<Decision, EngineError> {
        let subject = DocSubject::from_doc(&doc)?;
        derive_method_override(&mut doc);
        let now = self.now();
        if let Some(obj) = doc.as_object_mut() {
            obj.entry("now")
                .or_insert_with(|| Json::String(rfc3339(now)));
        }
        let started = Instant::now();
        let state = self.state();
        let combined = if subject.mode == AgentMode::Disabled {
            combine(&[], AgentMode::Disabled, self.config().default)
        } else {
            let applicable = state.applicable(&subject.subject());
            let results = evaluate_rvm(
                &state.set,
                &applicable,
                regorus::Value::from(doc),
                self.config().strategy,
            );
            let applied: Vec<Applied> = applicable
                .iter()
                .zip(results)
                .map(|(a, result)| Applied {
                    name: state.set.policies[a.index].name.clone(),
                    mode: a.mode,
                    result,
                })
                .collect();
            combine(&applied, subject.mode, self.config().default)
        };
        self.count_decision(combined.policy_error);
        let on_block = self.config().on_block;
        Ok(self
            .finish(
                combined,
                on_block,
                self.next_id(now),
                started,
                false,
                &state.set.revision,
            )
            .decision)
    }

    /// Validates one policy source as an addition to (or, under an existing file name, a
    /// replacement in) the active set (`POST /v1/policies/validate`). An empty list means
    /// a reload with the source would succeed.
    pub fn validate_source(&self, name: &str, src: &str) -> Vec<PolicyError> {
        let set = self.compiled();
        let path = if name.ends_with(".rego") {
            name.to_owned()
        } else {
            format!("{name}.rego")
        };
        validate_with(&set, &path, src)
    }
}

/// Line coverage of one policy file after a simulation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageFile {
    /// File path.
    pub path: String,
    /// Lines evaluated.
    pub covered: Vec<u32>,
    /// Lines not evaluated.
    pub not_covered: Vec<u32>,
}

impl PolicyEngine {
    /// Line coverage of every policy file when evaluating `doc` with the interpreter
    /// (`portcullis policy eval --coverage`).
    pub fn coverage_json(&self, doc: &Json) -> Result<Vec<CoverageFile>, EngineError> {
        let subject = DocSubject::from_doc(doc)?;
        let mut doc = doc.clone();
        derive_method_override(&mut doc);
        let state = self.state();
        let applicable = state.applicable(&subject.subject());
        let mut engine = state.set.engine.clone();
        engine.set_enable_coverage(true);
        engine.set_input(regorus::Value::from(doc));
        for a in &applicable {
            // Errors are part of the decision trace; coverage still reports what ran.
            let _ = engine.eval_rule(policy_entry(a.index));
        }
        let report = engine
            .get_coverage_report()
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        Ok(report
            .files
            .into_iter()
            .filter(|f| !f.path.starts_with("<portcullis"))
            .map(|f| CoverageFile {
                path: f.path,
                covered: f.covered.into_iter().collect(),
                not_covered: f.not_covered.into_iter().collect(),
            })
            .collect())
    }
}

/// Validates `src` (shown as `path`) as if it were added to the sources of `set` (or
/// replaced the file at `path`): the result is what a reload with it would say, so a
/// library no policy imports, or a policy whose package is mistyped, is refused here too.
pub fn validate_with(set: &CompiledSet, path: &str, src: &str) -> Vec<PolicyError> {
    let mut sources: Vec<SourceFile> = set
        .sources
        .iter()
        .filter(|s| s.path != path)
        .cloned()
        .collect();
    sources.push(SourceFile::new(path, src));
    match compile(sources) {
        Ok(_) => Vec::new(),
        Err(report) => report.errors,
    }
}

/// Validates sources standing alone (`portcullis policy check`).
pub fn validate_sources(sources: Vec<SourceFile>) -> crate::ErrorReport {
    match compile(sources) {
        Ok(_) => crate::ErrorReport::default(),
        Err(r) => r,
    }
}

/// Converts a decision to JSON for output.
pub fn decision_json(d: &Decision) -> Json {
    serde_json::to_value(d).unwrap_or(Json::Null)
}
