//! The two backends behind one [`crate::Store`]: a pool per dialect, a transaction per
//! dialect, and the macros that run one piece of code on whichever is in use.
//!
//! The queries are written once: `on_pool!(&self.pool, |p| sqlx::query(SQL).bind(..)
//! .fetch_all(p).await?)` expands into a `match` whose arms compile the same body against
//! `SqlitePool` and `PgPool`, so sqlx type-checks it for both dialects (bind parameters are
//! `$N`, which both accept). Only what really differs between the dialects is written
//! twice: opening, locking for writes, audit inserts and partitions, the change feed.

use crate::error::Result;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Postgres, Row, Sqlite, Transaction};

/// Connection settings that are not part of the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most connections this process keeps to a PostgreSQL server (the change feed holds
    /// one more). Ignored for SQLite.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 8 }
    }
}

/// The connection pool of the backend in use.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A write transaction on the backend in use.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$p` bound to the pool (`&SqlitePool` or `&PgPool`).
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::backend::Pool::Sqlite($p) => $body,
            $crate::backend::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection (`&mut SqliteConnection`
/// or `&mut PgConnection`; reborrow it as `&mut *$c` for each statement).
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match $tx {
            $crate::backend::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::backend::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {on_pool, on_tx};

impl Pool {
    /// Closes every connection; pending operations finish first.
    pub(crate) async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }
}

impl Tx {
    /// Commits.
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls back.
    pub(crate) async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// The column types the schema uses (TEXT and BIGINT, each maybe NULL), read the same way
/// from a row of either backend.
pub(crate) trait Columns {
    /// A `TEXT NOT NULL` column.
    fn text(&self, col: &str) -> Result<String>;
    /// A nullable `TEXT` column.
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// A `BIGINT NOT NULL` column.
    fn int(&self, col: &str) -> Result<i64>;
    /// A nullable `BIGINT` column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}

columns_for!(SqliteRow);
columns_for!(PgRow);
