//! Shared types of Portcullis.
//!
//! Everything here is plain data with no I/O: the vocabulary that the data plane
//! (`proxy`), the decision crates (`identity`, `policy`, `limits`) and the record
//! keepers (`audit`, `admin`) use to talk to each other.
#![warn(missing_docs)]

mod agent;
mod clock;
mod decision;
mod error;
mod id;
mod offset;
mod principal;

pub use agent::{Agent, AgentLimits, AgentSource, ConfigOverrides, DEFAULT_TOKEN_TTL_SECS};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{Decision, Evaluation, PolicyMode, Verdict};
pub use error::{ApiError, ErrorEnvelope, ErrorSource, Status};
pub use id::{is_valid_id, is_valid_scope, InvalidId};
pub use offset::{InvalidOffset, UtcOffset};
pub use principal::{AgentMode, AgentStatus, Principal, RiskLevel, TokenInfo};
