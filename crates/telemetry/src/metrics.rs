//! The exporter's own Prometheus metrics.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Why spans or metric points were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full when the request finished.
    QueueFull,
    /// The collector could not be reached, timed out or refused the export (after one retry).
    ExportFailed,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::ExportFailed => "export_failed",
        }
    }
}

/// - `portcullis_telemetry_dropped_total{signal,reason}`: spans (`signal="traces"`) or metric
///   data points (`signal="metrics"`) not delivered: `queue_full` or `export_failed`.
/// - `portcullis_telemetry_exported_total{signal}`: spans and metric data points the
///   collector accepted.
#[derive(Debug, Clone)]
pub struct TelemetryMetrics {
    dropped: IntCounterVec,
    exported: IntCounterVec,
    /// Built once: counted on the request path when the queue is full.
    spans_queue_full: IntCounter,
}

impl TelemetryMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.exported.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> prometheus::Result<Self> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "portcullis_telemetry_dropped_total",
                "Spans and metric data points not exported, by signal and reason.",
            ),
            &["signal", "reason"],
        )?;
        let m = Self {
            spans_queue_full: dropped.with_label_values(&["traces", "queue_full"]),
            dropped,
            exported: IntCounterVec::new(
                Opts::new(
                    "portcullis_telemetry_exported_total",
                    "Spans and metric data points the OTLP collector accepted, by signal.",
                ),
                &["signal"],
            )?,
        };
        // Every series exists from the start, so a dashboard sees 0 rather than nothing.
        for signal in ["traces", "metrics"] {
            m.exported.with_label_values(&[signal]);
            for r in [DropReason::QueueFull, DropReason::ExportFailed] {
                m.dropped.with_label_values(&[signal, r.as_str()]);
            }
        }
        Ok(m)
    }

    /// One span dropped because the queue was full (request path: no label lookup).
    pub(crate) fn span_queue_full(&self) {
        self.spans_queue_full.inc();
    }

    /// `n` items of `signal` dropped for `reason`.
    pub fn dropped(&self, signal: &str, reason: DropReason, n: u64) {
        self.dropped
            .with_label_values(&[signal, reason.as_str()])
            .inc_by(n);
    }

    /// `n` items of `signal` exported.
    pub fn exported(&self, signal: &str, n: u64) {
        self.exported.with_label_values(&[signal]).inc_by(n);
    }

    /// Items of `signal` dropped so far (all reasons).
    pub fn dropped_total(&self, signal: &str) -> u64 {
        [DropReason::QueueFull, DropReason::ExportFailed]
            .iter()
            .map(|r| self.dropped.with_label_values(&[signal, r.as_str()]).get())
            .sum()
    }

    /// Items of `signal` exported so far.
    pub fn exported_total(&self, signal: &str) -> u64 {
        self.exported.with_label_values(&[signal]).get()
    }
}
