//! Validation of agent fields for create and update (admin API, CLI, config),
//! returning field-named errors suitable for a 422 answer.

use crate::secret::parse_sha256_hex;
use portcullis_core::{
    is_valid_id, is_valid_scope, Agent, AgentLimits, AgentMode, ApiError, RiskLevel, Status, Usd,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// Shortest allowed token lifetime, seconds.
pub const MIN_TOKEN_TTL_SECS: u64 = 60;
/// Longest allowed token lifetime, seconds (one day).
pub const MAX_TOKEN_TTL_SECS: u64 = 86_400;
/// Most scopes an agent may be allowed.
pub const MAX_SCOPES: usize = 256;
/// Most groups an agent may belong to.
pub const MAX_GROUPS: usize = 64;

const ID_RULE: &str = "must match ^[a-z][a-z0-9_]{1,63}$";

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Field name as the API spells it (`id`, `tenant`, `groups[2]`, `token_ttl`, ...).
    pub field: String,
    /// Why it is invalid.
    pub reason: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Every invalid field of a request (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// 422 `validation_error` with the first problem as `detail` and all of them in `errors`.
    pub fn to_api_error(&self) -> ApiError {
        let errors = serde_json::to_value(&self.0).unwrap_or(Value::Null);
        ApiError::new(
            Status::Unprocessable,
            "validation_error",
            self.to_string(),
            portcullis_core::ErrorSource::Client,
        )
        .with("errors", errors)
    }

    fn push(&mut self, r: Result<(), FieldError>) {
        if let Err(e) = r {
            self.0.push(e);
        }
    }

    fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// An agent id (or sub-agent name) in `field`.
pub fn validate_id(field: &str, id: &str) -> Result<(), FieldError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FieldError::new(field, ID_RULE))
    }
}

/// A tenant name: same charset as agent ids.
pub fn validate_tenant(tenant: &str) -> Result<(), FieldError> {
    validate_id("tenant", tenant)
}

/// Groups: each in the id charset, distinct, at most [`MAX_GROUPS`].
pub fn validate_groups(groups: &[String]) -> Result<(), FieldError> {
    validate_list("groups", groups, MAX_GROUPS, is_valid_id, ID_RULE)
}

/// Scopes: each valid per core `is_valid_scope` (colon-separated segments of
/// `[A-Za-z0-9_.*-]`, at most 128 bytes), distinct, at most [`MAX_SCOPES`].
pub fn validate_scopes(scopes: &[String]) -> Result<(), FieldError> {
    validate_list(
        "scopes",
        scopes,
        MAX_SCOPES,
        is_valid_scope,
        "must be colon-separated segments of [A-Za-z0-9_.*-], at most 128 bytes",
    )
}

/// A token lifetime within [`MIN_TOKEN_TTL_SECS`]..=[`MAX_TOKEN_TTL_SECS`].
pub fn validate_token_ttl(secs: u64) -> Result<(), FieldError> {
    if (MIN_TOKEN_TTL_SECS..=MAX_TOKEN_TTL_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(FieldError::new(
            "token_ttl",
            format!("must be between {MIN_TOKEN_TTL_SECS} and {MAX_TOKEN_TTL_SECS} seconds"),
        ))
    }
}

/// Checks a whole agent record before it is created or stored.
pub fn validate_agent(agent: &Agent) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    errs.push(validate_id("id", &agent.id));
    errs.push(validate_tenant(&agent.tenant));
    if let Some(parent) = &agent.parent {
        errs.push(validate_id("parent", parent));
    }
    errs.push(validate_groups(&agent.groups));
    errs.push(validate_scopes(&agent.allowed_scopes));
    errs.push(validate_token_ttl(agent.token_ttl_secs));
    if let Some(h) = &agent.secret_sha256 {
        if parse_sha256_hex(h).is_none() {
            errs.0.push(FieldError::new(
                "secret_sha256",
                "must be 64 hexadecimal digits",
            ));
        }
    }
    if agent.generation == 0 {
        errs.0
            .push(FieldError::new("generation", "must be at least 1"));
    }
    errs.into_result()
}

fn validate_list(
    field: &str,
    items: &[String],
    max: usize,
    valid: fn(&str) -> bool,
    rule: &str,
) -> Result<(), FieldError> {
    if items.len() > max {
        return Err(FieldError::new(field, format!("at most {max} entries")));
    }
    for (i, item) in items.iter().enumerate() {
        if !valid(item) {
            return Err(FieldError::new(format!("{field}[{i}]"), rule));
        }
        if items[..i].contains(item) {
            return Err(FieldError::new(format!("{field}[{i}]"), "duplicate entry"));
        }
    }
    Ok(())
}

