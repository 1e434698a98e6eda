//! The store's error type.

use portcullis_core::ErrorSource;
use std::path::PathBuf;

/// Everything that can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL could not be understood.
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with any password redacted.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The directory holding the database could not be created.
    #[error("cannot create store directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database file could not be created.
    #[error("cannot create store file {}: {source}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database file does not exist, and the caller asked not to create it
    /// ([`crate::Store::connect_existing`]).
    #[error("no store at {}", path.display())]
    Missing {
        /// The absolute path of the missing file.
        path: PathBuf,
    },
    /// A PostgreSQL database without the Portcullis schema, opened by a caller that asked
    /// not to create anything ([`crate::Store::connect_existing`]).
    #[error("no Portcullis schema in {url}")]
    NoSchema {
        /// The store URL (no password).
        url: String,
    },
    /// The database could not be opened (not a database, permissions, locked, unreachable).
    #[error("cannot open store {url}: {source}")]
    Open {
        /// The store URL.
        url: String,
        /// The database error.
        source: sqlx::Error,
    },
    /// The schema of an existing database could not be brought up to date.
    #[error("cannot migrate store {url}: {source}")]
    MigrateAt {
        /// The store URL.
        url: String,
        /// The migration error.
        source: sqlx::migrate::MigrateError,
    },
    /// A record with the same key already exists.
    #[error("{what} {id:?} already exists")]
    Conflict {
        /// Kind of record (`agent`, `api key`).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// No record with that key (or not visible to the caller's tenant).
    #[error("{what} {id:?} not found")]
    NotFound {
        /// Kind of record (`agent`, `api key`, `audit record`).
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// A value handed to the store is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being validated.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A stored value could not be decoded (the database was edited by hand or is damaged).
    #[error("corrupt {what} in store: {reason}")]
    Corrupt {
        /// Which column or record.
        what: &'static str,
        /// Why it could not be decoded.
        reason: String,
    },
    /// Applying the schema migrations failed.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database reported an error.
    #[error("store error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Where the error comes from: a caller mistake (`Client`) or the store itself (`Internal`).
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::Conflict { .. } | Self::NotFound { .. } | Self::Invalid { .. } => {
                ErrorSource::Client
            }
            _ => ErrorSource::Internal,
        }
    }

    /// Whether another connection held a lock the operation needed (SQLITE_BUSY or
    /// SQLITE_LOCKED): retrying a little later may succeed.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Open { source, .. } | Self::Database(source) => sqlx_busy(source),
            Self::Migrate(m) | Self::MigrateAt { source: m, .. } => migrate_busy(m),
            _ => false,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl ToString) -> Self {
        Self::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
/// Whether SQLite refused because another connection holds a lock (SQLITE_BUSY or
/// SQLITE_LOCKED, any extended code). Some first-time steps (the switch to WAL, a
/// deferred transaction upgrading to a write) fail at once instead of waiting.
/// PostgreSQL errors are never "busy": its writers wait for locks.
pub(crate) fn sqlx_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db)
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
        {
            db.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}

pub(crate) fn migrate_busy(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::Execute(e) | M::ExecuteMigration(e, _) => sqlx_busy(e),
        _ => false,
    }
}
