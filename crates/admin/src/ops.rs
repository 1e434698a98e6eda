//! The operations behind the operator API, shared with the console: each takes the
//! authenticated [`Operator`](crate::Operator) and makes the role and tenant checks itself,
//! so a front end cannot skip them. The JSON API (`/v1`) and the console's pages are two
//! renderings of these calls; neither holds logic of its own.

use crate::control::ControlPlane;
use crate::operator::Operator;
use portcullis_core::ApiError;

/// Agents: list, read, create (secret shown once), config changes, lifecycle actions.
pub mod agents {
    pub use crate::agents::{create, get, lifecycle, list, update_config, Action, WithSecret};
}

/// The audit trail as `/v1/decisions` serves it, and the one tenant rule for every read.
pub mod decisions {
    pub use crate::decisions::{decode_query, get, now_ms, percent_decode, query, scope};
}

/// Console reads of the audit trail: keyset pages, live updates, aggregates.
pub mod insights {
    pub use crate::insights::{activity, count, requests, shadow, subagents, usage, Usage};
}

/// Policies: list, validate, simulate, mode changes, sources.
pub mod policies {
    pub use crate::policies::{list, set_mode, simulate, source, validate};
}

/// Provider credentials: list, read, create or update, rotate the secret, delete.
pub mod credentials {
    pub use crate::credentials::{delete, get, list, put, rotate_secret};
}

/// Checks a plaintext operator API key (as the console's sign-in form receives it) the
/// way the API checks its bearer header: the same store lookup and cache.
pub async fn sign_in(cp: &ControlPlane, key: &str) -> Result<Operator, ApiError> {
    crate::operator::authenticate_key(cp.store(), &cp.keys, key).await
}
