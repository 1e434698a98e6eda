//! The store's integration tests, one binary: each test opens its own store (in memory or
//! in its own temporary directory). The relative-path test changes the working directory
//! and so stays a binary of its own (`tests/relative_path.rs`).

mod agents;
mod api_keys;
mod audit;
mod connect;
mod credentials;
