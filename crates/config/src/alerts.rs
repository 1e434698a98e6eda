//! `[alerts]`: budget thresholds and the webhooks they are sent to.

use crate::{duration, ConfigError};
use portcullis_core::is_valid_id;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Most thresholds in `alerts.thresholds`.
pub const MAX_THRESHOLDS: usize = 16;

/// Largest threshold: ten times the budget.
pub const MAX_THRESHOLD: f64 = 10.0;

/// Most webhooks in `[[alerts.webhooks]]`.
pub const MAX_WEBHOOKS: usize = 16;

/// Most retries of one delivery.
pub const MAX_RETRIES: u32 = 10;

/// `[alerts]`: an alert fires once per threshold per budget period, to every webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Fractions of a budget that fire an alert when first reached in a period (each in
    /// (0, 10]; sorted and deduplicated when mapped).
    pub thresholds: Vec<f64>,
    /// Alerts waiting to be sent, and per webhook: beyond this they are dropped and counted.
    pub queue: usize,
    /// Where alerts are sent; no webhook means alerts are off.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            thresholds: vec![0.5, 0.8, 1.0],
            queue: 1024,
            webhooks: Vec::new(),
        }
    }
}

/// The body a webhook receives (`alerts.webhooks[].format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert as a JSON object (`"type": "budget_threshold"`, ...).
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": "..."}`.
    Slack,
}

/// One `[[alerts.webhooks]]` entry.
///
/// ```toml
/// [[alerts.webhooks]]
/// name = "ops"                          # metric label and log field (the URL is never shown)
/// url = "https://hooks.example.com/portcullis"
/// format = "json"                       # "json" | "slack"
/// secret_env = "PORTCULLIS_ALERTS_SECRET"   # or secret_file = "/run/secrets/alerts"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `^[a-z][a-z0-9_]{1,63}$`: the metric label and log field (a URL may hold a token).
    pub name: String,
    /// `http://` or `https://` URL the alert is POSTed to.
    pub url: String,
    /// Body format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding the signing secret (read at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// File holding the signing secret (read at start; surrounding whitespace ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Longest wait for one attempt (connect, send, response head).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt (connection error, timeout, 408, 429, 5xx).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry delay; doubled per retry (at most 30 s), with full jitter.
    #[serde(default = "default_retry_backoff", with = "duration")]
    pub retry_backoff: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_retries() -> u32 {
    3
}

fn default_retry_backoff() -> Duration {
    Duration::from_millis(500)
}

impl AlertsConfig {
    /// The thresholds sorted and deduplicated (call after [`AlertsConfig::validate`]).
    pub fn sorted_thresholds(&self) -> Vec<f64> {
        let mut t = self.thresholds.clone();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    }

