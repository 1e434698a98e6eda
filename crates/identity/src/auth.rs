//! Proxy authentication: turns a `Proxy-Authorization` header into a [`Principal`],
//! checked on every call against the current registry snapshot.

use crate::registry::{Entry, Registry};
use crate::secret::verify_secret_digest;
use crate::throttle::{AuthThrottle, Fingerprint, Presented, Throttled};
use crate::token::{looks_like_jwt, Claims, TokenError, TokenIssuer};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use portcullis_core::{
    is_valid_id, AgentMode, AgentStatus, ApiError, Clock, ErrorSource, Principal, Status, TokenInfo,
};
use std::net::IpAddr;
use std::sync::Arc;

/// Value of the `Proxy-Authenticate` header sent with every 407.
pub const PROXY_AUTHENTICATE: &str = "Basic realm=\"portcullis\"";

/// Name of the sub-agent request header (stripped before forwarding).
pub const SUBAGENT_HEADER: &str = "x-portcullis-subagent";

/// Longest `Proxy-Authorization` value considered.
pub const MAX_AUTHORIZATION_LEN: usize = 8192;

/// Standard base64 accepting input with or without padding (RFC 7617 clients vary).
pub(crate) const BASIC_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why proxy authentication failed. Everything answers 407 except
/// [`AuthError::AgentDisabled`] (403 `agent_disabled`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Proxy-Authorization` header.
    #[error("proxy authentication required")]
    Missing,
    /// The header could not be parsed (scheme, base64, UTF-8, missing `:`, too long).
    #[error("malformed Proxy-Authorization: {0}")]
    Malformed(&'static str),
    /// No such agent (or an id that cannot exist).
    #[error("unknown agent")]
    UnknownAgent,
    /// A sub-agent tried to authenticate with its own credentials.
    #[error("sub-agents authenticate through their parent")]
    SubagentCredentials,
    /// Wrong client secret.
    #[error("wrong secret")]
    BadSecret,
    /// The token failed verification.
    #[error("{0}")]
    Token(TokenError),
    /// Basic with a JWT password whose `sub` differs from the user name.
    #[error("token subject does not match the user name")]
    SubjectMismatch,
    /// The token's tenant is not the agent's.
    #[error("token tenant does not match the agent")]
    TenantMismatch,
    /// The token was issued for an older (or unknown) credential generation.
    #[error("credentials rotated")]
    Rotated,
    /// The agent is suspended.
    #[error("agent suspended")]
    Suspended,
    /// The agent is revoked.
    #[error("agent revoked")]
    Revoked,
    /// The agent's mode is `disabled`.
    #[error("agent disabled")]
    AgentDisabled,
    /// Too many failed attempts from this client or for this agent; not verified.
    #[error("too many failed authentication attempts")]
    Throttled(Throttled),
}

impl AuthError {
    /// Bounded metric label for `portcullis_proxy_auth_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::UnknownAgent | Self::SubagentCredentials => "unknown_agent",
            Self::BadSecret => "bad_secret",
            Self::Token(TokenError::Expired) => "expired",
            Self::Token(_) | Self::SubjectMismatch | Self::TenantMismatch => "bad_token",
            Self::Rotated => "rotated",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
            Self::AgentDisabled => "agent_disabled",
            Self::Throttled(_) => "throttled",
        }
    }

    /// HTTP status: forbidden for a disabled agent, too many requests when throttled,
    /// else proxy authentication required.
    pub fn status(&self) -> Status {
        match self {
            Self::AgentDisabled => Status::Forbidden,
            Self::Throttled(_) => Status::TooManyRequests,
            _ => Status::ProxyAuthRequired,
        }
    }

    /// Machine code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AgentDisabled => "agent_disabled",
            Self::Throttled(_) => "auth_throttled",
            _ => "proxy_auth_required",
        }
    }

    /// Whether this failure is a wrong guess of a credential (unknown agent, wrong secret,
    /// a token that does not verify), which the throttle counts. Missing or malformed
    /// headers, expired or rotated tokens and refused states are not guesses.
    pub fn is_guess(&self) -> bool {
        match self {
            Self::UnknownAgent
            | Self::SubagentCredentials
            | Self::BadSecret
            | Self::SubjectMismatch
            | Self::TenantMismatch => true,
            Self::Token(e) => *e != TokenError::Expired,
            _ => false,
        }
    }

    /// The error as answered to the client. The detail does not say whether an
    /// agent exists; status-specific details appear only after the credential
    /// itself was verified. A 407 must also carry [`PROXY_AUTHENTICATE`].
    pub fn to_api_error(&self) -> ApiError {
        if let Self::Throttled(t) = self {
            return t.to_api_error().with("reason", self.reason());
        }
        let detail = match self {
            Self::Missing => "proxy authentication required",
            Self::Malformed(_) => "malformed Proxy-Authorization header",
            Self::Token(TokenError::Expired) => "token expired",
            Self::Token(_)
            | Self::UnknownAgent
            | Self::SubagentCredentials
            | Self::BadSecret
            | Self::SubjectMismatch
            | Self::TenantMismatch => "invalid agent credentials",
            Self::Rotated => "credentials rotated",
            Self::Suspended => "agent suspended",
            Self::Revoked => "agent revoked",
            Self::AgentDisabled => "agent disabled",
            Self::Throttled(_) => "too many failed authentication attempts; retry later",
        };
        let source = match self {
            Self::AgentDisabled => ErrorSource::Policy,
            _ => ErrorSource::Client,
        };
        ApiError::new(self.status(), self.code(), detail, source).with("reason", self.reason())
    }
}

