//! The schema migrations of both backends, embedded in the binary.
//!
//! One place, one numbering: `migrations/sqlite/NNNN_*.sql` and `migrations/postgres/NNNN_*.sql`
//! carry the same version for the same change, written in each dialect. Never edit a released
//! entry (its checksum is recorded in `_sqlx_migrations`); add a new one to both lists.
//! Versions need not be contiguous: a database applies every listed version it has not
//! applied yet, in order.

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// One migration: version, description, SQL.
type Entry = (i64, &'static str, &'static str);

/// SQLite migrations, in order.
const SQLITE: &[Entry] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "credentials",
        include_str!("../migrations/sqlite/0002_credentials.sql"),
    ),
    (
        3,
        "config overrides",
        include_str!("../migrations/sqlite/0003_config_overrides.sql"),
    ),
    (
        4,
        "policy revision",
        include_str!("../migrations/sqlite/0004_policy_revision.sql"),
    ),
    (
        5,
        "console sessions",
        include_str!("../migrations/sqlite/0005_console_sessions.sql"),
    ),
    (
        6,
        "policy modes",
        include_str!("../migrations/sqlite/0006_policy_modes.sql"),
    ),
    (
        7,
        "audit rollups",
        include_str!("../migrations/sqlite/0007_audit_rollups.sql"),
    ),
    (
        8,
        "cost usd",
        include_str!("../migrations/sqlite/0008_cost_usd.sql"),
    ),
];

/// PostgreSQL migrations, in order (same versions as [`SQLITE`]).
const POSTGRES: &[Entry] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "credentials",
        include_str!("../migrations/postgres/0002_credentials.sql"),
    ),
    (
        3,
        "config overrides",
        include_str!("../migrations/postgres/0003_config_overrides.sql"),
    ),
    (
        4,
        "policy revision",
        include_str!("../migrations/postgres/0004_policy_revision.sql"),
    ),
    (
        5,
        "console sessions",
        include_str!("../migrations/postgres/0005_console_sessions.sql"),
    ),
    (
        6,
        "policy modes",
        include_str!("../migrations/postgres/0006_policy_modes.sql"),
    ),
    (
        7,
        "audit rollups",
        include_str!("../migrations/postgres/0007_audit_rollups.sql"),
    ),
    (
        8,
        "cost usd",
        include_str!("../migrations/postgres/0008_cost_usd.sql"),
    ),
];

/// Which dialect's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A [`MigrationSource`] over one of the embedded lists, so no file is read at run time.
#[derive(Debug)]
struct Embedded(&'static [Entry]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator for `dialect`'s embedded schema.
pub(crate) async fn migrator(dialect: Dialect) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_versions_in_order() {
        let versions = |l: &[Entry]| l.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>();
        assert_eq!(versions(SQLITE), versions(POSTGRES));
        assert!(SQLITE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// The released SQLite migrations are byte for byte what existing databases recorded:
    /// moving them under `migrations/sqlite/` must not change a checksum.
    #[tokio::test]
    async fn released_sqlite_checksums_are_unchanged() -> Result<(), sqlx::migrate::MigrateError> {
        use sha2::{Digest, Sha384};
        let m = migrator(Dialect::Sqlite).await?;
        let expected = [(1, "6c8a422c"), (2, "6c92d076"), (3, "b8a3a846")];
        for (version, prefix) in expected {
            let found = m.iter().find(|x| x.version == version);
            let sum = found.map(|x| x.checksum.to_vec()).unwrap_or_default();
            let hex: String = sum.iter().take(4).map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, prefix, "checksum of migration {version}");
            let sql = found.map(|x| x.sql.to_string()).unwrap_or_default();
            assert_eq!(Sha384::digest(sql.as_bytes()).to_vec(), sum);
        }
        Ok(())
    }
}
