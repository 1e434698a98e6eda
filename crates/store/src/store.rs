//! Opening the store: URL parsing, connection options, migrations, change revision.

use crate::backend::{on_pool, on_tx, Pool, StoreOptions, Tx};
use crate::error::{Result, StoreError};
use crate::migrate::{migrator, Dialect};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections kept to a file database (SQLite serialises writers; readers run in parallel).
const FILE_POOL_SIZE: u32 = 4;

/// A handle on the persistent store. Cheap to clone: clones share one connection pool.
///
/// Several handles, in one process or several (gateway replicas and the CLI), may open the
/// same store at once; writes are serialised (SQLite's write lock, PostgreSQL's lock on the
/// revision row) and every decision-changing write bumps [`Store::revision`].
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    display: String,
}

/// Which database a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (or in-memory database): one gateway, or a few processes on
    /// one machine sharing the file.
    Sqlite,
    /// A PostgreSQL server shared by every replica.
    Postgres,
}

/// Where a store URL points.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Memory,
    File(PathBuf),
    Postgres(Box<PgConnectOptions>),
}

impl Store {
    /// Opens the store named by `url` and applies pending migrations.
    ///
    /// Accepted: `sqlite://PATH` (relative like `sqlite://data/portcullis.db` or absolute like
    /// `sqlite:///var/lib/portcullis/db`; parent directories and the file are created on
    /// first run; WAL journal, busy timeout and foreign keys on), `sqlite::memory:`
    /// (a private in-memory database, for tests) and `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (or `postgresql://`, with libpq parameters such as `?sslmode=verify-full`; the
    /// database must exist, the schema is created in it).
    ///
    /// Several processes may open a fresh store at the same moment. SQLite: the first-time
    /// steps (switching to WAL, creating the schema) are retried with a bounded backoff
    /// while another opener holds the lock. PostgreSQL: migrations run under an advisory
    /// lock, so each is applied once while the other openers wait. Every opener succeeds.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::open(url, true, &StoreOptions::default()).await
    }

    /// Like [`Store::connect`], with `options`.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store> {
        Self::open(url, true, options).await
    }

    /// Like [`Store::connect`], but never creates anything: a `sqlite://` file that does
    /// not exist yet is refused with [`StoreError::Missing`] naming its absolute path, and
    /// no directory or file is created; a PostgreSQL database without the Portcullis schema
    /// is refused with [`StoreError::NoSchema`]. For tools (the CLI) that must work on the
    /// store a gateway uses, not on a new empty one.
    pub async fn connect_existing(url: &str) -> Result<Store> {
        Self::open(url, false, &StoreOptions::default()).await
    }

    /// The absolute path of the database file `url` names (`None` for an in-memory store
    /// or a database server). A relative path is resolved against the current directory.
    pub fn file_path(url: &str) -> Result<Option<PathBuf>> {
        Ok(match parse_url(url)? {
            Target::Memory | Target::Postgres(_) => None,
            Target::File(p) => Some(absolute(&p)),
        })
    }

    /// `url` as the banner and logs may show it: a PostgreSQL URL without its password and
    /// parameters (`postgres://user@host:5432/db`), a SQLite URL as given. An unusable URL
    /// is shown with any password replaced by `***`.
    pub fn display_url(url: &str) -> String {
        match parse_url(url) {
            Ok(Target::Postgres(o)) => crate::postgres::display(&o),
            Ok(_) => url.to_owned(),
            Err(_) => redact(url),
        }
    }

    async fn open(url: &str, create: bool, options: &StoreOptions) -> Result<Store> {
        let target = parse_url(url)?;
        if let Target::Postgres(o) = &target {
            let (pool, display) = crate::postgres::open(o, create, options).await?;
            return Ok(Store {
                pool: Pool::Postgres(pool),
                display,
            });
        }
        if let (Target::File(path), false) = (&target, create) {
            if !path.is_file() {
                return Err(StoreError::Missing {
                    path: absolute(path),
                });
            }
        }
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        let mut attempt: u32 = 0;
        loop {
            match open_sqlite(&target, create).await {
                Err(e) if e.is_busy() && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// A printable description of the backend, e.g. `sqlite://data/portcullis.db` or
    /// `postgres://portcullis@db:5432/portcullis` (for the startup banner, logs and
    /// `/readyz`; never contains a password).
    pub fn describe(&self) -> &str {
        &self.display
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The change counter: bumped in the same transaction as every decision-changing write
    /// (agents, sub-agents, credentials, API keys, policy modes), by any process sharing the
    /// database. Poll it cheaply and reload only when it differs from the last value seen.
    pub async fn revision(&self) -> Result<u64> {
        let rev: i64 = on_pool!(&self.pool, |p| {
            sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
                .fetch_one(p)
                .await?
        });
        u64::try_from(rev).map_err(|_| StoreError::corrupt("meta.revision", "negative revision"))
    }

    /// Closes every connection; pending operations finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction holding the store's write lock from the start, so
    /// concurrent writers (in this process or another) queue instead of failing on a stale
    /// read: SQLite `BEGIN IMMEDIATE`; PostgreSQL locks the revision row (`FOR UPDATE`),
    /// which every decision-changing write then bumps.
    pub(crate) async fn write_tx(&self) -> Result<Tx> {
        match &self.pool {
            Pool::Sqlite(p) => Ok(Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?)),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT revision FROM meta WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                Ok(Tx::Postgres(tx))
            }
        }
    }
}

/// Bumps the change counter inside `tx` (on PostgreSQL, a trigger announces the new value
/// with NOTIFY when `tx` commits).
pub(crate) async fn bump_revision(tx: &mut Tx) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query("UPDATE meta SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Opens a SQLite target (file or memory) and migrates it.
async fn open_sqlite(target: &Target, create: bool) -> Result<Store> {
    let base = SqliteConnectOptions::new()
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .statement_cache_capacity(256);
    let (pool, display) = match target {
        Target::Memory => {
            let opts = base.in_memory(true);
            // One connection kept forever: every connection would otherwise see its
            // own, empty, in-memory database.
            let pool = SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await?;
            (pool, "sqlite::memory:".to_owned())
        }
        Target::File(path) => {
            if create {
                create_parent(path).await?;
                create_private_file(path).await?;
            }
            // WAL: readers never block the writer and other processes (the CLI) may
            // write concurrently. synchronous=NORMAL: a commit survives a crash of the
            // process; the last commits may be lost on power loss. 8 KiB pages (new files
            // only), a 16 MiB page cache per connection and in-memory statement journals
            // measured faster for batched audit inserts.
            let opts = base
                .filename(path)
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .page_size(8192)
                .pragma("cache_size", "-16384")
                .pragma("temp_store", "memory");
            let display = format!("sqlite://{}", path.display());
            let pool = SqlitePoolOptions::new()
                .max_connections(FILE_POOL_SIZE)
                .connect_with(opts)
                .await
                .map_err(|source| StoreError::Open {
                    url: display.clone(),
                    source,
                })?;
            (pool, display)
        }
        Target::Postgres(_) => {
            return Err(StoreError::invalid(
                "store url",
                "a PostgreSQL URL is not a SQLite target",
            ))
        }
    };
    if let Err(e) = migrate_sqlite(&pool).await {
        pool.close().await;
        return Err(match e {
            StoreError::Migrate(source) => StoreError::MigrateAt {
                url: display,
                source,
            },
            other => other,
        });
    }
    Ok(Store {
        pool: Pool::Sqlite(pool),
        display,
    })
}

/// Applies pending migrations. Openers starting on a fresh file race to apply the same
/// migration and a loser fails inside its (rolled back) transaction; running again then
/// finds it applied. So a failure is retried while another opener made progress (more
/// migrations recorded than before the attempt), and a few more times otherwise. A lock
/// held by another opener is returned as is (busy), for [`Store::open`] to retry after a
/// pause; a persistent failure (e.g. a changed checksum) is returned.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<()> {
    const STALLED_ATTEMPTS: usize = 3;
    let migrator = migrator(Dialect::Sqlite).await?;
    let mut stalled = 1;
    let mut applied = applied_count(pool).await;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if crate::error::migrate_busy(&e) => return Err(e.into()),
            Err(e) => {
                let now = applied_count(pool).await;
                if now > applied {
                    applied = now;
                } else if stalled < STALLED_ATTEMPTS {
                    stalled += 1;
                } else {
                    return Err(e.into());
                }
            }
        }
    }
}