    /// Checks thresholds, the queue and every webhook's name, URL, secret source and bounds.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.thresholds.is_empty() || self.thresholds.len() > MAX_THRESHOLDS {
            return Err(ConfigError::new(
                "alerts.thresholds",
                format!("must list between 1 and {MAX_THRESHOLDS} fractions"),
            ));
        }
        if let Some(bad) = self
            .thresholds
            .iter()
            .find(|t| !(t.is_finite() && **t > 0.0 && **t <= MAX_THRESHOLD))
        {
            return Err(ConfigError::new(
                "alerts.thresholds",
                format!("{bad} is not a fraction in (0, {MAX_THRESHOLD}] (0.8 = 80% of a budget)"),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(ConfigError::new(
                "alerts.queue",
                "must be between 1 and 1000000",
            ));
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(ConfigError::new(
                "alerts.webhooks",
                format!("at most {MAX_WEBHOOKS} webhooks"),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            w.validate(&format!("alerts.webhooks[{i}]"))?;
            if !names.insert(w.name.as_str()) {
                return Err(ConfigError::new(
                    format!("alerts.webhooks[{i}].name"),
                    "is used twice",
                ));
            }
        }
        Ok(())
    }
}

impl WebhookConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |f: &str| format!("{prefix}.{f}");
        if !is_valid_id(&self.name) {
            return Err(ConfigError::new(
                key("name"),
                "must match ^[a-z][a-z0-9_]{1,63}$",
            ));
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        match host {
            None => {
                return Err(ConfigError::new(
                    key("url"),
                    "must be an http:// or https:// URL",
                ))
            }
            Some(h) if h.is_empty() || h.contains('@') => {
                return Err(ConfigError::new(
                    key("url"),
                    "must name a host (and no user:password@)",
                ))
            }
            Some(_) => {}
        }
        if self.url.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                key("url"),
                "must be printable ASCII without spaces",
            ));
        }
        match (&self.secret_env, &self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("secret_env"),
                    "set either secret_env or secret_file, not both",
                ))
            }
            (None, None) if self.format == WebhookFormat::Json => {
                return Err(ConfigError::new(
                    key("secret_env"),
                    "a json webhook needs a signing secret: secret_env or secret_file",
                ))
            }
            (Some(e), None) if e.is_empty() => {
                return Err(ConfigError::new(key("secret_env"), "must name a variable"))
            }
            _ => {}
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(300) {
            return Err(ConfigError::new(
                key("timeout"),
                "must be between 1ms and 300s",
            ));
        }
        if self.max_retries > MAX_RETRIES {
            return Err(ConfigError::new(
                key("max_retries"),
                format!("must be at most {MAX_RETRIES}"),
            ));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > Duration::from_secs(60) {
            return Err(ConfigError::new(
                key("retry_backoff"),
                "must be between 1ms and 60s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn doc(alerts: &str, hook: &str) -> String {
        format!(
            "[alerts]\n{alerts}\n[[alerts.webhooks]]\nname = \"ops\"\n\
             url = \"https://hooks.example.com/x\"\n{hook}\n"
        )
    }

    fn err(src: &str) -> (String, String) {
        let e = Config::from_toml(src)
            .and_then(|c| c.validate())
            .expect_err(src);
        (e.key, e.reason)
    }

    #[test]
    fn defaults_and_a_full_webhook() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.alerts.thresholds, vec![0.5, 0.8, 1.0]);
        assert!(c.alerts.webhooks.is_empty());
        let c = Config::from_toml(&doc(
            "thresholds = [1.0, 0.5, 0.5, 2]",
            "format = \"slack\"\nsecret_file = \"s.key\"\ntimeout = \"2s\"\n\
             max_retries = 5\nretry_backoff = \"100ms\"",
        ))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.alerts.sorted_thresholds(), vec![0.5, 1.0, 2.0]);
        let w = &c.alerts.webhooks[0];
        assert_eq!(w.format, super::WebhookFormat::Slack);
        assert_eq!(
            (
                w.timeout.as_secs(),
                w.max_retries,
                w.retry_backoff.as_millis()
            ),
            (2, 5, 100)
        );
        // A slack webhook may go unsigned (its URL is the secret).
        let c = Config::from_toml(&doc("", "format = \"slack\"")).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let signed = "secret_env = \"S\"";
        for (alerts, hook, key) in [
            ("thresholds = []", signed, "alerts.thresholds"),
            ("thresholds = [0.0]", signed, "alerts.thresholds"),
            ("thresholds = [-0.5]", signed, "alerts.thresholds"),
            ("thresholds = [10.5]", signed, "alerts.thresholds"),
            ("thresholds = [nan]", signed, "alerts.thresholds"),
            ("thresholds = [inf]", signed, "alerts.thresholds"),
            ("queue = 0", signed, "alerts.queue"),
            ("", "", "alerts.webhooks[0].secret_env"),
            (
                "",
                "secret_env = \"S\"\nsecret_file = \"f\"",
                "alerts.webhooks[0].secret_env",
            ),
            ("", "secret_env = \"\"", "alerts.webhooks[0].secret_env"),
            (
                "",
                "secret_env = \"S\"\ntimeout = \"0s\"",
                "alerts.webhooks[0].timeout",
            ),
            (
                "",
                "secret_env = \"S\"\nmax_retries = 11",
                "alerts.webhooks[0].max_retries",
            ),
            (
                "",
                "secret_env = \"S\"\nretry_backoff = \"0s\"",
                "alerts.webhooks[0].retry_backoff",
            ),
        ] {
            assert_eq!(err(&doc(alerts, hook)).0, key, "{alerts} / {hook}");
        }
        for url in [
            "ftp://x/y",
            "https://",
            "http:///path",
            "https://user:pw@host/",
            "https://host/a b",
            "hooks.example.com",
        ] {
            let src = format!(
                "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"{url}\"\nsecret_env = \"S\"\n"
            );
            assert_eq!(err(&src).0, "alerts.webhooks[0].url", "{url}");
        }
        let src =
            "[[alerts.webhooks]]\nname = \"Ops!\"\nurl = \"https://h/\"\nsecret_env = \"S\"\n";
        assert_eq!(err(src).0, "alerts.webhooks[0].name");
        let two = "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://h/\"\nsecret_env = \"S\"\n";
        assert_eq!(
            err(&format!("{two}{two}")).0,
            "alerts.webhooks[1].name",
            "a name used twice"
        );
        let (key, _) =
            err("[[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://h/\"\nsecret = \"x\"\n");
        assert!(key.starts_with("alerts.webhooks"), "{key}");
    }
}
