//! Shared harness for the end-to-end tests: the real `portcullis` binary with a
//! temporary config, a local HTTP (and TLS) origin, a raw HTTP/1.1 client,
//! and runners for `curl` and the Python clients.
//!
//! Every wait is bounded by [`TIMEOUT`]; nothing asserts on timing.
#![allow(dead_code, unreachable_pub)]

pub mod clients;
pub mod fleet;
pub mod gateway;
pub mod origin;
pub mod otlp;
pub mod raw;
pub mod server;
pub mod shared;
pub mod tls_origin;
pub mod util;
pub mod ws;

pub use clients::*;
pub use fleet::*;
pub use gateway::*;
pub use origin::*;
pub use raw::*;
pub use shared::*;
pub use util::*;
pub use ws::*;
