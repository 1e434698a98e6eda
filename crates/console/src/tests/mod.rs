//! Handler tests without a browser: a real store, control plane, policy engine and console,
//! driven with in-memory requests. Each test runs twice ([`both_backends!`]): on an
//! in-memory SQLite store and on a fresh PostgreSQL database (`PORTCULLIS_TEST_POSTGRES_URL`;
//! `scripts/test.sh` starts a server, and the test fails, never skips, without one).
//! Tenant isolation, roles, CSRF, sessions, trusted headers, escaping of agent-controlled
//! strings and the security headers.

mod harness;
mod pages;
mod security;
mod sessions;

/// Runs each named `async fn(Db)` as two tests, `sqlite` and `postgres`, in a module of the
/// function's name.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::tests::harness::Db::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::tests::harness::Db::Postgres).await;
                }
            }
        )*
    };
}

pub(crate) use both_backends;
