//! MCP awareness for Portcullis, sans-IO: what the gateway needs to govern Model Context
//! Protocol servers reached over the streamable HTTP transport, one JSON-RPC message at a time.
//!
//! - [`message`]: parse a POST body (one message or a batch, bounded; duplicated keys refused)
//!   into messages with their kind, id, raw method, tool and `Mcp-Name` target.
//! - [`headers`]: check `Mcp-Method` / `Mcp-Name` (SEP-2243, MCP revision 2026-07-28) against
//!   the body, and whether the client accepts only SSE.
//! - [`answer`]: answer a refused body like an MCP server would (JSON-RPC error or a
//!   `CallToolResult` with `isError`, JSON or SSE).
//! - [`scan`]: read a copy of the server's answer for each id's outcome and listed tools.
//! - [`filter`]: remove tools an agent may not call from `tools/list` answers (JSON and SSE).
//! - [`sse`]: the incremental event-stream parser both use.
//! - [`audit`]: arguments as recorded (none, hash, full), session ids hashed.
//! - [`labels`]: bounded tool labels for metrics.
//!
//! No sockets, no clock: the proxy feeds bytes and asks questions.
#![warn(missing_docs)]

pub mod answer;
pub mod audit;
pub mod codes;
pub mod filter;
pub mod headers;
pub mod json;
pub mod labels;
pub mod message;
pub mod scan;
pub mod sse;

pub use answer::{Answer, OnBlock, Refused};
pub use audit::ArgumentsAudit;
pub use message::{parse_body, Body, Id, Kind, Limits, Message, ParseError, KNOWN_METHODS};
pub use scan::{Outcome, ResponseScan, ScanResult};
