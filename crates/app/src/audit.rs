//! The audit trail plugged into the data plane: `[audit]` → pipeline settings, and
//! the recorder that turns each finished request or tunnel into an audit record.

use futures_util::future::BoxFuture;
use portcullis_audit::{AuditHandle, AuditRecord, AuditSettings, OnFull, SinkKind, SpoolSettings};
use portcullis_config::{AuditConfig, AuditOnFull, AuditSink};
use portcullis_proxy::phases::{LogRecorder, Recorder};
use portcullis_telemetry::Telemetry;
use tracing::warn;

use crate::pricing::Pricing;

/// Maps `[audit]` onto the pipeline's settings.
pub fn settings(cfg: &AuditConfig) -> AuditSettings {
    AuditSettings {
        sinks: cfg
            .sinks
            .iter()
            .map(|s| match s {
                AuditSink::Store => SinkKind::Store,
                AuditSink::Jsonl => SinkKind::Jsonl,
                AuditSink::Stdout => SinkKind::Stdout,
            })
            .collect(),
        jsonl_path: cfg.jsonl_path.clone(),
        jsonl_max_bytes: cfg.jsonl_max_bytes,
        jsonl_keep: cfg.jsonl_keep,
        queue: cfg.queue,
        batch_max: cfg.batch_max,
        flush_interval: cfg.flush_interval,
        on_full: match cfg.on_full {
            AuditOnFull::Block => OnFull::Block {
                max_wait: cfg.block_max_wait,
            },
            AuditOnFull::FailClosed => OnFull::FailClosed,
        },
        spool: (cfg.spool_max_bytes > 0).then(|| SpoolSettings {
            path: cfg.spool_path.clone(),
            max_bytes: cfg.spool_max_bytes,
        }),
        ..AuditSettings::default()
    }
}

/// Prices the record, logs the access line, hands the record to the telemetry exporter (when
/// on) and queues the audit record; never waits on disk or on the collector.
pub struct AuditRecorder {
    handle: AuditHandle,
    pricing: Option<Pricing>,
    telemetry: Option<Telemetry>,
}

impl AuditRecorder {
    /// A recorder queueing into `handle`, records unpriced.
    pub fn new(handle: AuditHandle) -> Self {
        Self {
            handle,
            pricing: None,
            telemetry: None,
        }
    }

    /// Sets each record's `cost_usd` with `pricing` before queueing it.
    #[must_use]
    pub fn with_pricing(mut self, pricing: Pricing) -> Self {
        self.pricing = Some(pricing);
        self
    }

    /// Also exports each record as a span and GenAI metrics (`[telemetry]`).
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Option<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }
}

impl Recorder for AuditRecorder {
    fn record(&self, mut r: AuditRecord) {
        if let Some(p) = &self.pricing {
            p.apply(&mut r);
        }
        LogRecorder::access_line(&r);
        if let Some(t) = &self.telemetry {
            // Bounded queue, never waits: a full queue drops the span (counted).
            t.record(&r);
        }
        if let Err(e) = self.handle.submit(r) {
            // Counted by the pipeline (portcullis_audit_full_total / records dropped).
            warn!(error = ?e, "audit queue full; record not queued");
        }
    }

    fn admit(&self) -> BoxFuture<'_, Result<(), String>> {
        // Fast path: room in the queue (the common case costs one atomic read).
        if self.handle.has_capacity() {
            return Box::pin(std::future::ready(Ok(())));
        }
        Box::pin(async move {
            // fail_closed: refuse now; block: wait up to `block_max_wait` for room.
            // Either refusal is counted in portcullis_audit_full_total{policy}.
            match self.handle.reserve_wait().await {
                Ok(slot) => {
                    drop(slot);
                    Ok(())
                }
                Err(_) if self.handle.is_fail_closed() => Err(
                    "the audit trail cannot accept records right now; the request was not forwarded"
                        .to_owned(),
                ),
                // block: the wait is over; forward, the record may be dropped (counted).
                Err(_) => Ok(()),
            }
        })
    }
}
