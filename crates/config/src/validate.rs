//! The checks types alone cannot make, one function per section, each naming the key.
//!
//! Only what this crate can decide on its own lives here; checks that need a domain
//! crate's logic (host globs, provider entries, limit settings, interception rules) run
//! where the config is mapped onto those crates' settings.

use crate::{
    AgentConfig, Config, ConfigError, CredentialConfig, IdentityConfig, MAX_HEADER_BYTES_LIMIT,
};
use portcullis_core::{is_valid_id, is_valid_scope};
use std::collections::HashSet;
use std::time::Duration;

const ID_PATTERN: &str = "must match ^[a-z][a-z0-9_]{1,63}$";

impl Config {
    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_proxy()?;
        let url = &self.store.url;
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(ConfigError::new(
                "store.url",
                "must be sqlite://PATH, sqlite::memory: or postgres://...",
            ));
        }
        if !(1..=1000).contains(&self.store.max_connections) {
            return Err(ConfigError::new(
                "store.max_connections",
                "must be between 1 and 1000",
            ));
        }
        validate_identity(&self.identity)?;
        self.validate_audit()?;
        self.validate_sidecar()?;
        for (i, b) in self.policy.bindings.iter().enumerate() {
            if b.policy.is_empty() {
                return Err(ConfigError::new(
                    format!("policy.bindings[{i}].policy"),
                    "must name a policy",
                ));
            }
        }
        self.validate_bundle()?;
        validate_agents(&self.agents)?;
        validate_credentials(&self.credentials)?;
        self.console.validate()?;
        self.mcp.validate()?;
        self.alerts.validate()?;
        self.telemetry.validate()?;
        self.llm.validate()?;
        if self.tls.ca_cert.is_some() != self.tls.ca_key.is_some() {
            return Err(ConfigError::new(
                if self.tls.ca_cert.is_some() {
                    "tls.ca_key"
                } else {
                    "tls.ca_cert"
                },
                "tls.ca_cert and tls.ca_key must be set together",
            ));
        }
        if self.proxy.listen == self.admin.listen && self.proxy.listen.port() != 0 {
            return Err(ConfigError::new(
                "admin.listen",
                "must differ from proxy.listen (agents must never reach the admin API)",
            ));
        }
        Ok(())
    }

    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let p = &self.proxy;
        if p.allowed_ports.is_empty() {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "must list at least one port",
            ));
        }
        if p.allowed_ports.contains(&0) {
            return Err(ConfigError::new(
                "proxy.allowed_ports",
                "port 0 is not a port",
            ));
        }
        if !(1024..=MAX_HEADER_BYTES_LIMIT).contains(&p.max_header_bytes) {
            return Err(ConfigError::new(
                "proxy.max_header_bytes",
                format!("must be between 1024 and {MAX_HEADER_BYTES_LIMIT}"),
            ));
        }
        if !(1..=1000).contains(&p.max_headers) {
            return Err(ConfigError::new(
                "proxy.max_headers",
                "must be between 1 and 1000",
            ));
        }
        if p.max_connections == 0 {
            return Err(ConfigError::new(
                "proxy.max_connections",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("proxy.header_read_timeout", p.header_read_timeout),
            ("proxy.idle_timeout", p.idle_timeout),
            ("proxy.connect_timeout", p.connect_timeout),
            ("proxy.body_read_timeout", p.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        for token in &p.allowed_upgrades {
            let is_token = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
            if !is_token {
                return Err(ConfigError::new(
                    "proxy.allowed_upgrades",
                    format!("`{token}` is not an HTTP upgrade token"),
                ));
            }
        }
        Ok(())
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        if !(1..=10_000_000).contains(&self.audit.queue) {
            return Err(ConfigError::new(
                "audit.queue",
                "must be between 1 and 10000000",
            ));
        }
        if !(1..=100_000).contains(&self.audit.batch_max) {
            return Err(ConfigError::new(
                "audit.batch_max",
                "must be between 1 and 100000",
            ));
        }
        if let Some(r) = self.audit.retention {
            if r < std::time::Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "audit.retention",
                    "must be at least 1h (e.g. \"30d\"); leave it unset to keep records",
                ));
            }
            if r > std::time::Duration::from_secs(100 * 365 * 86_400) {
                return Err(ConfigError::new(
                    "audit.retention",
                    "must be at most 100 years",
                ));
            }
        }
        if self.audit.spool_max_bytes > 0 && self.audit.spool_path.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "audit.spool_path",
                "must name a file (or set audit.spool_max_bytes = 0 to disable the spool)",
            ));
        }
        Ok(())
    }

    fn validate_bundle(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        let Some(url) = &p.bundle_url else {
            return Ok(());
        };
        if p.dir.is_some() {
            return Err(ConfigError::new(
                "policy.bundle_url",
                "policy.dir and policy.bundle_url are exclusive: policies come from one source",
            ));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "policy.bundle_url",
                "must be http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
            ));
        }
        if p.bundle_poll.is_zero() {
            return Err(ConfigError::new(
                "policy.bundle_poll",
                "must be greater than zero",
            ));
        }
        if p.bundle_long_poll > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "policy.bundle_long_poll",
                "must be at most 10m",
            ));
        }
        if p.bundle_max_bytes == 0 || p.bundle_max_bytes > 1 << 30 {
            return Err(ConfigError::new(
                "policy.bundle_max_bytes",
                "must be between 1 and 1073741824",
            ));
        }
        Ok(())
    }

    fn validate_sidecar(&self) -> Result<(), ConfigError> {
        let Some(a) = &self.sidecar.agent else {
            return Ok(());
        };
        if !is_valid_id(a) {
            return Err(ConfigError::new("sidecar.agent", ID_PATTERN));
        }
        if self.proxy.allow_unauthenticated {
            return Err(ConfigError::new(
                "sidecar.agent",
                "cannot be combined with proxy.allow_unauthenticated",
            ));
        }
        Ok(())
    }
}

