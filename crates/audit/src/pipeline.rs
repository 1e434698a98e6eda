//! The bounded queue, the handle the data plane holds, and the batching writer task.

use crate::metrics::AuditMetrics;
use crate::record::AuditRecord;
use crate::settings::{AuditSettings, OnFull, SinkKind};
use crate::sink::{JsonlConfig, JsonlFile, Target};
use crate::spool::Spool;
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
    /// The spool cannot be opened.
    #[error("cannot open audit spool {path}: {source}")]
    Spool {
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
    /// Validates `cfg`, opens the JSON Lines file and the spool (creating their
    /// directories), and spawns the writer task. `store` is required when `cfg.sinks` has
    /// [`SinkKind::Store`]. Records a previous run left in the spool are written to the
    /// store as soon as it takes them.
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
            let mut spool = None;
            let target = match kind {
                SinkKind::Store => match &store {
                    Some(s) => {
                        if let Some(sc) = &cfg.spool {
                            let opened = Spool::open(&sc.path, sc.max_bytes).map_err(|source| {
                                StartError::Spool {
                                    path: sc.path.display().to_string(),
                                    source,
                                }
                            })?;
                            metrics.spool_bytes.set(gauge(opened.pending_bytes()));
                            if opened.pending_bytes() > 0 {
                                tracing::info!(
                                    path = %opened.path().display(),
                                    bytes = opened.pending_bytes(),
                                    "audit spool holds records of an earlier run; writing them to the store"
                                );
                            }
                            spool = Some(SpoolSlot {
                                spool: Some(opened),
                                fail_closed: matches!(cfg.on_full, OnFull::FailClosed),
                                last_log: None,
                            });
                        }
                        Target::Store(s.clone())
                    }
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
            let mut slot = Slot::new(*kind, target);
            if spool.as_ref().is_some_and(|s| s.pending_bytes() > 0) {
                // Write what an earlier run spooled as soon as the writer starts.
                slot.retry_at = Some(Instant::now());
            }
            slot.spool = spool;
            sinks.push(slot);
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
    /// Records of failed batches, oldest first, written before anything newer. With a
    /// spool: only records the full spool refused under `fail_closed`, held in memory.
    pending: Vec<AuditRow>,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_log: Option<Instant>,
    unlogged: u64,
    /// The store sink's spool, when configured.
    spool: Option<SpoolSlot>,
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
            spool: None,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }

    /// Bytes waiting in the spool.
    fn spooled(&self) -> u64 {
        self.spool.as_ref().map_or(0, SpoolSlot::pending_bytes)
    }

    /// Whether records wait for this sink (in memory or in the spool).
    fn has_backlog(&self) -> bool {
        !self.pending.is_empty() || self.spooled() > 0
    }

    /// A write succeeded: back to normal.
    fn succeeded(&mut self, n: usize) {
        if self.retry_at.is_some() && !self.has_backlog() {
            tracing::info!(
                sink = self.kind.as_str(),
                records = n,
                "audit sink recovered"
            );
        }
        self.backoff = MIN_BACKOFF;
        self.retry_at = None;
    }

    /// A write failed: retry after the backoff.
    fn failed(&mut self, error: &str) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        log_failure(self, error);
    }
}

/// The store sink's spool and what it needs to decide about refused records.
struct SpoolSlot {
    /// `None` while a blocking operation holds it, or after that operation panicked.
    spool: Option<Spool>,
    /// `on_full = fail_closed`: records the full spool refuses are held in memory and the
    /// writer stops taking new ones (the queue fills, requests are refused) rather than
    /// dropping them.
    fail_closed: bool,
    last_log: Option<Instant>,
}

impl SpoolSlot {
    fn pending_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, Spool::pending_bytes)
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
            // A saturated writer (fail_closed, spool full, store down) takes nothing more,
            // so the queue fills and the proxy refuses requests; while closing it takes
            // everything (what cannot be kept is counted as dropped).
            let take = closing || !self.saturated();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_max), if take => {
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
            if slot.spool.is_some() {
                write_spooled(slot, batch, &self.metrics, &self.jsonl, self.pending_cap).await;
                continue;
            }
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
            if let Some(ss) = &slot.spool {
                if let Some(spool) = ss.spool.as_ref().filter(|s| s.pending_bytes() > 0) {
                    tracing::warn!(
                        path = %spool.path().display(),
                        bytes = spool.pending_bytes(),
                        "the store is still unavailable at shutdown; records stay in the audit spool and are written at the next start"
                    );
                }
            }
        }
    }

    /// Whether the writer must stop taking records: a `fail_closed` store sink holds
    /// records its full spool refused.
    fn saturated(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| s.spool.as_ref().is_some_and(|ss| ss.fail_closed) && !s.pending.is_empty())
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
            .filter(|s| s.has_backlog())
            .filter_map(|s| s.retry_at)
            .min()
    }
}