/// How many migrations are recorded as applied (0 before the bookkeeping table exists).
async fn applied_count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Pause before the `attempt`-th retry of a first open: 10 ms doubling to 320 ms, with
/// up to 50% random jitter so simultaneous openers do not collide again in lock step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.clamp(1, 6).saturating_sub(1);
    let jitter = rand::random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

/// `path` made absolute against the current directory (not canonicalised: the file may not
/// exist); unchanged when the current directory is unknown.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Creates the database file readable by its owner only (it holds credential hashes and the
/// audit trail); SQLite gives its `-wal` and `-shm` files the same mode. An existing file is
/// left as it is.
async fn create_private_file(path: &Path) -> Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

async fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })
        }
        _ => Ok(()),
    }
}

pub(crate) fn parse_url(url: &str) -> Result<Target> {
    let invalid = |reason| StoreError::InvalidUrl {
        url: redact(url),
        reason,
    };
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Ok(Target::Memory);
    }
    if let Some(rest) = url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            return Err(invalid("missing database path after sqlite://"));
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(invalid("query parameters are not supported"));
        }
        if rest.contains('\0') {
            return Err(invalid("path contains a NUL byte"));
        }
        if rest.ends_with('/') {
            return Err(invalid("path names a directory, not a database file"));
        }
        return Ok(Target::File(PathBuf::from(rest)));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        // sqlx's own short form, `sqlite:data.db`.
        return parse_url(&format!("sqlite://{rest}")).map_err(|_| invalid("bad sqlite: path"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if url.contains('\0') {
            return Err(invalid("URL contains a NUL byte"));
        }
        return match PgConnectOptions::from_str(url) {
            Ok(o) if o.get_database().is_some_and(|d| !d.is_empty()) => {
                Ok(Target::Postgres(Box::new(o)))
            }
            Ok(_) => Err(invalid(
                "name the database: postgres://USER:PASSWORD@HOST:PORT/DATABASE",
            )),
            Err(_) => Err(invalid("not a valid postgres:// URL")),
        };
    }
    Err(invalid(
        "expected sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST/DATABASE",
    ))
}

