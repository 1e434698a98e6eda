//! Portcullis data plane: the proxy listener, absolute-form forwarding, CONNECT
//! tunnels, the SSRF guard and the pooled upstream client.
//!
//! Decisions are not made here: the proxy calls the phases in [`pipeline`]
//! (authenticate → authorize → forward → record) at fixed points.
#![warn(missing_docs)]

pub mod body;
pub mod conn;
mod connect;
pub mod dial;
mod forward;
pub mod framing;
pub mod headers;
pub mod ids;
pub mod inspect;
pub mod intercept;
pub mod metrics;
pub mod path;
pub mod pipeline;
mod record;
pub mod respond;
pub mod server;
pub mod ssrf;
pub mod target;
pub mod upstream;

pub use metrics::ProxyMetrics;
pub use pipeline::Pipeline;
pub use server::{serve, Shared};