/// A partial update of an agent's configuration (`PUT /v1/agents/{id}/config`,
/// `portcullis agent set`). Absent fields are left unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfigUpdate {
    /// New policy mode.
    pub mode: Option<AgentMode>,
    /// `false` disables the agent (mode `disabled`); `true` re-enables a disabled
    /// agent (mode `active`) and leaves an enabled one as it is.
    pub enabled: Option<bool>,
    /// New risk level.
    pub risk_level: Option<RiskLevel>,
    /// New token lifetime in seconds.
    pub token_ttl: Option<u64>,
    /// New allowed scopes (replaces the list).
    pub scopes: Option<Vec<String>>,
    /// New groups (replaces the list).
    pub groups: Option<Vec<String>>,
    /// Changes to the limit overrides.
    pub limits: Option<LimitsUpdate>,
}

/// Changes to an agent's limit overrides (`"limits": {"rpm": 60, "tpm": null}`). Per key:
/// absent leaves it, a positive integer (a positive number of dollars for `usd_per_day` and
/// `usd_per_month`) sets it, `null` removes the override (the `[limits]` default applies
/// again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsUpdate {
    /// Requests per minute.
    pub rpm: Option<Option<u64>>,
    /// LLM tokens per minute.
    pub tpm: Option<Option<u64>>,
    /// LLM tokens per day.
    pub tokens_per_day: Option<Option<u64>>,
    /// Concurrent in-flight requests.
    pub max_concurrent: Option<Option<u64>>,
    /// MCP tool calls per minute.
    pub mcp_calls_per_minute: Option<Option<u64>>,
    /// LLM spend per day, dollars.
    pub usd_per_day: Option<Option<Usd>>,
    /// LLM spend per month, dollars.
    pub usd_per_month: Option<Option<Usd>>,
}

impl LimitsUpdate {
    fn parse(v: &Value, errs: &mut ValidationErrors) -> Option<Self> {
        let Some(map) = v.as_object() else {
            errs.0
                .push(FieldError::new("limits", "must be a JSON object"));
            return None;
        };
        let mut u = Self::default();
        for (k, v) in map {
            let usd_slot = match k.as_str() {
                "usd_per_day" => Some(&mut u.usd_per_day),
                "usd_per_month" => Some(&mut u.usd_per_month),
                _ => None,
            };
            if let Some(slot) = usd_slot {
                match v {
                    Value::Null => *slot = Some(None),
                    _ => match v
                        .as_f64()
                        .and_then(Usd::from_dollars)
                        .filter(|d| *d > Usd::ZERO)
                    {
                        Some(d) => *slot = Some(Some(d)),
                        None => errs.0.push(FieldError::new(
                            format!("limits.{k}"),
                            "must be a positive number of US dollars (at most 1e9), or null \
                             for the default",
                        )),
                    },
                }
                continue;
            }
            let slot = match k.as_str() {
                "rpm" => &mut u.rpm,
                "tpm" => &mut u.tpm,
                "tokens_per_day" => &mut u.tokens_per_day,
                "max_concurrent" => &mut u.max_concurrent,
                "mcp_calls_per_minute" => &mut u.mcp_calls_per_minute,
                _ => {
                    errs.0
                        .push(FieldError::new(format!("limits.{k}"), "unknown limit"));
                    continue;
                }
            };
            match v {
                Value::Null => *slot = Some(None),
                _ => match v.as_u64().filter(|n| *n >= 1) {
                    Some(n) => *slot = Some(Some(n)),
                    None => errs.0.push(FieldError::new(
                        format!("limits.{k}"),
                        "must be a positive integer, or null for the default",
                    )),
                },
            }
        }
        (u != Self::default()).then_some(u)
    }

    fn apply(&self, limits: &mut AgentLimits) {
        for (change, field) in [
            (self.rpm, &mut limits.rpm),
            (self.tpm, &mut limits.tpm),
            (self.tokens_per_day, &mut limits.tokens_per_day),
            (self.max_concurrent, &mut limits.max_concurrent),
            (self.mcp_calls_per_minute, &mut limits.mcp_calls_per_minute),
        ] {
            if let Some(v) = change {
                *field = v;
            }
        }
        for (change, field) in [
            (self.usd_per_day, &mut limits.usd_per_day),
            (self.usd_per_month, &mut limits.usd_per_month),
        ] {
            if let Some(v) = change {
                *field = v;
            }
        }
    }
}