/// The store sink with a spool: new records go straight to the store while nothing waits
/// and it takes them; otherwise (a backlog, or the write fails) they are appended to the
/// spool, behind what waits there. When due, one chunk of the backlog is written.
async fn write_spooled(
    slot: &mut Slot,
    batch: &[AuditRow],
    m: &AuditMetrics,
    jsonl: &JsonlConfig,
    cap: usize,
) {
    if !batch.is_empty() {
        if !slot.has_backlog() && slot.due(Instant::now()) {
            match slot.target.write(batch, jsonl).await {
                Ok(()) => {
                    m.add(slot.kind, "written", batch.len());
                    slot.succeeded(batch.len());
                }
                Err(e) => {
                    m.add(slot.kind, "failed", batch.len());
                    slot.failed(&e);
                    spool_rows(slot, batch, m, cap).await;
                }
            }
        } else {
            spool_rows(slot, batch, m, cap).await;
        }
    }
    if slot.has_backlog() && slot.due(Instant::now()) {
        unspool(slot, m, jsonl).await;
    }
}

/// Appends `rows` to the spool; what it refuses (full, or a disk error) is counted and,
/// under `fail_closed`, held in memory, else dropped.
async fn spool_rows(slot: &mut Slot, rows: &[AuditRow], m: &AuditMetrics, cap: usize) {
    let Some(ss) = slot.spool.as_mut() else {
        return;
    };
    let appended = match ss.spool.take() {
        Some(mut spool) => {
            let owned = rows.to_vec();
            let res = tokio::task::spawn_blocking(move || {
                let r = spool.append(&owned);
                (spool, r)
            })
            .await;
            match res {
                Ok((spool, r)) => {
                    m.spool_bytes.set(gauge(spool.pending_bytes()));
                    ss.spool = Some(spool);
                    r.map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("spool task failed: {e}")),
            }
        }
        None => Err("the spool is unavailable".to_owned()),
    };
    let (n, why) = match appended {
        Ok(n) => (n, "the spool is full (audit.spool_max_bytes)".to_owned()),
        Err(e) => (0, e),
    };
    m.add_spool("spooled", u64::try_from(n).unwrap_or(u64::MAX));
    let refused = rows.get(n..).unwrap_or_default();
    if refused.is_empty() {
        return;
    }
    m.add_spool("refused", u64::try_from(refused.len()).unwrap_or(u64::MAX));
    let now = Instant::now();
    if ss
        .last_log
        .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
    {
        ss.last_log = Some(now);
        tracing::error!(
            records = refused.len(),
            reason = %why,
            held = ss.fail_closed,
            "audit records refused by the spool"
        );
    }
    if ss.fail_closed {
        keep(slot, refused, cap, m);
    } else {
        m.add(slot.kind, "dropped", refused.len());
    }
}

/// One step of the backlog: a chunk of the spool, else the records held in memory.
async fn unspool(slot: &mut Slot, m: &AuditMetrics, jsonl: &JsonlConfig) {
    if slot.spooled() == 0 {
        let held = std::mem::take(&mut slot.pending);
        match slot.target.write(&held, jsonl).await {
            Ok(()) => {
                m.add(slot.kind, "written", held.len());
                slot.succeeded(held.len());
            }
            Err(e) => {
                m.add(slot.kind, "failed", held.len());
                slot.pending = held;
                slot.failed(&e);
            }
        }
        return;
    }
    let Some(spool) = slot.spool.as_mut().and_then(|ss| ss.spool.take()) else {
        return;
    };
    let read = tokio::task::spawn_blocking(move || {
        let mut spool = spool;
        let r = spool.read();
        (spool, r)
    })
    .await;
    let (spool, chunk) = match read {
        Ok((spool, Ok(chunk))) => (spool, chunk),
        Ok((spool, Err(e))) => {
            put_spool(slot, spool, m);
            slot.failed(&format!("reading the spool: {e}"));
            return;
        }
        Err(e) => {
            slot.failed(&format!("spool task failed: {e}"));
            return;
        }
    };
    if chunk.corrupt > 0 {
        tracing::error!(
            lines = chunk.corrupt,
            "unreadable audit spool lines skipped"
        );
    }
    let res = if chunk.rows.is_empty() {
        Ok(())
    } else {
        slot.target.write(&chunk.rows, jsonl).await
    };
    match res {
        Ok(()) => {
            let end = chunk.end;
            let consumed = tokio::task::spawn_blocking(move || {
                let mut spool = spool;
                let r = spool.consume(end);
                (spool, r)
            })
            .await;
            match consumed {
                Ok((spool, r)) => {
                    put_spool(slot, spool, m);
                    if let Err(e) = r {
                        // The chunk is stored; it will be sent again and skipped by the store.
                        slot.failed(&format!("moving the spool cursor: {e}"));
                        return;
                    }
                }
                Err(e) => {
                    slot.failed(&format!("spool task failed: {e}"));
                    return;
                }
            }
            let n = chunk.rows.len();
            m.add(slot.kind, "written", n);
            m.add_spool("unspooled", u64::try_from(n).unwrap_or(u64::MAX));
            m.add_spool("corrupt", chunk.corrupt);
            slot.succeeded(n);
            if slot.has_backlog() {
                // More waits: come back at once (the loop still takes new records between
                // chunks).
                slot.retry_at = Some(Instant::now());
            }
        }
        Err(e) => {
            put_spool(slot, spool, m);
            m.add(slot.kind, "failed", chunk.rows.len());
            slot.failed(&e);
        }
    }
}

fn put_spool(slot: &mut Slot, spool: Spool, m: &AuditMetrics) {
    m.spool_bytes.set(gauge(spool.pending_bytes()));
    if let Some(ss) = slot.spool.as_mut() {
        ss.spool = Some(spool);
    }
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
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
