//! The bounded queue, the handle the data plane holds, and the batching writer task.

use crate::metrics::AuditMetrics;
use crate::record::AuditRecord;
use crate::settings::{AuditSettings, OnFull, SinkKind};
use crate::sink::{JsonlConfig, JsonlFile, Target};
use portcullis_store::{AuditRow, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// First retry delay of a failing sink; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay of a failing sink.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one failure log line per sink per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A record was refused: the queue had no room (within the wait `block` allows) or the
/// pipeline is shut down. The proxy answers 503 `audit_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditFull {
    /// The queue is full.
    #[error("the audit queue is full")]
    Full,
    /// The pipeline is shut down.
    #[error("the audit pipeline is shut down")]
    Closed,
}

/// Errors of [`AuditPipeline::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is unusable.
    #[error("invalid audit setting `{key}`: {reason}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The JSON Lines file cannot be opened.
    #[error("cannot open audit file {path}: {source}")]
    Jsonl {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not called inside a Tokio runtime.
    #[error("the audit pipeline must be started inside a Tokio runtime")]
    NoRuntime,
}

/// Entry point: [`AuditPipeline::start`].
#[derive(Debug)]
pub struct AuditPipeline;

impl AuditPipeline {
    /// Validates `cfg`, opens the JSON Lines file (creating its directory), and spawns the
    /// writer task. `store` is required when `cfg.sinks` has [`SinkKind::Store`].
    ///
    /// Returns the handle to submit records with and the writer task, which ends after
    /// [`AuditHandle::shutdown`] (or once every handle is dropped) with the queue drained.
    pub fn start(
        cfg: AuditSettings,
        store: Option<Store>,
        metrics: AuditMetrics,
    ) -> Result<(AuditHandle, JoinHandle<()>), StartError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        if cfg.queue == 0 {
            return Err(invalid("queue", "must be at least 1"));
        }
        if cfg.queue > (usize::MAX >> 4) {
            return Err(invalid("queue", "too large"));
        }
        if cfg.batch_max == 0 {
            return Err(invalid("batch_max", "must be at least 1"));
        }
        let jsonl_cfg = JsonlConfig {
            path: cfg.jsonl_path.clone(),
            max_bytes: cfg.jsonl_max_bytes,
            keep: cfg.jsonl_keep,
            fsync: cfg.jsonl_fsync,
        };
        let mut sinks: Vec<Slot> = Vec::new();
        for kind in &cfg.sinks {
            if sinks.iter().any(|s| s.kind == *kind) {
                continue;
            }
            let target = match kind {
                SinkKind::Store => match &store {
                    Some(s) => Target::Store(s.clone()),
                    None => return Err(invalid("sinks", "the store sink needs a store")),
                },
                SinkKind::Jsonl => {
                    let mut file = JsonlFile::new(jsonl_cfg.clone());
                    file.open_now().map_err(|source| StartError::Jsonl {
                        path: cfg.jsonl_path.display().to_string(),
                        source,
                    })?;
                    Target::Jsonl(Some(file))
                }
                SinkKind::Stdout => Target::Stdout,
            };
            sinks.push(Slot::new(*kind, target));
        }

        let (tx, rx) = mpsc::channel(cfg.queue);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let writer = Writer {
            rx,
            sinks,
            jsonl: jsonl_cfg,
            metrics: metrics.clone(),
            batch_max: cfg.batch_max,
            flush_interval: cfg.flush_interval,
            drain_timeout: cfg.drain_timeout,
            pending_cap: cfg.queue,
        };
        let task = rt.spawn(async move {
            writer.run(shutdown_rx).await;
            let _ = done_tx.send(true);
        });
        let handle = AuditHandle {
            inner: Arc::new(Inner {
                tx,
                on_full: cfg.on_full,
                metrics,
                shutdown: shutdown_tx,
                done: done_rx,
            }),
        };
        Ok((handle, task))
    }
}

