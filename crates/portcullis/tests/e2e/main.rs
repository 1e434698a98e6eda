//! The end-to-end suite: the real `portcullis` binary on ephemeral ports between real
//! clients (curl, the Python clients, raw sockets) and local origins. One test binary, so
//! the tree is linked once; each module is one area and keeps its own tests.
//!
//! Tests run on parallel threads: each starts its own gateway in its own temporary
//! directory on `127.0.0.1:0`, and nothing here changes process-wide state (environment,
//! working directory); child processes get their environment and directory per command.

mod common;

mod adversarial;
mod alerts;
mod audit;
mod audit_cli;
mod bundles;
mod cli_store;
mod console;
mod credentials;
mod edges;
mod identity;
mod intercept;
mod lifecycle;
mod limits;
mod mcp;
mod policy;
mod shared;
mod shared_limits;
mod sidecar;
mod spend;
mod streaming;
mod stub;
mod telemetry;