/// Why an `X-Portcullis-Subagent` value was refused (answer 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid X-Portcullis-Subagent: {0}")]
pub struct SubagentError(pub &'static str);

impl SubagentError {
    /// The 400 answered to the client.
    pub fn to_api_error(&self) -> ApiError {
        ApiError::bad_request("invalid_subagent", self.to_string())
    }
}

/// Validates an `X-Portcullis-Subagent` header value: UTF-8 and the agent id charset
/// (`^[a-z][a-z0-9_]{1,63}$`). No trimming: surrounding spaces are refused.
pub fn validate_subagent(value: &[u8]) -> Result<&str, SubagentError> {
    if value.len() > 64 {
        return Err(SubagentError("longer than 64 bytes"));
    }
    let s = std::str::from_utf8(value).map_err(|_| SubagentError("not UTF-8"))?;
    if is_valid_id(s) {
        Ok(s)
    } else {
        Err(SubagentError("must match ^[a-z][a-z0-9_]{1,63}$"))
    }
}

/// Authenticates proxy requests against the registry, verifying tokens with the issuer
/// at the injected clock's time.
pub struct Authenticator {
    registry: Arc<Registry>,
    issuer: Arc<TokenIssuer>,
    clock: Arc<dyn Clock>,
    throttle: Option<Arc<AuthThrottle>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer.issuer())
            .field("agents", &self.registry.len())
            .finish_non_exhaustive()
    }
}

enum Credential<'a> {
    Secret(&'a str),
    Token(&'a str),
}

/// A `Proxy-Authorization` value taken apart: the user name (Basic) and the password or
/// token, owned (Basic credentials are decoded from base64).
struct Parsed {
    user: Option<String>,
    credential: String,
    token: bool,
}

impl Parsed {
    fn credential(&self) -> Credential<'_> {
        if self.token {
            Credential::Token(&self.credential)
        } else {
            Credential::Secret(&self.credential)
        }
    }

    /// The credential for the throttle, `None` for a secret without a valid agent id.
    fn presented(&self) -> Option<Presented<'_>> {
        if self.token {
            Some(Presented::Token(&self.credential))
        } else {
            let agent = self.claimed()?;
            Some(Presented::Secret {
                agent,
                secret: &self.credential,
            })
        }
    }

    /// The agent id claimed by the Basic user name, when it could be one.
    fn claimed(&self) -> Option<&str> {
        self.user.as_deref().filter(|u| is_valid_id(u))
    }
}

impl Authenticator {
    /// A new authenticator.
    pub fn new(registry: Arc<Registry>, issuer: Arc<TokenIssuer>, clock: Arc<dyn Clock>) -> Self {
        Self {
            registry,
            issuer,
            clock,
            throttle: None,
        }
    }

