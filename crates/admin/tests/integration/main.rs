//! The operator API's integration tests, one binary: each test starts its own admin
//! listener on 127.0.0.1:0 over its own store. `shared` runs several "replicas" (control
//! planes and engines) on one store, SQLite and PostgreSQL (`scripts/test.sh` provides it).

mod api;
mod credentials;
mod decisions;
mod policies;
mod shared;
mod support;
