//! The export task: takes finished records from the bounded queue, turns them into spans and
//! metric points, and posts them to the collector (OTLP/HTTP, protobuf). One request in
//! flight at a time, each bounded by the export timeout and retried at most once; what
//! cannot be delivered is dropped and counted. Memory is bounded by the queue plus one batch.

use crate::genai::GenAiMetrics;
use crate::metrics::{DropReason, TelemetryMetrics};
use crate::span;
use crate::TelemetrySettings;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use portcullis_core::AuditRecord;
use prost::Message;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Largest collector answer read (its body is only drained so the connection is reused).
const MAX_ANSWER: usize = 64 * 1024;
/// Pause before the one retry of a failed export.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How often the export task takes the queued records (at most `export_interval`).
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// The instrumentation scope of every span and metric.
const SCOPE: &str = "portcullis";

/// Why one export attempt failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("collector answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
}

impl ExportError {
    /// The specification's retryable answers (and every transport failure).
    fn retryable(&self) -> bool {
        match self {
            Self::Status(s) => matches!(s.as_u16(), 429 | 502 | 503 | 504),
            Self::Timeout(_) | Self::Transport(_) => true,
        }
    }
}

/// The collector's two endpoints and the HTTP client that posts to them.
pub(crate) struct Collector {
    client: Client<HttpConnector, Full<Bytes>>,
    traces: Uri,
    metrics: Uri,
    timeout: Duration,
}

impl Collector {
    pub(crate) fn new(endpoint: &str, timeout: Duration) -> Result<Self, http::uri::InvalidUri> {
        let base = endpoint.trim_end_matches('/');
        let traces: Uri = format!("{base}/v1/traces").parse()?;
        let metrics: Uri = format!("{base}/v1/metrics").parse()?;
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(conn);
        Ok(Self {
            client,
            traces,
            metrics,
            timeout,
        })
    }

    /// Posts `body` to `uri`, retrying once on a retryable failure.
    async fn post(&self, uri: &Uri, body: Bytes) -> Result<(), ExportError> {
        match self.post_once(uri, body.clone()).await {
            Err(e) if e.retryable() => {
                debug!(error = %e, "OTLP export failed; retrying once");
                tokio::time::sleep(RETRY_AFTER).await;
                self.post_once(uri, body).await
            }
            other => other,
        }
    }

    async fn post_once(&self, uri: &Uri, body: Bytes) -> Result<(), ExportError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| ExportError::Transport(e.to_string()))?;
        let attempt = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ExportError::Transport(e.to_string()))?;
            let status = resp.status();
            // Drained (bounded) so the connection goes back to the pool.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(ExportError::Status(status))
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| ExportError::Timeout(self.timeout))?
    }
}

/// What the task is told besides records.
pub(crate) enum Control {
    /// Export what is pending, then stop; answered when done.
    Shutdown(oneshot::Sender<()>),
}

/// The export task's state.
pub(crate) struct Exporter {
    pub(crate) collector: Collector,
    pub(crate) settings: TelemetrySettings,
    pub(crate) metrics: TelemetryMetrics,
    pub(crate) resource: Resource,
    pub(crate) genai: GenAiMetrics,
    pub(crate) pending: Vec<Span>,
}

impl Exporter {
    /// Runs until shut down (or every handle is gone): batches by size and interval,
    /// exports metrics every interval.
    pub(crate) async fn run(
        mut self,
        mut records: mpsc::Receiver<Box<AuditRecord>>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut tick = tokio::time::interval(self.settings.export_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // The queue is drained on a timer rather than awaited record by record: a request
        // that queues a record never wakes this task (no cross-thread wake-up per request).
        let mut drain = tokio::time::interval(DRAIN_EVERY.min(self.settings.export_interval));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                c = control.recv() => {
                    let Some(Control::Shutdown(done)) = c else { break };
                    // What was queued before the shutdown is exported (bounded by the caller).
                    self.drain(&mut records).await;
                    self.flush_spans().await;
                    self.export_metrics().await;
                    let _ = done.send(());
                    return;
                }
                _ = tick.tick() => {
                    self.drain(&mut records).await;
                    self.flush_spans().await;
                    self.export_metrics().await;
                }
                _ = drain.tick() => {
                    if !self.drain(&mut records).await {
                        break;
                    }
                }
            }
        }
        self.flush_spans().await;
        self.export_metrics().await;
    }

    /// Takes every queued record, exporting each full batch; `false` once every handle is
    /// gone and the queue is empty.
    async fn drain(&mut self, records: &mut mpsc::Receiver<Box<AuditRecord>>) -> bool {
        loop {
            match records.try_recv() {
                Ok(r) => {
                    self.take(&r);
                    if self.pending.len() >= self.settings.batch_size {
                        self.flush_spans().await;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn take(&mut self, r: &AuditRecord) {
        self.genai.observe(r);
        self.pending.push(span::build(r, fresh_ids));
    }

    async fn flush_spans(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.pending);
        let n = spans.len() as u64;
        let body = encode_spans(self.resource.clone(), spans);
        match self.collector.post(&self.collector.traces, body).await {
            Ok(()) => self.metrics.exported("traces", n),
            Err(e) => {
                warn!(error = %e, spans = n, "OTLP trace export failed; spans dropped");
                self.metrics.dropped("traces", DropReason::ExportFailed, n);
            }
        }
    }

    async fn export_metrics(&mut self) {
        let points = self.genai.points() as u64;
        if points == 0 {
            return;
        }
        let metrics = self.genai.export(now_unix_nano());
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
        let body = Bytes::from(req.encode_to_vec());
        match self.collector.post(&self.collector.metrics, body).await {
            Ok(()) => self.metrics.exported("metrics", points),
            Err(e) => {
                warn!(error = %e, "OTLP metrics export failed; the next interval resends the totals");
                self.metrics
                    .dropped("metrics", DropReason::ExportFailed, points);
            }
        }
    }
}

/// The protobuf body of one trace export.
pub(crate) fn encode_spans(resource: Resource, spans: Vec<Span>) -> Bytes {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    Bytes::from(req.encode_to_vec())
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

/// The resource of every export: `service.name`, `service.version` and the configured
/// attributes (which may override both).
pub(crate) fn resource(settings: &TelemetrySettings) -> Resource {
    let mut attrs: Vec<KeyValue> = Vec::new();
    let mut put = |k: &str, v: &str| {
        attrs.retain(|a| a.key != k);
        attrs.push(crate::attr::string(k, v));
    };
    put("service.name", &settings.service_name);
    put("service.version", env!("CARGO_PKG_VERSION"));
    for (k, v) in &settings.resource_attributes {
        put(k, v);
    }
    Resource {
        attributes: attrs,
        ..Resource::default()
    }
}

/// Fresh random trace and span ids (never all zeros).
pub(crate) fn fresh_ids() -> ([u8; 16], [u8; 8]) {
    let mut t: [u8; 16] = rand::random();
    let mut s: [u8; 8] = rand::random();
    t[15] |= 1;
    s[7] |= 1;
    (t, s)
}

pub(crate) fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