    /// Throttles failed authentications ([`AuthThrottle`]) in
    /// [`Authenticator::authenticate_from`].
    pub fn with_throttle(mut self, throttle: Arc<AuthThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The throttle, if any (shared with the token endpoint).
    pub fn throttle(&self) -> Option<&Arc<AuthThrottle>> {
        self.throttle.as_ref()
    }

    /// The registry consulted on every call.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The token issuer/verifier.
    pub fn issuer(&self) -> &Arc<TokenIssuer> {
        &self.issuer
    }

    /// Authenticates a `Proxy-Authorization` value (`None` when the header is absent) at
    /// the clock's current time.
    ///
    /// Accepts `Basic base64(agent_id:secret)`, `Basic base64(agent_id:<jwt>)` (the
    /// token's `sub` must equal `agent_id`) and `Bearer <jwt>`. The credential is
    /// verified first; then agent status, token generation and agent mode.
    pub fn authenticate(&self, proxy_authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        self.authenticate_at(proxy_authorization, self.clock.unix_secs())
    }

    /// [`Self::authenticate`] at an explicit time.
    pub fn authenticate_at(
        &self,
        proxy_authorization: Option<&[u8]>,
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        let parsed = parse(proxy_authorization)?;
        self.check(parsed.user.as_deref(), parsed.credential(), now_unix)
    }

    /// [`Self::authenticate`] for a request from `client`, throttled when a throttle is
    /// set: a client address or claimed agent with too many failed attempts gets
    /// [`AuthError::Throttled`] without its credential being verified, unless the credential
    /// is one verified recently (see [`AuthThrottle`]). Wrong guesses
    /// ([`AuthError::is_guess`]) count against both (one for an id that is not a registered
    /// agent counts for that id only); a success remembers the credential.
    pub fn authenticate_from(
        &self,
        proxy_authorization: Option<&[u8]>,
        client: IpAddr,
    ) -> Result<Principal, AuthError> {
        let parsed = parse(proxy_authorization)?;
        let now = self.clock.unix_secs();
        let Some(throttle) = self.throttle.as_ref().filter(|t| t.enabled()) else {
            return self.check(parsed.user.as_deref(), parsed.credential(), now);
        };
        let presented = parsed.presented();
        // One fingerprint per request, for the throttle's check and for remembering it.
        let fingerprint: Option<Fingerprint> = presented.as_ref().map(Presented::fingerprint);
        let fingerprints = fingerprint.as_slice();
        throttle
            .check(client, parsed.claimed(), fingerprints)
            .map_err(AuthError::Throttled)?;
        let result = self.check(parsed.user.as_deref(), parsed.credential(), now);
        match &result {
            Ok(p) => {
                if let (Some(c), Some(fp)) = (presented, fingerprint) {
                    throttle.verified_fingerprint(&p.agent_id, &c, fp);
                }
            }
            Err(AuthError::UnknownAgent | AuthError::SubagentCredentials) => {
                throttle.failed_unknown(parsed.claimed());
            }
            Err(e) if e.is_guess() => throttle.failed(client, parsed.claimed(), fingerprints),
            Err(_) => {}
        }
        result
    }

    /// Re-checks a principal obtained earlier (e.g. the identity bound to a tunnel)
    /// against the current snapshot, so suspension, revocation, rotation, token expiry
    /// and mode changes apply to the next request inside a tunnel too. Returns the
    /// principal refreshed with the agent's current attributes.
    pub fn recheck(&self, principal: &Principal) -> Result<Principal, AuthError> {
        self.recheck_at(principal, self.clock.unix_secs())
    }

    /// [`Self::recheck`] at an explicit time.
    pub fn recheck_at(&self, principal: &Principal, now_unix: u64) -> Result<Principal, AuthError> {
        let entry = self
            .registry
            .entry(&principal.agent_id)
            .ok_or(AuthError::UnknownAgent)?;
        if let Some(token) = &principal.token {
            if now_unix >= token.exp {
                return Err(AuthError::Token(TokenError::Expired));
            }
        }
        if principal.generation != entry.agent.generation {
            return Err(AuthError::Rotated);
        }
        check_state(&entry)?;
        Ok(match &principal.token {
            None => entry.principal.clone(),
            Some(token) => token_principal(&entry, token.clone()),
        })
    }

    fn check(
        &self,
        user: Option<&str>,
        credential: Credential<'_>,
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        match credential {
            Credential::Secret(secret) => {
                let user = user.ok_or(AuthError::Malformed("secret without agent id"))?;
                let entry = self.lookup(user)?;
                match &entry.secret_digest {
                    Some(d) if verify_secret_digest(secret, d) => {}
                    _ => return Err(AuthError::BadSecret),
                }
                check_state(&entry)?;
                Ok(entry.principal.clone())
            }
            Credential::Token(token) => {
                let claims = self
                    .issuer
                    .verify(token, now_unix)
                    .map_err(AuthError::Token)?;
                if let Some(user) = user {
                    if user != claims.sub {
                        return Err(AuthError::SubjectMismatch);
                    }
                }
                let entry = self.lookup(&claims.sub)?;
                if claims.tenant != entry.agent.tenant {
                    return Err(AuthError::TenantMismatch);
                }
                if claims.gen != entry.agent.generation {
                    return Err(AuthError::Rotated);
                }
                check_state(&entry)?;
                Ok(token_principal(&entry, Arc::new(token_info(claims))))
            }
        }
    }

    fn lookup(&self, id: &str) -> Result<Arc<Entry>, AuthError> {
        if !is_valid_id(id) {
            return Err(AuthError::UnknownAgent);
        }
        let entry = self.registry.entry(id).ok_or(AuthError::UnknownAgent)?;
        if entry.agent.parent.is_some() {
            return Err(AuthError::SubagentCredentials);
        }
        Ok(entry)
    }
}

/// Takes a `Proxy-Authorization` value apart (nothing is verified yet).
fn parse(proxy_authorization: Option<&[u8]>) -> Result<Parsed, AuthError> {
    let raw = proxy_authorization.ok_or(AuthError::Missing)?;
    if raw.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed("header too long"));
    }
    let value = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed("not UTF-8"))?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, param) = value
        .split_once([' ', '\t'])
        .ok_or(AuthError::Malformed("no credentials after the scheme"))?;
    let param = param.trim_start_matches([' ', '\t']);
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC_B64
            .decode(param)
            .map_err(|_| AuthError::Malformed("invalid base64"))?;
        let user_pass =
            String::from_utf8(decoded).map_err(|_| AuthError::Malformed("not UTF-8"))?;
        let (user, pass) = user_pass
            .split_once(':')
            .ok_or(AuthError::Malformed("no ':' in Basic credentials"))?;
        if user.is_empty() {
            return Err(AuthError::Malformed("empty user name"));
        }
        Ok(Parsed {
            user: Some(user.to_owned()),
            credential: pass.to_owned(),
            token: looks_like_jwt(pass),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Parsed {
            user: None,
            credential: param.to_owned(),
            token: true,
        })
    } else {
        Err(AuthError::Malformed("unsupported scheme"))
    }
}

