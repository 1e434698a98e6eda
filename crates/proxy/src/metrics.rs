//! Data-plane metrics, registered once; label handles are resolved per request
//! only for the bounded label sets.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Metrics the proxy updates.
#[derive(Clone)]
pub struct ProxyMetrics {
    /// `portcullis_requests_total{agent,verdict,provider}`.
    pub requests: IntCounterVec,
    /// `portcullis_request_duration_seconds{provider}`.
    pub duration: HistogramVec,
    /// `portcullis_connections_active`.
    pub connections_active: IntGauge,
    /// `portcullis_connections_rejected_total{reason}`.
    pub connections_rejected: IntCounterVec,
    /// `portcullis_tunnels_active{intercepted}`.
    pub tunnels_active: IntGaugeVec,
    /// `portcullis_tunnel_bytes_total{direction}`.
    pub tunnel_bytes: IntCounterVec,
    /// `portcullis_upstream_errors_total{kind}`.
    pub upstream_errors: IntCounterVec,
    /// `portcullis_requests_refused_total{code}`: refused before policy (malformed, SSRF, port).
    pub refused: IntCounterVec,
    /// `portcullis_tls_handshake_failures_total{side}`: `client` (rejected our
    /// certificate) or `upstream` (its certificate did not verify).
    pub tls_handshake_failures: IntCounterVec,
    /// `portcullis_llm_tokens_total{agent,provider,model,type}`.
    pub llm_tokens: IntCounterVec,
    /// `portcullis_rate_limited_total{agent,limit}`.
    pub rate_limited: IntCounterVec,
    /// `portcullis_credential_injections_total{credential}`.
    pub credential_injections: IntCounterVec,
    /// `portcullis_mcp_calls_total{agent,server,tool,verdict}`: MCP tool calls.
    pub mcp_calls: IntCounterVec,
    models: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Distinct model labels kept before further models are counted as `other`
/// (the model comes from request bodies: labels must stay bounded).
pub const MAX_MODEL_LABELS: usize = 200;

impl ProxyMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request received to response end.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 120.0,
            ]),
            &["provider"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        let connections_active = IntGauge::new(
            "portcullis_connections_active",
            "Client connections currently open on the proxy listener.",
        )?;
        registry.register(Box::new(connections_active.clone()))?;
        let tunnels_active = IntGaugeVec::new(
            Opts::new(
                "portcullis_tunnels_active",
                "CONNECT tunnels currently open.",
            ),
            &["intercepted"],
        )?;
        registry.register(Box::new(tunnels_active.clone()))?;
        let m = Self {
            requests: counter(
                "portcullis_requests_total",
                "Requests handled, by agent, verdict and provider.",
                &["agent", "verdict", "provider"],
            )?,
            duration,
            connections_active,
            connections_rejected: counter(
                "portcullis_connections_rejected_total",
                "Client connections refused at accept, by reason.",
                &["reason"],
            )?,
            tunnels_active,
            tunnel_bytes: counter(
                "portcullis_tunnel_bytes_total",
                "Bytes spliced through CONNECT tunnels, by direction.",
                &["direction"],
            )?,
            upstream_errors: counter(
                "portcullis_upstream_errors_total",
                "Upstream failures by kind.",
                &["kind"],
            )?,
            refused: counter(
                "portcullis_requests_refused_total",
                "Requests and tunnels the data plane refused, by error code (every refusal cause).",
                &["code"],
            )?,
            tls_handshake_failures: counter(
                "portcullis_tls_handshake_failures_total",
                "TLS handshakes that failed on intercepted tunnels, by side.",
                &["side"],
            )?,
            llm_tokens: counter(
                "portcullis_llm_tokens_total",
                "LLM tokens reported by providers, by agent, provider, model and type.",
                &["agent", "provider", "model", "type"],
            )?,
            rate_limited: counter(
                "portcullis_rate_limited_total",
                "Requests refused by a rate limit or token budget, by agent and limit.",
                &["agent", "limit"],
            )?,
            credential_injections: counter(
                "portcullis_credential_injections_total",
                "Upstream requests the gateway added a configured credential to, by credential.",
                &["credential"],
            )?,
            mcp_calls: counter(
                "portcullis_mcp_calls_total",
                "MCP tool calls, by agent, server, tool (tools a server listed; others `other`) and verdict.",
                &["agent", "server", "tool", "verdict"],
            )?,
            models: Default::default(),
        };
        // Make the zero-valued series visible from the first scrape.
        for side in ["client", "upstream"] {
            m.tls_handshake_failures.with_label_values(&[side]);
        }
        for i in ["false", "true"] {
            m.tunnels_active.with_label_values(&[i]);
        }
        for d in ["upstream", "downstream"] {
            m.tunnel_bytes.with_label_values(&[d]);
        }
        Ok(m)
    }

    /// A bounded label for `model`: the first [`MAX_MODEL_LABELS`] distinct models
    /// (short, printable) keep their name; the rest are `other`.
    pub fn model_label(&self, model: Option<&str>) -> String {
        let Some(m) = model
            .filter(|m| !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_graphic()))
        else {
            return if model.is_some() { "other" } else { "unknown" }.to_owned();
        };
        let Ok(mut seen) = self.models.lock() else {
            return "other".to_owned();
        };
        if seen.contains(m) || seen.len() < MAX_MODEL_LABELS && seen.insert(m.to_owned()) {
            m.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_stay_bounded() {
        let m = ProxyMetrics::new(&Registry::new()).unwrap();
        assert_eq!(m.model_label(Some("gpt-4o")), "gpt-4o");
        assert_eq!(m.model_label(None), "unknown");
        assert_eq!(m.model_label(Some("")), "other");
        assert_eq!(m.model_label(Some("has space")), "other");
        assert_eq!(m.model_label(Some(&"x".repeat(129))), "other");
        for i in 0..MAX_MODEL_LABELS * 2 {
            let _ = m.model_label(Some(&format!("model-{i}")));
        }
        assert_eq!(
            m.model_label(Some("gpt-4o")),
            "gpt-4o",
            "known models keep their label"
        );
        assert_eq!(m.model_label(Some("brand-new")), "other");
        assert!(m.models.lock().unwrap().len() <= MAX_MODEL_LABELS);
    }
}