/// Why an update body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Not a JSON object (400).
    #[error("body must be a JSON object")]
    Malformed,
    /// No field given (400 "No fields to update").
    #[error("No fields to update")]
    NoFields,
    /// Invalid values (422).
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl UpdateError {
    /// The error as answered by the admin API.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::Malformed => ApiError::bad_request("invalid_request", self.to_string()),
            Self::NoFields => ApiError::bad_request("no_fields", self.to_string()),
            Self::Invalid(v) => v.to_api_error(),
        }
    }
}

impl AgentConfigUpdate {
    /// Parses and validates a JSON body. Unknown fields, wrong types and values out of
    /// range are reported per field; `null` counts as absent. `mode` and `risk_level`
    /// are case-insensitive; `token_ttl` is seconds (integer) or a string like `"600s"`,
    /// `"10m"`, `"1h"`.
    pub fn from_json(body: &[u8]) -> Result<Self, UpdateError> {
        let map: Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| UpdateError::Malformed)?;
        let mut u = Self::default();
        let mut errs = ValidationErrors::default();
        for (k, v) in map {
            if v.is_null() {
                continue;
            }
            match k.as_str() {
                "mode" => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("active") => u.mode = Some(AgentMode::Active),
                    Some("shadow") => u.mode = Some(AgentMode::Shadow),
                    Some("disabled") => u.mode = Some(AgentMode::Disabled),
                    _ => errs.0.push(FieldError::new(
                        "mode",
                        "must be active, shadow or disabled",
                    )),
                },
                "enabled" => match v.as_bool() {
                    Some(b) => u.enabled = Some(b),
                    None => errs.0.push(FieldError::new("enabled", "must be a boolean")),
                },
                "risk_level" => match v.as_str().map(str::to_ascii_uppercase).as_deref() {
                    Some("LOW") => u.risk_level = Some(RiskLevel::Low),
                    Some("MEDIUM") => u.risk_level = Some(RiskLevel::Medium),
                    Some("HIGH") => u.risk_level = Some(RiskLevel::High),
                    Some("CRITICAL") => u.risk_level = Some(RiskLevel::Critical),
                    _ => errs.0.push(FieldError::new(
                        "risk_level",
                        "must be LOW, MEDIUM, HIGH or CRITICAL",
                    )),
                },
                "token_ttl" => match parse_ttl(&v) {
                    Some(secs) => match validate_token_ttl(secs) {
                        Ok(()) => u.token_ttl = Some(secs),
                        Err(e) => errs.0.push(e),
                    },
                    None => errs.0.push(FieldError::new(
                        "token_ttl",
                        "must be seconds or a duration like \"600s\", \"10m\", \"1h\"",
                    )),
                },
                "scopes" => match string_list(&v) {
                    Some(list) => match validate_scopes(&list) {
                        Ok(()) => u.scopes = Some(list),
                        Err(e) => errs.0.push(e),
                    },
                    None => errs
                        .0
                        .push(FieldError::new("scopes", "must be an array of strings")),
                },
                "groups" => match string_list(&v) {
                    Some(list) => match validate_groups(&list) {
                        Ok(()) => u.groups = Some(list),
                        Err(e) => errs.0.push(e),
                    },
                    None => errs
                        .0
                        .push(FieldError::new("groups", "must be an array of strings")),
                },
                "limits" => u.limits = LimitsUpdate::parse(&v, &mut errs),
                _ => errs.0.push(FieldError::new(k, "unknown field")),
            }
        }
        if u.mode.is_some() && u.enabled.is_some() {
            errs.0.push(FieldError::new(
                "enabled",
                "give either mode or enabled, not both",
            ));
        }
        errs.into_result().map_err(UpdateError::Invalid)?;
        if u.is_empty() {
            return Err(UpdateError::NoFields);
        }
        Ok(u)
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the update to `agent` and stamps `updated_at`.
    pub fn apply(&self, agent: &mut Agent, now_unix: u64) {
        if let Some(m) = self.mode {
            agent.mode = m;
        }
        match self.enabled {
            Some(false) => agent.mode = AgentMode::Disabled,
            Some(true) if agent.mode == AgentMode::Disabled => agent.mode = AgentMode::Active,
            _ => {}
        }
        if let Some(r) = self.risk_level {
            agent.risk_level = r;
        }
        if let Some(t) = self.token_ttl {
            agent.token_ttl_secs = t;
        }
        if let Some(s) = &self.scopes {
            agent.allowed_scopes.clone_from(s);
        }
        if let Some(g) = &self.groups {
            agent.groups.clone_from(g);
        }
        if let Some(l) = &self.limits {
            l.apply(&mut agent.limits);
        }
        agent.updated_at = now_unix;
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_owned))
        .collect()
}

fn parse_ttl(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests;
