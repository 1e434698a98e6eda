//! `[[credentials]]`: provider credentials the gateway injects into allowed requests.

use crate::ConfigError;
use portcullis_core::is_valid_id;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[[credentials]]`: a provider credential held by the gateway and added to requests that
/// policy allowed, so agents never hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// `^[a-z][a-z0-9_]{1,63}$`; appears in policy input, audit and metrics.
    pub name: String,
    /// Host globs it is injected for (`api.openai.com`, `*.openai.azure.com`). These hosts are
    /// intercepted automatically.
    pub hosts: Vec<String>,
    /// Header to set.
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// Header value; `{secret}` is replaced by the secret.
    #[serde(default = "default_credential_format")]
    pub format: String,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the secret (surrounding whitespace ignored), re-read when it changes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Agents that may use it.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Groups whose agents may use it.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tenants whose agents may use it.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `replace` (drop what the agent sent in `header`) or `if_absent`.
    #[serde(default)]
    pub mode: CredentialMode,
}

/// How an injected credential meets one the agent sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    /// Drop the agent's value of the header and set the real one.
    #[default]
    Replace,
    /// Set the header only when the agent sent none.
    IfAbsent,
}

fn default_credential_header() -> String {
    "authorization".to_owned()
}

fn default_credential_format() -> String {
    "Bearer {secret}".to_owned()
}

/// Headers a credential may not set: framing, routing, hop-by-hop and the gateway's own.
const FORBIDDEN_CREDENTIAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

impl CredentialConfig {
    /// Checks the name and the binding (hosts listed, header, format, who), not the secret
    /// source: also what the admin API accepts. The host globs' syntax belongs to the TLS
    /// host matcher and is checked where that is built. Keys are named under `prefix`
    /// (`credentials[0]`), or bare when `prefix` is empty.
    pub fn validate_binding(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |f: &str| {
            if prefix.is_empty() {
                f.to_owned()
            } else {
                format!("{prefix}.{f}")
            }
        };
        if !is_valid_id(&self.name) {
            return Err(ConfigError::new(
                key("name"),
                "must match ^[a-z][a-z0-9_]{1,63}$",
            ));
        }
        if self.hosts.is_empty() {
            return Err(ConfigError::new(
                key("hosts"),
                "must list at least one host glob",
            ));
        }
        let header = self.header.as_str();
        let token = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !token {
            return Err(ConfigError::new(
                key("header"),
                "must be a lower-case header name (letters, digits, '-', '_')",
            ));
        }
        if FORBIDDEN_CREDENTIAL_HEADERS.contains(&header) || header.starts_with("x-portcullis-") {
            return Err(ConfigError::new(
                key("header"),
                format!("`{header}` cannot carry a credential"),
            ));
        }
        if self.format.matches("{secret}").count() != 1 {
            return Err(ConfigError::new(
                key("format"),
                "must contain {secret} exactly once",
            ));
        }
        if !self
            .format
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
        {
            return Err(ConfigError::new(key("format"), "must be printable ASCII"));
        }
        for (field, list) in [
            ("agents", &self.agents),
            ("groups", &self.groups),
            ("tenants", &self.tenants),
        ] {
            if let Some(bad) = list.iter().find(|v| !is_valid_id(v)) {
                return Err(ConfigError::new(key(field), format!("invalid id `{bad}`")));
            }
        }
        Ok(())
    }

    /// Checks the secret source (`env` or `file`, exactly one) of a config-file credential.
    pub(crate) fn validate_source(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = format!("{prefix}.env");
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(ConfigError::new(key, "set either env or file, not both")),
            (None, None) => Err(ConfigError::new(key, "a credential needs env or file")),
            (Some(e), None) if e.is_empty() => Err(ConfigError::new(key, "must name a variable")),
            _ => Ok(()),
        }
    }
}
