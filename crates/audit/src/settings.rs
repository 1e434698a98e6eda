//! Pipeline settings (the binary maps the `[audit]` config section onto these).

use std::path::PathBuf;
use std::time::Duration;

/// A destination of audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    /// The queryable store (`GET /v1/decisions`, `portcullis audit query`).
    Store,
    /// An append-only JSON Lines file with size-based rotation.
    Jsonl,
    /// One JSON line per record on stdout.
    Stdout,
}

impl SinkKind {
    /// The `sink` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Store => "store",
            SinkKind::Jsonl => "jsonl",
            SinkKind::Stdout => "stdout",
        }
    }
}

/// What [`crate::AuditHandle`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room, at most `max_wait`, then refuse.
    Block {
        /// Longest wait for room in the queue.
        max_wait: Duration,
    },
    /// Refuse at once: the proxy answers 503 `audit_unavailable`.
    FailClosed,
}

impl OnFull {
    /// The `policy` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFull::Block { .. } => "block",
            OnFull::FailClosed => "fail_closed",
        }
    }
}

/// Settings of an [`crate::AuditPipeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where records go; each appears once at most (duplicates are ignored).
    pub sinks: Vec<SinkKind>,
    /// The JSON Lines file (used when `sinks` has [`SinkKind::Jsonl`]).
    pub jsonl_path: PathBuf,
    /// Rotate the file before it would grow past this many bytes (0: never rotate).
    pub jsonl_max_bytes: u64,
    /// Rotated files kept: `path.1` (newest) … `path.N`.
    pub jsonl_keep: u32,
    /// `fsync` the file after each batch.
    pub jsonl_fsync: bool,
    /// Queue capacity in records (at least 1). Also bounds the records a failing sink
    /// keeps for retry.
    pub queue: usize,
    /// Most records written per batch (at least 1).
    pub batch_max: usize,
    /// How long the writer waits for a batch to fill before writing what it has.
    pub flush_interval: Duration,
    /// Behaviour when the queue is full.
    pub on_full: OnFull,
    /// On shutdown, how long a failing sink is still retried before its records are
    /// counted as dropped (store records go to the spool instead, when there is one).
    pub drain_timeout: Duration,
    /// Where store records wait while the store cannot take them; `None`: in memory only
    /// (up to `queue` records, then the oldest are dropped).
    pub spool: Option<SpoolSettings>,
}

/// The store sink's spool (see [`crate::AuditPipeline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// The spool file (a cursor file `PATH.offset` sits beside it).
    pub path: PathBuf,
    /// Largest file size in bytes; records beyond it are refused (counted), and with
    /// [`OnFull::FailClosed`] the writer stops taking records so the queue fills and the
    /// proxy refuses requests instead of forwarding them unaudited.
    pub max_bytes: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            sinks: vec![SinkKind::Store, SinkKind::Jsonl],
            jsonl_path: PathBuf::from("data/audit.jsonl"),
            jsonl_max_bytes: 100 * 1024 * 1024,
            jsonl_keep: 5,
            jsonl_fsync: false,
            queue: 65_536,
            batch_max: 1_000,
            flush_interval: Duration::from_millis(200),
            on_full: OnFull::Block {
                max_wait: Duration::from_millis(100),
            },
            drain_timeout: Duration::from_secs(10),
            spool: None,
        }
    }
}
