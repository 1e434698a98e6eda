//! Pipeline metrics: queue depth, records per sink and result, full-queue refusals.

use crate::settings::SinkKind;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The pipeline's Prometheus metrics.
///
/// - `portcullis_audit_queue_depth`: records accepted and not yet taken by the writer.
/// - `portcullis_audit_records_total{sink,result}`: `written` (once per record stored by
///   the sink), `failed` (once per record per failed write attempt; the record is
///   retried), `dropped` (given up: retry backlog over capacity, or still failing when
///   the shutdown drain timed out).
/// - `portcullis_audit_full_total{policy}`: records refused because the queue was full,
///   by `on_full` policy (`block` after its wait, `fail_closed` at once).
/// - `portcullis_audit_spool_records_total{result}`: store records `spooled` (the store
///   could not take them), `unspooled` (written from the spool to the store), `refused`
///   (the spool was full), `corrupt` (unreadable spool lines skipped).
/// - `portcullis_audit_spool_bytes`: bytes in the spool not yet written to the store.
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    pub(crate) queue_depth: IntGauge,
    pub(crate) records: IntCounterVec,
    pub(crate) full: IntCounterVec,
    pub(crate) spool_records: IntCounterVec,
    pub(crate) spool_bytes: IntGauge,
}

impl AuditMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.full.clone()))?;
        registry.register(Box::new(m.spool_records.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (tests, benches).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            queue_depth: IntGauge::new(
                "portcullis_audit_queue_depth",
                "Audit records queued and not yet taken by the writer.",
            )?,
            records: IntCounterVec::new(
                Opts::new(
                    "portcullis_audit_records_total",
                    "Audit records per sink and result (written, failed attempt, dropped).",
                ),
                &["sink", "result"],
            )?,
            full: IntCounterVec::new(
                Opts::new(
                    "portcullis_audit_full_total",
                    "Audit records refused because the queue was full, by on_full policy.",
                ),
                &["policy"],
            )?,
            spool_records: IntCounterVec::new(
                Opts::new(
                    "portcullis_audit_spool_records_total",
                    "Store audit records through the spool: spooled, unspooled, refused, corrupt.",
                ),
                &["result"],
            )?,
            spool_bytes: IntGauge::new(
                "portcullis_audit_spool_bytes",
                "Bytes of audit records in the spool not yet written to the store.",
            )?,
        })
    }

    /// Records currently queued.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    /// Records `sink` wrote.
    pub fn written(&self, sink: SinkKind) -> u64 {
        self.records
            .with_label_values(&[sink.as_str(), "written"])
            .get()
    }

    /// Record write attempts of `sink` that failed.
    pub fn failed(&self, sink: SinkKind) -> u64 {
        self.records
            .with_label_values(&[sink.as_str(), "failed"])
            .get()
    }

    /// Records `sink` gave up on.
    pub fn dropped(&self, sink: SinkKind) -> u64 {
        self.records
            .with_label_values(&[sink.as_str(), "dropped"])
            .get()
    }

    /// Records refused because the queue was full, under either policy.
    pub fn full(&self) -> u64 {
        ["block", "fail_closed"]
            .iter()
            .map(|p| self.full.with_label_values(&[p]).get())
            .sum()
    }

    /// Store records that went through the spool with `result` (`spooled`, `unspooled`,
    /// `refused`, `corrupt`).
    pub fn spool(&self, result: &str) -> u64 {
        self.spool_records.with_label_values(&[result]).get()
    }

    /// Bytes in the spool not yet written to the store.
    pub fn spool_bytes(&self) -> i64 {
        self.spool_bytes.get()
    }

    pub(crate) fn add_spool(&self, result: &str, n: u64) {
        self.spool_records.with_label_values(&[result]).inc_by(n);
    }

    pub(crate) fn add(&self, sink: SinkKind, result: &str, n: usize) {
        self.records
            .with_label_values(&[sink.as_str(), result])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}
