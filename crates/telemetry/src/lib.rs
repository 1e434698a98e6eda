//! Portcullis telemetry: OpenTelemetry traces and GenAI metrics over OTLP/HTTP.
//!
//! Every finished request's audit record becomes one span under the GenAI semantic
//! conventions ([`span::build`]) and feeds two GenAI histograms ([`genai::GenAiMetrics`]).
//! [`Telemetry::record`] is called on the request path and never blocks or awaits: it puts
//! the record in a bounded queue (or counts it dropped when the queue is full). A background
//! task batches, encodes (protobuf, `opentelemetry-proto` + `prost`) and posts to
//! `{endpoint}/v1/traces` and `/v1/metrics` with a timeout and at most one retry; an
//! unreachable collector costs dropped spans (counted), never a slower request.
//!
//! Records carry no prompt or completion content, so neither do spans.
#![warn(missing_docs)]

mod attr;
mod export;
pub mod genai;
mod metrics;
pub mod span;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use metrics::{DropReason, TelemetryMetrics};

use export::{Collector, Control, Exporter};
use portcullis_core::AuditRecord;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the exporter needs (mapped from `[telemetry]` by the app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Collector base URL (`http://host:port[/path]`).
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// Bounded queue of finished requests waiting for export.
    pub queue_size: usize,
    /// Most spans per export request.
    pub batch_size: usize,
    /// Span batching interval and metrics export interval.
    pub export_interval: Duration,
    /// Longest wait for one export request.
    pub export_timeout: Duration,
}

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The endpoint is not a valid URL.
    #[error("telemetry.otlp_endpoint: {0}")]
    Endpoint(#[from] http::uri::InvalidUri),
}

/// The request path's handle: cheap to clone, [`Telemetry::record`] never waits.
#[derive(Clone)]
pub struct Telemetry {
    records: mpsc::Sender<Box<AuditRecord>>,
    control: mpsc::Sender<Control>,
    metrics: TelemetryMetrics,
}

impl Telemetry {
    /// Starts the export task on the current runtime.
    pub fn start(
        settings: TelemetrySettings,
        metrics: TelemetryMetrics,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), StartError> {
        let collector = Collector::new(&settings.endpoint, settings.export_timeout)?;
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let (ctl_tx, ctl_rx) = mpsc::channel(1);
        let exporter = Exporter {
            collector,
            resource: export::resource(&settings),
            genai: genai::GenAiMetrics::new(export::now_unix_nano()),
            pending: Vec::with_capacity(settings.batch_size),
            settings,
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(exporter.run(rx, ctl_rx));
        Ok((
            Self {
                records: tx,
                control: ctl_tx,
                metrics,
            },
            task,
        ))
    }

    /// Queues a finished request for export; when the queue is full the span is dropped
    /// and counted. Never blocks, never awaits.
    pub fn record(&self, r: &AuditRecord) {
        // Checked first so a full queue costs no copy of the record.
        if self.records.capacity() == 0 {
            self.metrics.span_queue_full();
            return;
        }
        if self.records.try_send(Box::new(r.clone())).is_err() {
            self.metrics.span_queue_full();
        }
    }

    /// Exports what is queued and the metrics once more, waiting at most `within`.
    pub async fn shutdown(&self, within: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        let flushed = async {
            if self.control.send(Control::Shutdown(done_tx)).await.is_ok() {
                let _ = done_rx.await;
            }
        };
        if tokio::time::timeout(within, flushed).await.is_err() {
            tracing::warn!(
                ?within,
                "telemetry: pending spans not exported before shutdown"
            );
        }
    }

    /// The exporter's metrics.
    pub fn metrics(&self) -> &TelemetryMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests;
