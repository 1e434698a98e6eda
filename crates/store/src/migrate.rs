//! The schema migrations, embedded in the binary.

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// Migrations in order: (version, description, SQL). Never edit a released entry
/// (its checksum is recorded); add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "credentials",
        include_str!("../migrations/0002_credentials.sql"),
    ),
    (
        3,
        "config overrides",
        include_str!("../migrations/0003_config_overrides.sql"),
    ),
    (
        4,
        "policy revision",
        include_str!("../migrations/0004_policy_revision.sql"),
    ),
];

/// A [`MigrationSource`] over [`MIGRATIONS`], so no file is read at run time.
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(MIGRATIONS
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

/// The migrator for the embedded schema.
pub(crate) async fn migrator() -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await
}
