//! The operator API's integration tests, one binary: each test starts its own admin
//! listener on 127.0.0.1:0 over its own store.

mod api;
mod credentials;
mod decisions;
mod policies;