fn validate_identity(identity: &IdentityConfig) -> Result<(), ConfigError> {
    if identity.issuer.is_empty() {
        return Err(ConfigError::new("identity.issuer", "must not be empty"));
    }
    let ttl = identity.token_ttl.as_secs();
    if !(60..=86_400).contains(&ttl) {
        return Err(ConfigError::new(
            "identity.token_ttl",
            "must be between 60s and 24h",
        ));
    }
    if identity.auth_failure_burst > 10_000 {
        return Err(ConfigError::new(
            "identity.auth_failure_burst",
            "must be between 0 (off) and 10000",
        ));
    }
    if !(1..=6_000).contains(&identity.auth_failure_per_minute) {
        return Err(ConfigError::new(
            "identity.auth_failure_per_minute",
            "must be between 1 and 6000",
        ));
    }
    Ok(())
}

fn validate_agents(agents: &[AgentConfig]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, a) in agents.iter().enumerate() {
        let key = |f: &str| format!("agents[{i}].{f}");
        if !is_valid_id(&a.id) {
            return Err(ConfigError::new(key("id"), ID_PATTERN));
        }
        if !seen.insert(a.id.as_str()) {
            return Err(ConfigError::new(
                key("id"),
                format!("`{}` is declared twice", a.id),
            ));
        }
        validate_agent(a, &key)?;
    }
    Ok(())
}

fn validate_agent(a: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if !is_valid_id(&a.tenant) {
        return Err(ConfigError::new(key("tenant"), ID_PATTERN));
    }
    if let Some(g) = a.groups.iter().find(|g| !is_valid_id(g)) {
        return Err(ConfigError::new(
            key("groups"),
            format!("invalid group `{g}`"),
        ));
    }
    if let Some(s) = a.allowed_scopes.iter().find(|s| !is_valid_scope(s)) {
        return Err(ConfigError::new(
            key("allowed_scopes"),
            format!("invalid scope `{s}`"),
        ));
    }
    match (&a.secret_sha256, &a.secret_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("secret_sha256"),
                "set either secret_sha256 or secret_env, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                key("secret_sha256"),
                "an agent needs secret_sha256 or secret_env",
            ))
        }
        (Some(h), None)
            if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            return Err(ConfigError::new(
                key("secret_sha256"),
                "must be 64 lower-case hex characters",
            ));
        }
        (None, Some(e)) if e.is_empty() => {
            return Err(ConfigError::new(key("secret_env"), "must name a variable"))
        }
        _ => {}
    }
    if let Some(t) = a.token_ttl {
        if !(60..=86_400).contains(&t.as_secs()) {
            return Err(ConfigError::new(
                key("token_ttl"),
                "must be between 60s and 24h",
            ));
        }
    }
    if let Some((k, _)) = a.limits.entries().into_iter().find(|(_, v)| *v == Some(0)) {
        return Err(ConfigError::new(
            key(&format!("limits.{k}")),
            "must be at least 1 (remove the key for the [limits] default)",
        ));
    }
    let zero = Some(portcullis_core::Usd::ZERO);
    if let Some((k, _)) = a.limits.usd_entries().into_iter().find(|(_, v)| *v == zero) {
        return Err(ConfigError::new(
            key(&format!("limits.{k}")),
            "must be more than zero (remove the key for the [limits] default)",
        ));
    }
    Ok(())
}

fn validate_credentials(credentials: &[CredentialConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, c) in credentials.iter().enumerate() {
        let prefix = format!("credentials[{i}]");
        c.validate_binding(&prefix)?;
        c.validate_source(&prefix)?;
        if !names.insert(c.name.as_str()) {
            return Err(ConfigError::new(
                format!("{prefix}.name"),
                format!("`{}` is declared twice", c.name),
            ));
        }
    }
    Ok(())
}
