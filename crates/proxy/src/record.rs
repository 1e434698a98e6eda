//! Assembling the record of one request as it moves through the phases.

use crate::pipeline::{Record, RequestKind};
use crate::server::Shared;
use crate::target::Target;
use http::Request;
use portcullis_core::{Decision, Principal, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Provider label until requests are classified.
const NO_PROVIDER: &str = "none";
/// Agent label for requests refused before authentication succeeded.
const NO_AGENT: &str = "unauthenticated";

/// A request's record in the making.
pub(crate) struct Pending {
    start: Instant,
    rec: Record,
}

impl Pending {
    pub(crate) fn from_request<B>(
        kind: RequestKind,
        req: &Request<B>,
        client_addr: SocketAddr,
    ) -> Self {
        let uri = req.uri();
        let (path, host, port) = if kind == RequestKind::Connect {
            (String::new(), String::new(), 0)
        } else {
            (
                uri.path().to_owned(),
                uri.host().unwrap_or_default().to_owned(),
                uri.port_u16().unwrap_or(80),
            )
        };
        Self {
            start: Instant::now(),
            rec: Record {
                id: crate::ids::new_id(),
                ts_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                kind: kind.as_str(),
                agent_id: None,
                tenant: None,
                subagent: None,
                provider: None,
                api: None,
                model: None,
                stream: false,
                usage: None,
                method: req.method().as_str().to_owned(),
                scheme: if kind == RequestKind::Connect {
                    "https"
                } else {
                    "http"
                },
                host,
                port,
                path,
                verdict: Verdict::Error,
                decision: None,
                status: 0,
                error: None,
                latency_ms: 0.0,
                upstream_ttfb_ms: None,
                bytes_in: 0,
                bytes_out: 0,
                completed: false,
                client_addr,
                refusal: None,
                credential: None,
                tls_intercepted: false,
            },
        }
    }

    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    pub(crate) fn set_target(&mut self, t: &Target) {
        self.rec.host = t.host_str();
        self.rec.port = t.port;
    }

    /// The canonical path (what policy and the upstream see).
    pub(crate) fn set_path(&mut self, path: &str) {
        if self.rec.path != path {
            path.clone_into(&mut self.rec.path);
        }
    }

    pub(crate) fn set_scheme(&mut self, scheme: &'static str) {
        self.rec.scheme = scheme;
    }

    pub(crate) fn set_principal(&mut self, p: &Principal) {
        self.rec.agent_id = Some(p.agent_id.clone());
        self.rec.tenant = Some(p.tenant.clone());
    }

    /// A request inside an intercepted tunnel: the tunnel's agent, sub-agent and destination
    /// until the request itself says more (a refusal before that is still attributed).
    pub(crate) fn set_tunnel(&mut self, t: &crate::forward::Tunnel) {
        self.set_principal(&t.principal);
        self.rec.subagent = t.subagent.clone();
        self.rec.scheme = t.scheme;
        if t.scheme == "https" {
            self.rec.tls_intercepted = true;
        }
    }

    pub(crate) fn set_subagent(&mut self, s: Option<String>) {
        self.rec.subagent = s;
    }

    pub(crate) fn set_llm(&mut self, c: &portcullis_llm::Classification) {
        self.rec.provider = Some(c.provider.clone());
        self.rec.model = c.model.clone();
        self.rec.api = c.api.map(|a| a.as_str());
        self.rec.stream = c.stream;
    }

    pub(crate) fn set_usage(&mut self, u: Option<portcullis_llm::Usage>) {
        self.rec.usage = u;
    }

    pub(crate) fn set_decision(&mut self, d: Arc<Decision>) {
        self.rec.decision = Some(d);
    }

    /// Marks a request refused by a rate limit or token budget.
    pub(crate) fn set_rate_limited(&mut self, detail: String) {
        self.rec.refusal = Some(detail);
    }

    /// Marks a tunnel whose TLS the gateway terminated, or a request inside one.
    pub(crate) fn set_tls_intercepted(&mut self) {
        self.rec.tls_intercepted = true;
    }

    /// Names the credential injected upstream.
    pub(crate) fn set_credential(&mut self, name: Arc<str>) {
        self.rec.credential = Some(name);
    }

    pub(crate) fn set_ttfb(&mut self) {
        self.rec.upstream_ttfb_ms = Some(ms(self.start.elapsed()));
    }

    /// Marks the record as a spliced tunnel (the record written at close).
    pub(crate) fn into_tunnel(mut self) -> Self {
        self.rec.kind = "tunnel";
        self
    }

    /// Records a request answered without a body still to stream.
    pub(crate) fn finish_now(self, shared: &Shared, status: u16, error: Option<String>) {
        self.finish(shared, status, error, 0, 0, true);
    }

    /// Records the request's outcome, updates metrics and hands it to the recorder.
    pub(crate) fn finish(
        mut self,
        shared: &Shared,
        status: u16,
        error: Option<String>,
        bytes_in: u64,
        bytes_out: u64,
        completed: bool,
    ) {
        let r = &mut self.rec;
        r.status = status;
        r.error = error;
        r.bytes_in = bytes_in;
        r.bytes_out = bytes_out;
        r.completed = completed;
        let elapsed = self.start.elapsed();
        r.latency_ms = ms(elapsed);
        r.verdict = match &r.decision {
            _ if r.refusal.is_some() && status == 429 => Verdict::RateLimited,
            Some(d) if !d.allowed => Verdict::Deny,
            _ if status == 403 => Verdict::Deny,
            Some(d) => d.verdict,
            None if r.error.is_some() => Verdict::Error,
            None => Verdict::Allow,
        };
        let agent = r.agent_id.as_deref().unwrap_or(NO_AGENT);
        let provider = r.provider.as_deref().unwrap_or(NO_PROVIDER);
        shared
            .metrics
            .requests
            .with_label_values(&[agent, r.verdict.as_str(), provider])
            .inc();
        shared
            .metrics
            .duration
            .with_label_values(&[provider])
            .observe(elapsed.as_secs_f64());
        if let Some(u) = r
            .usage
            .as_ref()
            .filter(|u| u.source == portcullis_llm::UsageSource::Provider)
        {
            let model = shared.metrics.model_label(r.model.as_deref());
            for (kind, n) in [
                ("input", u.input_tokens),
                ("output", u.output_tokens),
                ("cached_input", u.cached_input_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                shared
                    .metrics
                    .llm_tokens
                    .with_label_values(&[agent, provider, &model, kind])
                    .inc_by(n);
            }
        }
        shared.pipeline.recorder.record(self.rec);
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
