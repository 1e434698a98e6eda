//! Opening a PostgreSQL store: the pool, migrations under an advisory lock, the first
//! audit partitions.

use crate::backend::StoreOptions;
use crate::error::{Result, StoreError};
use crate::migrate::{migrator, Dialect};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;
use std::time::Duration;

/// How long an operation waits for a pooled connection. When the server is down callers get
/// an error after this, not after the operating system's TCP timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Session advisory lock held while migrations run, so replicas starting together apply
/// each migration once ("portcull" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// `postgres://user@host:port/database`: what the banner, logs and `/readyz` show (never the
/// password, nor parameters that could carry one).
pub(crate) fn display(o: &PgConnectOptions) -> String {
    let db = o.get_database().unwrap_or_default();
    match o.get_socket() {
        Some(dir) => format!(
            "postgres://{}@{}:{}/{db}",
            o.get_username(),
            dir.display(),
            o.get_port()
        ),
        None => format!(
            "postgres://{}@{}:{}/{db}",
            o.get_username(),
            o.get_host(),
            o.get_port()
        ),
    }
}

/// Connects a pool to `options` and brings the schema up to date. With `create = false`
/// (the CLI), a database without the Portcullis schema is refused instead of initialised.
pub(crate) async fn open(
    options: &PgConnectOptions,
    create: bool,
    settings: &StoreOptions,
) -> Result<(PgPool, String)> {
    let shown = display(options);
    let opts = options.clone().application_name("portcullis");
    let pool = PgPoolOptions::new()
        // Two at least: migrations run on one while another holds their lock.
        .max_connections(settings.max_connections.max(2))
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Open {
            url: shown.clone(),
            source,
        })?;
    if !create && !has_schema(&pool).await? {
        pool.close().await;
        return Err(StoreError::NoSchema { url: shown });
    }
    if let Err(e) = migrate(&pool).await {
        pool.close().await;
        return Err(match e {
            StoreError::Migrate(source) => StoreError::MigrateAt { url: shown, source },
            other => other,
        });
    }
    Ok((pool, shown))
}

/// Whether the database holds the Portcullis schema (its `meta` table).
async fn has_schema(pool: &PgPool) -> Result<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass('meta')::text")
        .fetch_one(pool)
        .await?;
    Ok(found.is_some())
}

/// Applies pending migrations while a connection of its own holds [`MIGRATION_LOCK`]: the
/// first replica migrates, the others wait on the lock and then find nothing to do. (The
/// migrator takes a lock of its own too; this one does not depend on that.) The lock's
/// connection is closed afterwards rather than returned to the pool, so the session lock
/// can never outlive this call.
async fn migrate(pool: &PgPool) -> Result<()> {
    let migrator = migrator(Dialect::Postgres).await?;
    let mut lock = pool.acquire().await?.detach();
    let locked = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await;
    let res = match locked {
        Ok(_) => migrator.run(pool).await.map_err(StoreError::from),
        Err(e) => Err(e.into()),
    };
    // Closing ends the session, which releases the lock whatever happened above.
    let _ = lock.close().await;
    res
}