fn invalid(key: &'static str, reason: &str) -> StartError {
    StartError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

/// Submits records to the pipeline; cheap to clone, shared by every connection.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<AuditRow>,
    on_full: OnFull,
    metrics: AuditMetrics,
    shutdown: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// Room for one record, reserved in the queue before forwarding a request: sending on it
/// cannot fail, so a `fail_closed` gateway never forwards a request it cannot audit.
/// Dropping it unused gives the room back.
#[derive(Debug)]
pub struct AuditSlot {
    permit: mpsc::OwnedPermit<AuditRow>,
    metrics: AuditMetrics,
}

impl AuditSlot {
    /// Queues `rec` in the reserved room.
    pub fn send(self, rec: AuditRecord) {
        self.metrics.queue_depth.inc();
        self.permit.send(AuditRow::from(rec));
    }
}

impl AuditHandle {
    /// Queues `rec` without waiting; `Err` when the queue is full or shut down (counted in
    /// `portcullis_audit_full_total`). Never waits on disk or on the writer.
    pub fn submit(&self, rec: AuditRecord) -> Result<(), AuditFull> {
        match self.inner.tx.try_send(AuditRow::from(rec)) {
            Ok(()) => {
                self.inner.metrics.queue_depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.refused(AuditFull::Full)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditFull::Closed),
        }
    }

    /// Queues `rec` under the `on_full` policy: `block` waits for room at most its
    /// `max_wait`, `fail_closed` refuses at once.
    pub async fn submit_wait(&self, rec: AuditRecord) -> Result<(), AuditFull> {
        match self.inner.on_full {
            OnFull::FailClosed => self.submit(rec),
            OnFull::Block { max_wait } => {
                let row = AuditRow::from(rec);
                match tokio::time::timeout(max_wait, self.inner.tx.send(row)).await {
                    Ok(Ok(())) => {
                        self.inner.metrics.queue_depth.inc();
                        Ok(())
                    }
                    Ok(Err(_)) => Err(AuditFull::Closed),
                    Err(_) => Err(self.refused(AuditFull::Full)),
                }
            }
        }
    }

    /// Reserves room for one record without waiting.
    pub fn reserve(&self) -> Result<AuditSlot, AuditFull> {
        match self.inner.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(self.slot(permit)),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.refused(AuditFull::Full)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditFull::Closed),
        }
    }

    /// Reserves room for one record under the `on_full` policy (see [`Self::submit_wait`]).
    pub async fn reserve_wait(&self) -> Result<AuditSlot, AuditFull> {
        match self.inner.on_full {
            OnFull::FailClosed => self.reserve(),
            OnFull::Block { max_wait } => {
                let reserve = self.inner.tx.clone().reserve_owned();
                match tokio::time::timeout(max_wait, reserve).await {
                    Ok(Ok(permit)) => Ok(self.slot(permit)),
                    Ok(Err(_)) => Err(AuditFull::Closed),
                    Err(_) => Err(self.refused(AuditFull::Full)),
                }
            }
        }
    }

    /// Whether the queue has room right now (a hint: another task may take it first;
    /// use [`Self::reserve`] for a guarantee).
    pub fn has_capacity(&self) -> bool {
        !self.inner.tx.is_closed() && self.inner.tx.capacity() > 0
    }

    /// Whether `on_full` is `fail_closed`.
    pub fn is_fail_closed(&self) -> bool {
        matches!(self.inner.on_full, OnFull::FailClosed)
    }

    /// The pipeline's metrics.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.inner.metrics
    }

    /// Stops accepting records and waits until every queued record (and every record sent
    /// on an outstanding [`AuditSlot`]) has been written by every sink, or counted as
    /// dropped by a sink still failing after `drain_timeout`.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let mut done = self.inner.done.clone();
        // Err: the writer is gone (it panicked or was aborted); nothing left to wait for.
        let _ = done.wait_for(|d| *d).await;
    }

    fn slot(&self, permit: mpsc::OwnedPermit<AuditRow>) -> AuditSlot {
        AuditSlot {
            permit,
            metrics: self.inner.metrics.clone(),
        }
    }

    fn refused(&self, why: AuditFull) -> AuditFull {
        self.inner
            .metrics
            .full
            .with_label_values(&[self.inner.on_full.as_str()])
            .inc();
        why
    }
}