/// Status, then mode: only reached once the credential is proven.
fn check_state(entry: &Entry) -> Result<(), AuthError> {
    match entry.agent.status {
        AgentStatus::Active => {}
        AgentStatus::Suspended => return Err(AuthError::Suspended),
        AgentStatus::Revoked => return Err(AuthError::Revoked),
    }
    if entry.agent.mode == AgentMode::Disabled {
        return Err(AuthError::AgentDisabled);
    }
    Ok(())
}

fn token_info(claims: Claims) -> TokenInfo {
    TokenInfo {
        scopes: claims.scopes(),
        exp: claims.exp,
        jti: claims.jti,
    }
}

/// The principal for a token: effective scopes are the token's scopes that the
/// agent is still allowed (an operator narrowing `allowed_scopes` takes effect
/// at once); `token.scopes` keeps the token's scopes verbatim.
fn token_principal(entry: &Entry, token: Arc<TokenInfo>) -> Principal {
    let allowed = &entry.agent.allowed_scopes;
    let scopes: Vec<String> = token
        .scopes
        .iter()
        .filter(|s| allowed.contains(s))
        .cloned()
        .collect();
    let mut p = entry.principal.clone();
    p.scopes = Arc::from(scopes);
    p.token = Some(token);
    p
}

#[cfg(test)]
mod tests;
