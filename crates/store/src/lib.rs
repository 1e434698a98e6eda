//! Persistence of Portcullis: agents and sub-agents, operator API keys, and the queryable
//! audit table.
//!
//! One schema, written in portable SQL (TEXT and BIGINT only) and applied by embedded
//! migrations at [`Store::connect`]. The backend today is SQLite (`sqlite://PATH`, WAL
//! journal, several processes may share the file); `postgres://` URLs are recognised and
//! refused until that backend is built.
//!
//! Change detection: every write to agents, credentials or API keys bumps
//! [`Store::revision`] in the same transaction, so the gateway polls one integer and
//! reloads its in-memory registry only when a CLI or admin write changed something.
#![warn(missing_docs)]

mod agents;
mod api_keys;
mod audit;
mod error;
mod migrate;
mod secret;
mod store;

pub use api_keys::{ApiKeyRecord, Role};
pub use audit::{AuditEntry, AuditPage, AuditQuery, AuditRow, MAX_AUDIT_PAGE};
pub use error::{Result, StoreError};
pub use secret::{generate_api_key, is_sha256_hex, sha256_hex, API_KEY_PREFIX};
pub use store::Store;
