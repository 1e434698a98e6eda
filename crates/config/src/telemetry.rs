//! `[telemetry]`: OpenTelemetry traces and GenAI metrics over OTLP/HTTP.

use crate::duration;
use crate::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[telemetry]`. Without `otlp_endpoint` telemetry is off and costs nothing per request.
///
/// Spans and metrics are built from the audit record, which holds no prompt or completion
/// content: content is never exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL, e.g. `http://collector:4318`: spans are posted to
    /// `{endpoint}/v1/traces`, metrics to `{endpoint}/v1/metrics` (protobuf). Unset: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// More resource attributes (`deployment.environment = "prod"`, ...).
    pub resource_attributes: BTreeMap<String, String>,
    /// Send `traceparent` upstream with the gateway's span as parent. Off: the request goes
    /// upstream exactly as the agent sent it (its own `traceparent`, if any, included).
    pub propagate: bool,
    /// Most spans waiting for export; more are dropped (counted), never waited for.
    pub queue_size: usize,
    /// Most spans per export request.
    pub batch_size: usize,
    /// Longest wait before pending spans are sent; also the metrics export interval.
    #[serde(with = "duration")]
    pub export_interval: Duration,
    /// Longest wait for the collector to answer one export request.
    #[serde(with = "duration")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "portcullis".to_owned(),
            resource_attributes: BTreeMap::new(),
            propagate: false,
            queue_size: 8192,
            batch_size: 512,
            export_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl TelemetryConfig {
    /// Whether telemetry is on (`otlp_endpoint` set).
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            validate_endpoint(url)?;
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        for k in self.resource_attributes.keys() {
            if k.trim().is_empty() {
                return Err(ConfigError::new(
                    "telemetry.resource_attributes",
                    "keys must not be empty",
                ));
            }
        }
        for (k, v, min, max) in [
            ("telemetry.queue_size", self.queue_size, 1, 1_000_000),
            ("telemetry.batch_size", self.batch_size, 1, 100_000),
        ] {
            if !(min..=max).contains(&v) {
                return Err(ConfigError::new(
                    k,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        if self.batch_size > self.queue_size {
            return Err(ConfigError::new(
                "telemetry.batch_size",
                "must not exceed telemetry.queue_size",
            ));
        }
        for (k, v) in [
            ("telemetry.export_interval", self.export_interval),
            ("telemetry.export_timeout", self.export_timeout),
        ] {
            if v < Duration::from_millis(10) || v > Duration::from_secs(600) {
                return Err(ConfigError::new(k, "must be between 10ms and 10m"));
            }
        }
        Ok(())
    }
}

/// `http://host[:port][/path]`: no credentials, query or fragment. `https` is refused with
/// the reason (the exporter speaks plain HTTP to a collector next to the gateway).
fn validate_endpoint(url: &str) -> Result<(), ConfigError> {
    const KEY: &str = "telemetry.otlp_endpoint";
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(ConfigError::new(
            KEY,
            "https is not supported: point it at a collector next to the gateway over \
             http:// (e.g. http://127.0.0.1:4318), which forwards over TLS",
        ));
    } else {
        return Err(ConfigError::new(
            KEY,
            "must be an http:// URL such as http://collector:4318",
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ConfigError::new(KEY, "must name a host"));
    }
    if authority.contains('@') {
        return Err(ConfigError::new(KEY, "must not carry credentials"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            KEY,
            "must carry no query, fragment or whitespace",
        ));
    }
    let port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, p)) => Some(p.strip_prefix(':').unwrap_or(p)),
            None => return Err(ConfigError::new(KEY, "has an unclosed IPv6 literal")),
        },
        None => authority.rsplit_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(ConfigError::new(KEY, "has an invalid port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(url: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(url.to_owned()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let d = TelemetryConfig::default();
        assert!(!d.enabled());
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn accepts_http_endpoints() {
        for ok in [
            "http://collector:4318",
            "http://127.0.0.1:4318/",
            "http://[::1]:4318",
            "http://otel.example.com/base",
        ] {
            assert_eq!(with(ok).validate(), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_endpoints_naming_the_key() {
        for (bad, why) in [
            ("collector:4318", "must be an http:// URL"),
            ("grpc://collector:4317", "must be an http:// URL"),
            ("https://collector:4318", "https is not supported"),
            ("http://", "must name a host"),
            ("http:///v1", "must name a host"),
            ("http://user:pw@collector:4318", "credentials"),
            ("http://collector:4318?x=1", "no query"),
            ("http://collector:99999", "invalid port"),
            ("http://collector:0", "invalid port"),
            ("http://collector:http", "invalid port"),
        ] {
            let e = with(bad).validate().unwrap_err();
            assert_eq!(e.key, "telemetry.otlp_endpoint", "{bad}");
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
        }
    }

    #[test]
    fn refuses_bad_sizes_and_durations() {
        let cases = [
            (
                TelemetryConfig {
                    queue_size: 0,
                    ..TelemetryConfig::default()
                },
                "telemetry.queue_size",
            ),
            (
                TelemetryConfig {
                    queue_size: 10,
                    batch_size: 11,
                    ..TelemetryConfig::default()
                },
                "telemetry.batch_size",
            ),
            (
                TelemetryConfig {
                    export_interval: Duration::ZERO,
                    ..TelemetryConfig::default()
                },
                "telemetry.export_interval",
            ),
            (
                TelemetryConfig {
                    service_name: " ".into(),
                    ..TelemetryConfig::default()
                },
                "telemetry.service_name",
            ),
        ];
        for (cfg, key) in cases {
            assert_eq!(cfg.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn there_is_no_switch_to_export_content() {
        let e = toml::from_str::<TelemetryConfig>("export_content = true").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `export_content`"),
            "{e}"
        );
    }
}