/// Replaces the password of `scheme://user:password@host` with `***` and drops the query
/// (it may carry `password=`).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: &str) -> Option<PathBuf> {
        match parse_url(url) {
            Ok(Target::File(p)) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn parses_sqlite_urls() {
        assert!(matches!(parse_url("sqlite::memory:"), Ok(Target::Memory)));
        assert_eq!(
            file("sqlite://data/portcullis.db"),
            Some(PathBuf::from("data/portcullis.db"))
        );
        assert_eq!(file("sqlite:data.db"), Some(PathBuf::from("data.db")));
        assert_eq!(
            file("sqlite:///var/lib/p.db"),
            Some(PathBuf::from("/var/lib/p.db"))
        );
        for bad in [
            "",
            "sqlite://",
            "sqlite:",
            "mysql://h/db",
            "sqlite://dir/",
            "sqlite://a.db?mode=ro",
            "data.db",
            "postgres://u:pw@db:5432",
            "postgres://u:pw@db:5432/",
            "postgres://u:pw@db:notaport/p",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn postgres_urls_parse_and_display_without_secrets() {
        for url in [
            "postgres://admin:hunter2@db:5433/portcullis",
            "postgresql://admin:hunter2@db:5433/portcullis?sslmode=require&application_name=x",
            "postgres://admin@db:5433/portcullis?password=hunter2",
        ] {
            assert!(matches!(parse_url(url), Ok(Target::Postgres(_))), "{url}");
            let shown = Store::display_url(url);
            assert_eq!(shown, "postgres://admin@db:5433/portcullis", "{url}");
        }
        let err = parse_url("postgres://admin:hunter2@db:5432/").err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("postgres://admin:***@db:5432/"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn redaction_hides_passwords_and_parameters() {
        assert_eq!(redact("postgres://db/p"), "postgres://db/p");
        assert_eq!(redact("postgres://u@db/p"), "postgres://u@db/p");
        assert_eq!(redact("postgres://u:p@ss@db/p"), "postgres://u:***@db/p");
        assert_eq!(
            redact("postgres://u@db/p?password=x&sslmode=require"),
            "postgres://u@db/p"
        );
        assert_eq!(redact("no scheme"), "no scheme");
        assert_eq!(
            Store::display_url("mysql://u:secret@h/db"),
            "mysql://u:***@h/db"
        );
    }
}
