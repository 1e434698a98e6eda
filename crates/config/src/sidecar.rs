//! `[sidecar]`: one agent per gateway.

use serde::{Deserialize, Serialize};

/// `[sidecar]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Requests from 127.0.0.1/::1 without `Proxy-Authorization` are attributed to this
    /// agent. Every container sharing the pod's network namespace shares this identity.
    pub agent: Option<String>,
}
