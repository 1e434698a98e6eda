//! `[identity]`: token issuing and authentication throttling.

use crate::duration;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// `iss` of issued tokens; verified on every request.
    pub issuer: String,
    /// Default token lifetime for agents that do not set their own.
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// Ed25519 signing key (PKCS#8 PEM); generated with mode 0600 on first run.
    pub signing_key: PathBuf,
    /// On first start with an empty store, create a `demo` agent and print its secret once.
    pub create_demo_agent: bool,
    /// Failed authentications (proxy and token endpoint) allowed back to back per client
    /// address and per claimed agent before further attempts get 429 `auth_throttled`
    /// without being verified; 0 turns throttling off.
    pub auth_failure_burst: u32,
    /// Attempts regained per minute after the burst (1-6000).
    pub auth_failure_per_minute: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            issuer: "portcullis".to_owned(),
            token_ttl: Duration::from_secs(600),
            signing_key: PathBuf::from("data/signing.key"),
            create_demo_agent: true,
            auth_failure_burst: 20,
            auth_failure_per_minute: 10,
        }
    }
}
