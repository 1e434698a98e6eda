//! Persistence of Portcullis: agents and sub-agents, operator API keys, provider credentials
//! (secrets sealed with a key kept outside the database), policy modes set at run time, and
//! the queryable audit table.
//!
//! One schema in two dialects, TEXT and BIGINT only, applied by embedded migrations at
//! [`Store::connect`] (`migrations/sqlite/` and `migrations/postgres/`, same numbering):
//!
//! - **SQLite** (`sqlite://PATH`, the embedded default): WAL journal; the gateway and the CLI
//!   may share the file.
//! - **PostgreSQL** (`postgres://...`): every replica of a shared gateway uses one database.
//!   Migrations run under an advisory lock; each decision-changing write also NOTIFYs
//!   ([`ChangeFeed`]); the audit table is partitioned by day ([`Store::maintain_audit`]).
//!
//! Backend shape: a [`Store`] holds an enum of the two sqlx pools, and each query is written
//! once and compiled for both through a `match` (see `backend.rs`): the dialects share
//! almost all of their SQL (`$N` parameters, `ON CONFLICT`, `COALESCE`), so only opening,
//! write locking, audit inserts, partitions and the change feed are written per backend.
//! sqlx's `Any` driver was the alternative; it was not chosen because its query builder
//! emits `?` placeholders PostgreSQL rejects, it cannot LISTEN, and it hides the
//! per-dialect connection settings (SQLite's WAL and busy timeout, PostgreSQL's pool
//! timeouts) that both backends need.
//!
//! Keys: a top-level agent's id is globally unique, because the proxy authenticates with an
//! id alone (no tenant); a sub-agent's id is unique under its parent (primary key
//! `(parent, id)`, with `parent = ''` for top-level agents) and lives in its parent's tenant.
//! Nothing is ever read by tenant alone for authentication; the tenant filters listings.
//!
//! Times are passed in (`now_unix`, Unix seconds) rather than read from a clock, so callers
//! inject their [`portcullis_core::Clock`].
//!
//! Change detection: every write to agents, credentials, API keys or policy modes bumps
//! [`Store::revision`] in the same transaction, so a gateway reads one integer (on a
//! PostgreSQL notification, or polling) and reloads its in-memory state only when a CLI,
//! admin or other-replica write changed something. Audit inserts do not bump it.
//!
//! ```no_run
//! # async fn demo() -> portcullis_store::Result<()> {
//! use portcullis_store::{Role, Store};
//! let store = Store::connect("sqlite://data/portcullis.db").await?;
//! let seen = store.revision().await?;
//! let agents = store.list_agents(None).await?;
//! let (_record, key) = store.create_api_key("acme", Role::Viewer, "dashboard", 1_700_000_000).await?;
//! assert!(store.revision().await? > seen);
//! # let _ = (agents, key);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod agents;
mod api_keys;
mod audit;
mod backend;
mod console;
mod console_sessions;
mod credentials;
mod error;
mod feed;
mod migrate;
mod policy_modes;
mod postgres;
mod retention;
mod rollup;
mod row;
mod seal;
mod secret;
mod spend;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use agents::Modified;
pub use api_keys::{ApiKeyRecord, Role};
pub use audit::{AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE};
pub use backend::StoreOptions;
pub use console::{
    AgentActivity, ConsoleRecord, Cursor, Dimension, RefusalRow, RequestFilter, Scope, ShadowRow,
    SubagentSeen, TokenBucket, TopRow, VerdictBucket, MAX_CONSOLE_PAGE,
};
pub use console_sessions::ConsoleSession;
pub use credentials::StoredCredential;
pub use error::{Result, StoreError};
pub use feed::{ChangeFeed, FeedEvent, CHANGES_CHANNEL};
pub use policy_modes::POLICY_MODES;
pub use retention::{AuditUpkeep, PARTITIONS_AHEAD};
pub use row::{AuditRow, RollupFacts};
pub use seal::{SealKey, SEAL_KEY_LEN};
pub use secret::{generate_api_key, is_sha256_hex, sha256_hex, API_KEY_PREFIX};
pub use spend::{CostGroup, CostRow, MAX_COST_GROUPS};
pub use store::{Backend, Store};
