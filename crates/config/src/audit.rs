//! `[audit]`: where records go and how the queue behaves.

use crate::duration;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where audit records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// The store's audit table (queryable: `/v1/decisions`, `portcullis audit`).
    Store,
    /// An append-only JSON Lines file with size-based rotation.
    Jsonl,
    /// One JSON line per record on stdout.
    Stdout,
}

/// What happens when the audit queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOnFull {
    /// Wait up to `block_max_wait` for room, then drop the record (counted).
    #[default]
    Block,
    /// Refuse requests with 503 `audit_unavailable` while the queue is full.
    FailClosed,
}

/// How MCP call arguments are recorded (`audit.mcp_arguments`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpArguments {
    /// Not recorded.
    None,
    /// SHA-256 of the canonical JSON (arguments may hold secrets).
    #[default]
    Hash,
    /// Recorded as sent.
    Full,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sinks: any of `store`, `jsonl`, `stdout`.
    pub sinks: Vec<AuditSink>,
    /// The JSON Lines file.
    pub jsonl_path: PathBuf,
    /// Rotate the file before it grows past this many bytes (0: never).
    pub jsonl_max_bytes: u64,
    /// Rotated files kept.
    pub jsonl_keep: u32,
    /// Behaviour when the queue is full.
    pub on_full: AuditOnFull,
    /// Longest wait for queue room with `on_full = "block"`.
    #[serde(with = "duration")]
    pub block_max_wait: Duration,
    /// Queue capacity (records).
    pub queue: usize,
    /// Most records per write batch.
    pub batch_max: usize,
    /// Longest wait for a batch to fill.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Keep store records this long (e.g. `"30d"`); unset keeps them forever. PostgreSQL
    /// drops whole day partitions (a record goes once its whole day is past the
    /// retention); SQLite deletes older rows in small batches. Checked at start and hourly.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// Where store records wait while the store cannot take them (PostgreSQL down): an
    /// append-only file, written once the store is back, each record exactly once.
    pub spool_path: PathBuf,
    /// Largest spool file in bytes; 0 disables the spool (records then wait in memory only,
    /// up to `queue`). Records beyond it are refused and counted, and `on_full` applies.
    pub spool_max_bytes: u64,
    /// How MCP tool-call arguments are recorded: `none`, `hash` (default) or `full`.
    pub mcp_arguments: McpArguments,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sinks: vec![AuditSink::Store, AuditSink::Jsonl],
            jsonl_path: PathBuf::from("data/audit.jsonl"),
            jsonl_max_bytes: 100 * 1024 * 1024,
            jsonl_keep: 5,
            on_full: AuditOnFull::Block,
            block_max_wait: Duration::from_millis(100),
            queue: 65_536,
            batch_max: 1_000,
            flush_interval: Duration::from_millis(200),
            retention: None,
            spool_path: PathBuf::from("data/audit-spool.jsonl"),
            spool_max_bytes: 1024 * 1024 * 1024,
            mcp_arguments: McpArguments::Hash,
        }
    }
}
