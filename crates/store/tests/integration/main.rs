//! The store's integration tests, one binary. Most tests are written once, as
//! `async fn name(s: Store) -> Result<(), StoreError>`, and run against both backends by
//! [`both_backends!`]: `name::sqlite` on a private in-memory SQLite database and
//! `name::postgres` on a fresh PostgreSQL database (created from
//! `PORTCULLIS_TEST_POSTGRES_URL`, dropped afterwards; `scripts/test.sh` provides the
//! server, and the test fails, never skips, without it). Tests of one backend's own
//! behaviour (files, WAL, partitions, NOTIFY) live in `connect.rs` and `postgres.rs`. The
//! relative-path test changes the working directory and so stays a binary of its own
//! (`tests/relative_path.rs`).

mod agents;
mod api_keys;
mod audit;
mod connect;
mod console;
mod credentials;
mod policy_modes;
mod postgres;
mod retention;
mod rollup;

use portcullis_store::testing::TestDatabase;
use portcullis_store::{Store, StoreError};

/// Runs each named `async fn(Store) -> Result<(), StoreError>` as two tests, `sqlite` and
/// `postgres`, in a module of the function's name.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let store = $crate::sqlite().await;
                    if let Err(e) = super::$name(store).await {
                        panic!("{}: {e}", stringify!($name));
                    }
                }

                #[tokio::test]
                async fn postgres() {
                    let (db, store) = $crate::postgres().await;
                    let res = super::$name(store.clone()).await;
                    store.close().await;
                    drop(db);
                    if let Err(e) = res {
                        panic!("{}: {e}", stringify!($name));
                    }
                }
            }
        )*
    };
}

/// A private in-memory SQLite store.
pub(crate) async fn sqlite() -> Store {
    match Store::connect("sqlite::memory:").await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    }
}

/// A store on a fresh PostgreSQL database (dropped with the returned guard).
pub(crate) async fn postgres() -> (TestDatabase, Store) {
    let db = TestDatabase::create().await;
    match Store::connect(db.url()).await {
        Ok(s) => (db, s),
        Err(e) => panic!("connect {}: {e}", db.name()),
    }
}

/// Unwraps a store result in a test.
pub(crate) fn ok<T>(r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store: {e}"),
    }
}
