//! Portcullis audit trail.
//!
//! Every governed call ends as one [`AuditRecord`] (DESIGN §5): who, what, the verdict,
//! which policy and why, how long, how many tokens. Records never carry secrets.
//!
//! The data plane hands records to an [`AuditHandle`]; it never waits on disk. A bounded
//! queue feeds one batching writer task that writes each batch to every configured sink
//! (the queryable [`portcullis_store::Store`], a rotating JSON Lines file, stdout). A
//! failing sink is logged, counted and retried with backoff; it never crashes the
//! gateway. [`AuditHandle::shutdown`] drains the queue: no record accepted is lost.
//!
//! When the queue is full the configured [`OnFull`] policy applies: `block` waits a
//! bounded time, `fail_closed` refuses at once so the proxy answers 503
//! `audit_unavailable` — ideally before forwarding, by holding an [`AuditSlot`].
//!
//! When the store cannot take records (a PostgreSQL outage), they go to a spool file on
//! local disk ([`SpoolSettings`]) and are written, each exactly once, when it is back; the
//! queue keeps moving meanwhile. What a crash can lose is what was in memory: the records
//! in the queue (at most `queue`) and the batch being written (at most `batch_max`); a
//! graceful shutdown loses nothing (the queue is drained to the store, else to the spool,
//! which the next start writes).
//!
//! [`query`] turns the admin/CLI query parameters into a [`portcullis_store::AuditQuery`].

#![warn(missing_docs)]

mod metrics;
mod pipeline;
pub mod query;
mod record;
mod settings;
mod sink;
mod spool;
mod upkeep;

pub use metrics::AuditMetrics;
pub use pipeline::{AuditFull, AuditHandle, AuditPipeline, AuditSlot, StartError};
pub use query::{build_query, parse_time, QueryError};
pub use record::{format_rfc3339_ms, AuditRecord, RequestKind, RECORD_FIELDS};
pub use settings::{AuditSettings, OnFull, SinkKind, SpoolSettings};
pub use upkeep::{run_upkeep, UPKEEP_EVERY};
