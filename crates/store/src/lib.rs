//! Persistence of Portcullis: agents and sub-agents, operator API keys, provider credentials
//! (secrets sealed with a key kept outside the database), and the queryable audit table.
//!
//! One schema, written in portable SQL (TEXT and BIGINT only) and applied by embedded
//! migrations at [`Store::connect`]. The backend today is SQLite (`sqlite://PATH`, WAL
//! journal, several processes may share the file); `postgres://` URLs are recognised and
//! refused until that backend is built.
//!
//! Keys: a top-level agent's id is globally unique, because the proxy authenticates with an
//! id alone (no tenant); a sub-agent's id is unique under its parent (primary key
//! `(parent, id)`, with `parent = ''` for top-level agents) and lives in its parent's tenant.
//! Nothing is ever read by tenant alone for authentication; the tenant filters listings.
//!
//! Times are passed in (`now_unix`, Unix seconds) rather than read from a clock, so callers
//! inject their [`portcullis_core::Clock`].
//!
//! Change detection: every write to agents, credentials or API keys bumps
//! [`Store::revision`] in the same transaction, so the gateway polls one integer and
//! reloads its in-memory registry only when a CLI or admin write changed something. Audit
//! inserts do not bump it.
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
mod console;
mod console_sessions;
mod credentials;
mod error;
mod migrate;
mod seal;
mod secret;
mod store;

pub use api_keys::{ApiKeyRecord, Role};
pub use audit::{AuditEntry, AuditPage, AuditQuery, AuditRow, MAX_AUDIT_PAGE};
pub use console::{
    AgentActivity, ConsoleRecord, Cursor, Dimension, RefusalRow, RequestFilter, Scope, ShadowRow,
    SubagentSeen, TokenBucket, TopRow, VerdictBucket, MAX_CONSOLE_PAGE,
};
pub use console_sessions::ConsoleSession;
pub use credentials::StoredCredential;
pub use error::{Result, StoreError};
pub use seal::{SealKey, SEAL_KEY_LEN};
pub use secret::{generate_api_key, is_sha256_hex, sha256_hex, API_KEY_PREFIX};
pub use store::Store;
