//! EdDSA access tokens: issue and verify.
//!
//! Verification never reads the wall clock: the caller passes `now`. Expiry is
//! strict (no leeway: a token is refused from its `exp` second on); `nbf` and
//! `iat` may lie up to [`CLOCK_SKEW_LEEWAY_SECS`] in the future, to tolerate
//! clock skew between gateway replicas sharing a key.
//!
//! An Ed25519 signature check costs tens of microseconds, and an agent presents the
//! same token on every request until it expires. The issuer therefore remembers
//! tokens whose signature, header, issuer and claims it has already verified (exact
//! bytes → claims, bounded to [`VERIFIED_CACHE_CAPACITY`] entries by default); a repeat only
//! re-checks the time claims. Only tokens that passed the full check are remembered,
//! and the cache belongs to one key, so it cannot accept anything a full check
//! would refuse.

use crate::key::SigningKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use portcullis_core::Agent;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Tolerated future skew of `nbf` and `iat`, in seconds. `exp` has none.
pub const CLOCK_SKEW_LEEWAY_SECS: u64 = 5;

/// Longest token accepted for verification; ours are about 400 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Default number of verified tokens remembered; beyond it expired ones are dropped, then all.
pub const VERIFIED_CACHE_CAPACITY: usize = 10_000;

/// The claims of a Portcullis access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`identity.issuer`).
    pub iss: String,
    /// Agent id.
    pub sub: String,
    /// Agent tenant.
    pub tenant: String,
    /// Granted scopes, space separated.
    pub scope: String,
    /// Agent credential generation the token was issued for.
    pub gen: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
}

impl Claims {
    /// The granted scopes as a list.
    pub fn scopes(&self) -> Vec<String> {
        self.scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// A freshly issued token, serialised as the token endpoint's success body
/// (`access_token`, `token_type`, `expires_in`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedToken {
    /// The signed JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space separated.
    pub scope: String,
    /// The claims inside the token (for audit and metrics; not serialised).
    #[serde(skip)]
    pub claims: Claims,
}

/// Why a token was refused (or could not be issued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT of ours: shape, base64, JSON, missing claims, oversized.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than EdDSA (`none`, HS256, RS256, ...).
    #[error("token algorithm not accepted")]
    UnsupportedAlgorithm,
    /// The header names a key id that is not ours.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify with our key.
    #[error("token signature invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not this gateway.
    #[error("token issued by another issuer")]
    WrongIssuer,
    /// Signing failed (issue side only).
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Issues and verifies the gateway's access tokens.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    issuer: String,
    key: Arc<SigningKey>,
    validation: Validation,
    verified: Arc<DashMap<Box<str>, Arc<Claims>>>,
    cache_capacity: usize,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl TokenIssuer {
    /// An issuer named `issuer` (the `iss` claim) signing with `key`.
    pub fn new(issuer: impl Into<String>, key: Arc<SigningKey>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time, issuer and required claims are checked by `verify` against the
        // caller's clock; jsonwebtoken would read the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self {
            issuer: issuer.into(),
            key,
            validation,
            verified: Arc::new(DashMap::new()),
            cache_capacity: VERIFIED_CACHE_CAPACITY,
        }
    }

    /// Sets how many verified tokens are remembered (0 disables the cache).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The `iss` this issuer writes and expects.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing key (for the JWKS document).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues a token for `agent` carrying `scopes`, valid for the agent's `token_ttl_secs`
    /// (at least one second) from `now_unix`.
    pub fn issue(
        &self,
        agent: &Agent,
        scopes: &[String],
        now_unix: u64,
    ) -> Result<IssuedToken, TokenError> {
        let ttl = agent.token_ttl_secs.max(1);
        let scope = scopes.join(" ");
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: agent.id.clone(),
            tenant: agent.tenant.clone(),
            scope: scope.clone(),
            gen: agent.generation,
            iat: now_unix,
            nbf: now_unix,
            exp: now_unix.saturating_add(ttl),
            jti: URL_SAFE_NO_PAD.encode(jti),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid().to_owned());
        let access_token = jsonwebtoken::encode(&header, &claims, self.key.encoding_key())
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope,
            claims,
        })
    }

    /// Verifies a token at time `now_unix`: EdDSA only, our key, signature, `iss`,
    /// `exp` (strict), `nbf`/`iat` (within [`CLOCK_SKEW_LEEWAY_SECS`]), all claims present.
    ///
    /// Agent status and generation are checked by the caller against the registry.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN || !looks_like_jwt(token) {
            return Err(TokenError::Malformed);
        }
        let cached = self.verified.get(token).map(|c| Arc::clone(c.value()));
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.verify_signed(token)?);
                check_time(&c, now_unix)?;
                self.remember(token, c.clone(), now_unix);
                return Ok(Claims::clone(&c));
            }
        };
        check_time(&claims, now_unix)?;
        Ok(Claims::clone(&claims))
    }

    /// Number of tokens currently remembered as verified.
    pub fn verified_cache_len(&self) -> usize {
        self.verified.len()
    }

    /// Everything but time: header, key, signature, claims, issuer.
    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        // RFC 7515 §4.1.11: extensions we do not understand must be refused.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        if let Some(kid) = &header.kid {
            if kid != self.key.kid() {
                return Err(TokenError::UnknownKey);
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, self.key.decoding_key(), &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::UnsupportedAlgorithm
                }
                _ => TokenError::Malformed,
            })?;
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.exp <= claims.iat || claims.exp <= claims.nbf {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }

    fn remember(&self, token: &str, claims: Arc<Claims>, now_unix: u64) {
        if self.cache_capacity == 0 {
            return;
        }
        if self.verified.len() >= self.cache_capacity {
            self.verified.retain(|_, c| c.exp > now_unix);
            if self.verified.len() >= self.cache_capacity {
                self.verified.clear();
            }
        }
        self.verified.insert(Box::from(token), claims);
    }
}

/// `exp` strict; `nbf` and `iat` within [`CLOCK_SKEW_LEEWAY_SECS`] of `now`.
fn check_time(claims: &Claims, now_unix: u64) -> Result<(), TokenError> {
    if now_unix >= claims.exp {
        return Err(TokenError::Expired);
    }
    let horizon = now_unix.saturating_add(CLOCK_SKEW_LEEWAY_SECS);
    if claims.nbf > horizon || claims.iat > horizon {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Whether `s` has the shape of a compact JWS: three non-empty base64url
/// segments separated by dots, the first one a JSON object (`eyJ`).
pub fn looks_like_jwt(s: &str) -> bool {
    let mut parts = 0;
    for seg in s.split('.') {
        parts += 1;
        if parts > 3
            || seg.is_empty()
            || !seg
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return false;
        }
    }
    parts == 3 && s.starts_with("eyJ")
}

#[cfg(test)]
mod tests;
