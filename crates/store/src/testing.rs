//! Test support (feature `testing`): a fresh PostgreSQL database per test.
//!
//! Tests that need PostgreSQL read a superuser URL from [`TEST_POSTGRES_ENV`]
//! (`scripts/test.sh` starts a throwaway server and sets it). When it is missing they fail,
//! naming the script: a PostgreSQL test never passes by not running.

use sqlx::{Connection, PgConnection};

/// Environment variable holding a PostgreSQL superuser URL for tests.
pub const TEST_POSTGRES_ENV: &str = "PORTCULLIS_TEST_POSTGRES_URL";

/// The server URL from [`TEST_POSTGRES_ENV`]; panics with how to get one when unset.
pub fn postgres_url() -> String {
    match std::env::var(TEST_POSTGRES_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "{TEST_POSTGRES_ENV} is not set: this test needs PostgreSQL. Run it through \
             scripts/test.sh (it starts a throwaway PostgreSQL), or `source \
             scripts/services/postgres.sh` first, or set {TEST_POSTGRES_ENV} to a superuser \
             URL such as postgres://postgres:secret@127.0.0.1:5432/postgres"
        ),
    }
}

/// `url` with its database replaced by `database` (parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[start..].find('/') {
        Some(i) => &base[..start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

/// A database created for one test and dropped (connections terminated) when this value
/// is dropped, even when the test panics.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a database with a random name on the server of [`TEST_POSTGRES_ENV`].
    pub async fn create() -> TestDatabase {
        let server = postgres_url();
        let name = format!("portcullis_test_{:016x}", rand::random::<u64>());
        let mut conn = match PgConnection::connect(&server).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {TEST_POSTGRES_ENV}: {e}"),
        };
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
        {
            panic!("cannot create test database {name}: {e}");
        }
        let _ = conn.close().await;
        let url = with_database(&server, &name);
        TestDatabase { server, name, url }
    }

    /// The URL of the test database (with the server's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: this may run inside a test's runtime
        // (which cannot block on another future) or outside any.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test database {} not dropped: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_and_parameters_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
