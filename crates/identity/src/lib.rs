//! Agent identity for Portcullis: pure logic the data plane and the control plane call.
//!
//! * [`generate_secret`], [`hash_secret`], [`verify_secret`]: client secrets (32 random
//!   bytes, stored as lower-case hex SHA-256, compared in constant time).
//! * [`SigningKey`], [`load_or_generate`]: the Ed25519 token key (PKCS#8 PEM, mode 0600),
//!   its key id and the JWKS document.
//! * [`TokenIssuer`]: EdDSA access tokens (`iss`, `sub`, `tenant`, `scope`, `gen`, `iat`,
//!   `nbf`, `exp`, `jti`); verification takes `now` and never reads the wall clock.
//! * [`Registry`]: the agent snapshot behind `arc-swap`; [`Authenticator`] checks a
//!   `Proxy-Authorization` header against it on every request.
//! * [`authenticate_client`] + [`issue_token`]: the `POST /oauth/token` endpoint in two
//!   steps, so a `kind=token` policy can decide in between.
//! * [`validate_agent`], [`AgentConfigUpdate`]: field-named validation for create/update.
//!
//! No sockets; the only I/O is reading and writing the signing key file.
#![warn(missing_docs)]

mod auth;
mod form;
mod key;
mod oauth;
mod registry;
mod secret;
mod throttle;
mod token;
mod validate;

pub use auth::{
    validate_subagent, AuthError, Authenticator, SubagentError, MAX_AUTHORIZATION_LEN,
    PROXY_AUTHENTICATE, SUBAGENT_HEADER,
};
pub use key::{load_or_generate, KeyError, SigningKey};
pub use oauth::{
    authenticate_client, issue_token, token_endpoint, ClientGrantRequest, ClientRefusal,
    OAuthError, TokenGrant, TokenRequest, MAX_FIELD_LEN, MAX_REQUESTED_SCOPES, MAX_SCOPE_LEN,
    TOKEN_RESPONSE_HEADERS,
};
pub use registry::{Entry, Registry, Snapshot};
pub use secret::{generate_secret, hash_secret, parse_sha256_hex, verify_secret, SECRET_BYTES};
pub use throttle::{
    AuthThrottle, Fingerprint, Presented, ThrottleScope, ThrottleSettings, Throttled,
    DEFAULT_MAX_ENTRIES, KNOWN_GOOD_PER_AGENT, MIN_BYPASS_SECRET_LEN,
};
pub use token::{
    looks_like_jwt, Claims, IssuedToken, TokenError, TokenIssuer, CLOCK_SKEW_LEEWAY_SECS,
    MAX_TOKEN_LEN, VERIFIED_CACHE_CAPACITY,
};
pub use validate::{
    validate_agent, validate_groups, validate_id, validate_scopes, validate_tenant,
    validate_token_ttl, AgentConfigUpdate, FieldError, LimitsUpdate, UpdateError, ValidationErrors,
    MAX_GROUPS, MAX_SCOPES, MAX_TOKEN_TTL_SECS, MIN_TOKEN_TTL_SECS,
};
