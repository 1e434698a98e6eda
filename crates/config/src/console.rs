//! `[console]`: the operator console on the admin listener (`/ui/`).

use crate::duration;
use crate::ConfigError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[console]`: the operator console served by the admin listener at `/ui/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console (and redirect `/` to `/ui/`).
    pub enabled: bool,
    /// Longest life of a session, however active.
    #[serde(with = "duration")]
    pub session_ttl: Duration,
    /// A session unused this long ends.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Mark the session cookie `Secure`. The admin listener speaks plain HTTP (put it
    /// behind a TLS-terminating proxy to reach it over a network); set this when operators
    /// reach the console over HTTPS, so the browser never sends the cookie in clear.
    pub secure_cookie: bool,
    /// Seconds between live-update polls of the Requests page (1-60).
    pub live_interval_secs: u64,
    /// Sign-in by headers from a trusted authenticating proxy (oauth2-proxy style). Off
    /// unless `sources` is set.
    pub trusted_header: TrustedHeaderConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            secure_cookie: false,
            live_interval_secs: 5,
            trusted_header: TrustedHeaderConfig::default(),
        }
    }
}

/// `[console.trusted_header]`: who an authenticating proxy says the operator is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedHeaderConfig {
    /// Source addresses (CIDRs) of the proxy. Headers from any other address are ignored;
    /// empty turns header sign-in off.
    pub sources: Vec<IpNet>,
    /// Header naming the user (e.g. `X-Forwarded-User`).
    pub user_header: String,
    /// Header with the user's e-mail, shown instead of the user when present.
    pub email_header: String,
    /// Header with the user's groups, comma separated (e.g. `X-Forwarded-Groups`).
    pub groups_header: String,
    /// Group → tenant and role, first match wins. A user in no listed group is refused.
    pub roles: Vec<GroupRole>,
}

impl Default for TrustedHeaderConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            user_header: "X-Forwarded-User".to_owned(),
            email_header: "X-Forwarded-Email".to_owned(),
            groups_header: "X-Forwarded-Groups".to_owned(),
            roles: Vec::new(),
        }
    }
}

/// `[[console.trusted_header.roles]]`: members of `group` act as `role` in `tenant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    /// Group name as the proxy sends it.
    pub group: String,
    /// Tenant its members see.
    pub tenant: String,
    /// `admin` or `viewer`.
    pub role: String,
}

impl ConsoleConfig {
    /// Checks ranges and the trusted-header mapping.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = Duration::from_secs(60);
        if self.session_ttl < min {
            return Err(ConfigError::new(
                "console.session_ttl",
                "must be at least 60s",
            ));
        }
        if self.idle_timeout < min || self.idle_timeout > self.session_ttl {
            return Err(ConfigError::new(
                "console.idle_timeout",
                "must be at least 60s and at most console.session_ttl",
            ));
        }
        if !(1..=60).contains(&self.live_interval_secs) {
            return Err(ConfigError::new(
                "console.live_interval_secs",
                "must be between 1 and 60",
            ));
        }
        let t = &self.trusted_header;
        if t.sources.is_empty() {
            return Ok(());
        }
        for (key, name) in [
            ("user_header", &t.user_header),
            ("email_header", &t.email_header),
            ("groups_header", &t.groups_header),
        ] {
            if http_token(name).is_none() {
                return Err(ConfigError::new(
                    format!("console.trusted_header.{key}"),
                    "must be a header name",
                ));
            }
        }
        if t.roles.is_empty() {
            return Err(ConfigError::new(
                "console.trusted_header.roles",
                "must map at least one group to a tenant and role",
            ));
        }
        for (i, r) in t.roles.iter().enumerate() {
            if r.group.trim().is_empty() || r.tenant.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("console.trusted_header.roles[{i}]"),
                    "group and tenant must not be empty",
                ));
            }
            if r.role != "admin" && r.role != "viewer" {
                return Err(ConfigError::new(
                    format!("console.trusted_header.roles[{i}].role"),
                    "must be admin or viewer",
                ));
            }
        }
        Ok(())
    }
}

/// `name` when it is a valid HTTP header name (RFC 9110 token).
fn http_token(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn defaults_and_header_mapping() {
        let cfg = Config::from_toml("").expect("parse");
        assert!(cfg.console.enabled);
        assert!(!cfg.console.secure_cookie);
        assert!(cfg.validate().is_ok());
        let doc = r#"
[console]
secure_cookie = true
session_ttl = "8h"
idle_timeout = "20m"
[console.trusted_header]
sources = ["10.0.0.0/8"]
[[console.trusted_header.roles]]
group = "platform"
tenant = "default"
role = "admin"
"#;
        let cfg = Config::from_toml(doc).expect("parse");
        assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
        assert_eq!(cfg.console.trusted_header.roles.len(), 1);
    }

    #[test]
    fn refuses_bad_values() {
        for (doc, key) in [
            ("[console]\nsession_ttl = \"10s\"\n", "console.session_ttl"),
            ("[console]\nidle_timeout = \"24h\"\n", "console.idle_timeout"),
            ("[console]\nlive_interval_secs = 0\n", "console.live_interval_secs"),
            (
                "[console.trusted_header]\nsources = [\"127.0.0.1/32\"]\n",
                "console.trusted_header.roles",
            ),
            (
                "[console.trusted_header]\nsources = [\"127.0.0.1/32\"]\nuser_header = \"a b\"\n[[console.trusted_header.roles]]\ngroup = \"g\"\ntenant = \"t\"\nrole = \"admin\"\n",
                "console.trusted_header.user_header",
            ),
            (
                "[console.trusted_header]\nsources = [\"127.0.0.1/32\"]\n[[console.trusted_header.roles]]\ngroup = \"g\"\ntenant = \"t\"\nrole = \"root\"\n",
                "console.trusted_header.roles[0].role",
            ),
        ] {
            let cfg = Config::from_toml(doc).expect("parse");
            let err = cfg.validate().expect_err(doc);
            assert_eq!(err.key, key, "{doc}");
        }
        assert!(Config::from_toml("[console]\nbogus = 1\n").is_err());
    }
}
