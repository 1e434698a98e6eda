//! Opening the store: URL parsing, connection options, migrations, change revision.

use crate::error::{Result, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections kept to a file database (SQLite serialises writers; readers run in parallel).
const FILE_POOL_SIZE: u32 = 4;

/// A handle on the persistent store. Cheap to clone: clones share one connection pool.
///
/// Several handles, in one process or several (the gateway and the CLI), may open the
/// same SQLite file at once; writes are serialised by SQLite and every agent, credential
/// and API-key write bumps [`Store::revision`].
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    display: String,
}

/// Where a `sqlite:` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Memory,
    File(PathBuf),
}

impl Store {
    /// Opens the store named by `url` and applies pending migrations.
    ///
    /// Accepted: `sqlite://PATH` (relative like `sqlite://data/portcullis.db` or absolute like
    /// `sqlite:///var/lib/portcullis/db`; parent directories and the file are created on
    /// first run; WAL journal, busy timeout and foreign keys on) and `sqlite::memory:`
    /// (a private in-memory database, for tests). `postgres://` URLs are recognised but
    /// refused with [`StoreError::Unsupported`]: that backend is not built yet.
    ///
    /// Several processes may open a fresh file at the same moment: the first-time steps
    /// (switching to WAL, creating the schema) are retried with a bounded backoff while
    /// another opener holds the lock, so every opener succeeds.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::open(url, true).await
    }

    /// Like [`Store::connect`], but never creates anything: a `sqlite://` file that does
    /// not exist yet is refused with [`StoreError::Missing`] naming its absolute path, and
    /// no directory or file is created. For tools (the CLI) that must work on the store a
    /// gateway uses, not on a new empty one.
    pub async fn connect_existing(url: &str) -> Result<Store> {
        Self::open(url, false).await
    }

    /// The absolute path of the database file `url` names (`None` for an in-memory store).
    /// A relative path is resolved against the current directory.
    pub fn file_path(url: &str) -> Result<Option<PathBuf>> {
        Ok(match parse_url(url)? {
            Target::Memory => None,
            Target::File(p) => Some(absolute(&p)),
        })
    }

    async fn open(url: &str, create: bool) -> Result<Store> {
        let target = parse_url(url)?;
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
            match Self::open_once(&target, create).await {
                Err(e) if e.is_busy() && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(target: &Target, create: bool) -> Result<Store> {
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
        };
        if let Err(e) = migrate(&pool).await {
            pool.close().await;
            return Err(match e {
                StoreError::Migrate(source) => StoreError::MigrateAt {
                    url: display,
                    source,
                },
                other => other,
            });
        }
        Ok(Store { pool, display })
    }

    /// A printable description of the backend, e.g. `sqlite://data/portcullis.db`
    /// (for the startup banner; never contains a password).
    pub fn describe(&self) -> &str {
        &self.display
    }

    /// The change counter: bumped in the same transaction as every write to agents,
    /// credentials or API keys, by any process sharing the database. Poll it cheaply
    /// and reload the agent list only when it differs from the last value seen.
    pub async fn revision(&self) -> Result<u64> {
        let rev: i64 = sqlx::query_scalar("SELECT revision FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(rev).map_err(|_| StoreError::corrupt("meta.revision", "negative revision"))
    }

    /// Closes every connection; pending operations finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction that takes the write lock at once (so concurrent writers
    /// queue on the busy timeout instead of failing on a stale snapshot).
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Bumps the change counter inside `tx`.
pub(crate) async fn bump_revision(tx: &mut Transaction<'static, Sqlite>) -> Result<()> {
    sqlx::query("UPDATE meta SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Applies pending migrations. Openers starting on a fresh file race to apply the same
/// migration and a loser fails inside its (rolled back) transaction; running again then
/// finds it applied. So a failure is retried while another opener made progress (more
/// migrations recorded than before the attempt), and a few more times otherwise. A lock
/// held by another opener is returned as is (busy), for [`Store::open`] to retry after a
/// pause; a persistent failure (e.g. a changed checksum) is returned.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    const STALLED_ATTEMPTS: usize = 3;
    let migrator = crate::migrate::migrator().await?;
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
fn backoff(attempt: u32) -> Duration {
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

fn parse_url(url: &str) -> Result<Target> {
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
        return Err(StoreError::Unsupported {
            url: redact(url),
            reason: "PostgreSQL backend not built yet; use sqlite://PATH",
        });
    }
    Err(invalid("expected sqlite://PATH or sqlite::memory:"))
}

/// Replaces the password of `scheme://user:password@host` with `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_urls() {
        assert_eq!(parse_url("sqlite::memory:").ok(), Some(Target::Memory));
        assert_eq!(
            parse_url("sqlite://data/portcullis.db").ok(),
            Some(Target::File(PathBuf::from("data/portcullis.db")))
        );
        assert_eq!(
            parse_url("sqlite:data.db").ok(),
            Some(Target::File(PathBuf::from("data.db")))
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/p.db").ok(),
            Some(Target::File(PathBuf::from("/var/lib/p.db")))
        );
        for bad in [
            "",
            "sqlite://",
            "sqlite:",
            "mysql://h/db",
            "sqlite://dir/",
            "sqlite://a.db?mode=ro",
            "data.db",
        ] {
            assert!(
                matches!(parse_url(bad), Err(StoreError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn postgres_is_refused_naming_url_without_password() {
        let err = parse_url("postgres://admin:hunter2@db:5432/portcullis").err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("PostgreSQL backend not built yet"), "{msg}");
        assert!(
            msg.contains("postgres://admin:***@db:5432/portcullis"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(matches!(
            parse_url("postgresql://db/p"),
            Err(StoreError::Unsupported { .. })
        ));
    }

    #[test]
    fn redaction_keeps_urls_without_password() {
        assert_eq!(redact("postgres://db/p"), "postgres://db/p");
        assert_eq!(redact("postgres://u@db/p"), "postgres://u@db/p");
        assert_eq!(redact("postgres://u:p@ss@db/p"), "postgres://u:***@db/p");
        assert_eq!(redact("no scheme"), "no scheme");
    }
}
