//! Shared types of Portcullis.
//!
//! Everything here is plain data with no I/O: the vocabulary that the data plane
//! (`proxy`), the decision crates (`identity`, `policy`, `limits`) and the record
//! keepers (`audit`, `store`, `admin`) use to talk to each other — among it the one
//! audit record type ([`AuditRecord`]) that goes from the request's context to every sink,
//! the one [`RequestKind`] and the one [`Usage`].
#![warn(missing_docs)]

mod agent;
mod clock;
mod decision;
mod error;
mod headers;
mod id;
mod injection;
mod mcp;
mod offset;
mod price;
mod principal;
mod record;
mod trace;
mod usage;

pub use agent::{Agent, AgentLimits, AgentSource, ConfigOverrides, DEFAULT_TOKEN_TTL_SECS};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{Decision, Evaluation, PolicyMode, Verdict};
pub use error::{ApiError, ErrorEnvelope, ErrorSource, Status};
pub use headers::wants_upgrade;
pub use id::{is_valid_id, is_valid_scope, InvalidId};
pub use injection::Injection;
pub use mcp::McpRecord;
pub use offset::{InvalidOffset, UtcOffset};
pub use price::{TokenPrice, Usd, MICROS_PER_USD};
pub use principal::{AgentMode, AgentStatus, Principal, RiskLevel, TokenInfo};
pub use record::{format_rfc3339_ms, parse_rfc3339_ms, AuditRecord, RequestKind, RECORD_FIELDS};
pub use trace::{from_hex, to_hex, TraceContext, TraceParent};
pub use usage::{Usage, UsageSource};
