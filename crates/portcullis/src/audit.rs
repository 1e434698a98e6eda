//! The audit trail plugged into the data plane: `[audit]` → pipeline settings, and
//! the recorder that turns each finished request or tunnel into an audit record.

use futures_util::future::BoxFuture;
use portcullis_audit::{AuditHandle, AuditKind, AuditRecord, AuditSettings, OnFull, SinkKind};
use portcullis_config::{AuditConfig, AuditOnFull, AuditSink};
use portcullis_core::ApiError;
use portcullis_proxy::pipeline::{LogRecorder, Record, Recorder};
use tracing::warn;

/// Maps `[audit]` onto the pipeline's settings.
pub(crate) fn settings(cfg: &AuditConfig) -> AuditSettings {
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
        ..AuditSettings::default()
    }
}

/// Logs the access line and queues the audit record; never waits on disk.
pub(crate) struct AuditRecorder {
    handle: AuditHandle,
}

impl AuditRecorder {
    pub(crate) fn new(handle: AuditHandle) -> Self {
        Self { handle }
    }
}

impl Recorder for AuditRecorder {
    fn record(&self, r: Record) {
        LogRecorder.record_ref(&r);
        if let Err(e) = self.handle.submit(to_audit(r)) {
            // Counted by the pipeline (portcullis_audit_full_total / records dropped).
            warn!(error = ?e, "audit queue full; record not queued");
        }
    }

    fn admit(&self) -> BoxFuture<'_, Result<(), ApiError>> {
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
                Err(e) if self.handle.is_fail_closed() => Err(e.to_api_error()),
                // block: the wait is over; forward, the record may be dropped (counted).
                Err(_) => Ok(()),
            }
        })
    }
}

/// The DESIGN §5 record of one finished request or tunnel.
pub(crate) fn to_audit(r: Record) -> AuditRecord {
    let kind = match r.kind {
        "tunnel" => AuditKind::Tunnel,
        "connect" => AuditKind::Connect,
        "token" => AuditKind::Token,
        _ => AuditKind::Http,
    };
    let mut a = AuditRecord::new(
        r.id,
        i64::try_from(r.ts_ms).unwrap_or(i64::MAX),
        r.tenant.as_deref().unwrap_or(""),
        r.agent_id.as_deref().unwrap_or(""),
        kind,
        r.verdict,
    );
    a.subagent = r.subagent;
    a.method = Some(r.method);
    a.scheme = Some(r.scheme.to_owned());
    a.host = (!r.host.is_empty()).then_some(r.host);
    a.port = (r.port != 0).then_some(r.port);
    a.path = (!r.path.is_empty()).then_some(r.path);
    a.provider = r.provider.map(|p| p.to_string());
    a.api = r.api.map(str::to_owned);
    a.model = r.model;
    a.stream = a.provider.is_some().then_some(r.stream);
    if let Some(d) = &r.decision {
        a.policy = d.policy.clone();
        a.reasons = d.reasons.clone();
        a.would_deny = d.would_deny.clone();
        a.decision_id = Some(d.decision_id.clone());
        a.policy_us = Some(d.eval_us);
    }
    // A request policy allowed and a limit refused: the limit is the reason.
    if let Some(why) = r.refusal {
        a.reasons.push(why);
    }
    a.status = (r.status != 0).then_some(r.status);
    a.error = r.error;
    a.latency_ms = r.latency_ms.round() as u64;
    a.upstream_ttfb_ms = r.upstream_ttfb_ms.map(|t| t.round() as u64);
    a.bytes_in = r.bytes_in;
    a.bytes_out = r.bytes_out;
    a.usage = r.usage.map(Into::into);
    a.client_addr = Some(r.client_addr.to_string());
    a.credential = r.credential.map(|c| c.to_string());
    a.tls_intercepted = r.tls_intercepted;
    a
}
