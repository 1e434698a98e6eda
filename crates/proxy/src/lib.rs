//! Portcullis data plane: the proxy listener, absolute-form forwarding, CONNECT tunnels
//! (spliced or intercepted), the SSRF guard and the pooled upstream client.
//!
//! Decisions are not made here. Every request and tunnel is one [`exchange::Exchange`] (the
//! context that assembles its audit record and writes it exactly once); one admission
//! sequence (`admission.rs`) calls the [`phases`] — authenticate, authorize, limits, audit,
//! credentials — at fixed points for CONNECT, absolute-form and intercepted requests alike;
//! every refusal is a typed [`refusal::Refusal`] mapped to its answer in one place.
//! `docs/architecture.md` walks through the life cycle.
#![warn(missing_docs)]

mod admission;
pub mod body;
pub mod conn;
mod connect;
pub mod dial;
mod dispatch;
pub mod exchange;
mod forward;
pub mod framing;
pub mod headers;
pub mod ids;
pub mod inspect;
mod intercept;
mod io;
mod listener;
mod local;
pub mod mcp;
mod mcp_answer;
mod mcp_gate;
mod mcp_log;
pub mod metrics;
pub mod path;
pub mod phases;
pub mod refusal;
pub mod respond;
mod splice;
pub mod ssrf;
pub mod state;
mod tap;
pub mod target;
pub mod trace;
mod tunnel;
pub mod upstream;

pub use listener::serve;
pub use metrics::ProxyMetrics;
pub use phases::Pipeline;
pub use state::{Intercept, LeafSource, Shared};