/// One sink with its retry state.
struct Slot {
    kind: SinkKind,
    target: Target,
    /// Records of failed batches, oldest first, written before anything newer.
    pending: Vec<AuditRow>,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Slot {
    fn new(kind: SinkKind, target: Target) -> Self {
        Self {
            kind,
            target,
            pending: Vec::new(),
            backoff: MIN_BACKOFF,
            retry_at: None,
            last_log: None,
            unlogged: 0,
        }
    }
}

struct Writer {
    rx: mpsc::Receiver<AuditRow>,
    sinks: Vec<Slot>,
    jsonl: JsonlConfig,
    metrics: AuditMetrics,
    batch_max: usize,
    flush_interval: Duration,
    drain_timeout: Duration,
    pending_cap: usize,
}

impl Writer {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut closing = *shutdown.borrow();
        if closing {
            self.rx.close();
        }
        let mut batch = Vec::with_capacity(self.batch_max);
        loop {
            let wake = self.next_retry();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_max) => {
                    if n == 0 {
                        break;
                    }
                    self.taken(n);
                }
                res = shutdown.changed(), if !closing => {
                    // A dropped sender (Err) means the same as a shutdown request.
                    let _ = res;
                    closing = true;
                    self.rx.close();
                    continue;
                }
                () = sleep_until(wake), if wake.is_some() => {
                    self.write_all(&[]).await;
                    continue;
                }
            }
            if !closing && batch.len() < self.batch_max {
                closing = self.fill(&mut batch, &mut shutdown).await;
            }
            self.write_all(&batch).await;
            batch.clear();
        }
        self.drain().await;
    }

    /// Waits up to `flush_interval` for the batch to fill; returns whether shutdown began.
    async fn fill(
        &mut self,
        batch: &mut Vec<AuditRow>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let deadline = Instant::now() + self.flush_interval;
        while batch.len() < self.batch_max {
            let room = self.batch_max - batch.len();
            tokio::select! {
                n = self.rx.recv_many(batch, room) => {
                    if n == 0 {
                        return true;
                    }
                    self.taken(n);
                }
                _ = shutdown.changed() => {
                    self.rx.close();
                    return true;
                }
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
        false
    }

    /// Writes `batch` to every sink; a sink waiting to retry queues it behind its backlog.
    async fn write_all(&mut self, batch: &[AuditRow]) {
        let now = Instant::now();
        for slot in &mut self.sinks {
            let due = slot.retry_at.is_none_or(|at| at <= now);
            if !due {
                keep(slot, batch, self.pending_cap, &self.metrics);
                continue;
            }
            if slot.pending.is_empty() && batch.is_empty() {
                continue;
            }
            let res = if slot.pending.is_empty() {
                slot.target.write(batch, &self.jsonl).await
            } else {
                keep(slot, batch, self.pending_cap, &self.metrics);
                slot.target.write(&slot.pending, &self.jsonl).await
            };
            let n = if slot.pending.is_empty() {
                batch.len()
            } else {
                slot.pending.len()
            };
            match res {
                Ok(()) => {
                    self.metrics.add(slot.kind, "written", n);
                    if slot.retry_at.is_some() {
                        tracing::info!(
                            sink = slot.kind.as_str(),
                            records = n,
                            "audit sink recovered"
                        );
                    }
                    slot.pending.clear();
                    slot.backoff = MIN_BACKOFF;
                    slot.retry_at = None;
                }
                Err(error) => {
                    self.metrics.add(slot.kind, "failed", n);
                    if slot.pending.is_empty() {
                        keep(slot, batch, self.pending_cap, &self.metrics);
                    }
                    slot.retry_at = Some(Instant::now() + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                    log_failure(slot, &error);
                }
            }
        }
    }

    /// After the queue is closed and empty: retries failing sinks until `drain_timeout`,
    /// then counts what is left as dropped.
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.drain_timeout;
        while let Some(at) = self.next_retry() {
            if at > deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            self.write_all(&[]).await;
        }
        for slot in &mut self.sinks {
            if !slot.pending.is_empty() {
                tracing::error!(
                    sink = slot.kind.as_str(),
                    records = slot.pending.len(),
                    "audit sink still failing at shutdown; records dropped"
                );
                self.metrics.add(slot.kind, "dropped", slot.pending.len());
                slot.pending.clear();
            }
        }
    }

    /// `n` records left the queue.
    fn taken(&self, n: usize) {
        self.metrics
            .queue_depth
            .sub(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn next_retry(&self) -> Option<Instant> {
        self.sinks
            .iter()
            .filter(|s| !s.pending.is_empty())
            .filter_map(|s| s.retry_at)
            .min()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Appends `batch` to the sink's backlog, dropping the oldest records beyond `cap`.
fn keep(slot: &mut Slot, batch: &[AuditRow], cap: usize, metrics: &AuditMetrics) {
    slot.pending.extend_from_slice(batch);
    if slot.pending.len() > cap {
        let excess = slot.pending.len() - cap;
        slot.pending.drain(..excess);
        metrics.add(slot.kind, "dropped", excess);
    }
}

fn log_failure(slot: &mut Slot, error: &str) {
    let now = Instant::now();
    if slot
        .last_log
        .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
    {
        slot.unlogged += 1;
        return;
    }
    tracing::warn!(
        sink = slot.kind.as_str(),
        error,
        backlog = slot.pending.len(),
        retry_in_ms = u64::try_from(slot.backoff.as_millis()).unwrap_or(u64::MAX),
        suppressed = slot.unlogged,
        "audit sink write failed; will retry"
    );
    slot.last_log = Some(now);
    slot.unlogged = 0;
}
