//! The token endpoint (`POST /oauth/token`, OAuth 2.0 client credentials), as pure logic.
//!
//! Two steps so the data plane can run a `kind=token` policy check in between:
//! [`authenticate_client`] parses the request and authenticates the client, then
//! [`issue_token`] signs the token. [`token_endpoint`] does both without policy.
//! The caller bounds the body size and answers with [`TOKEN_RESPONSE_HEADERS`].

use crate::auth::BASIC_B64;
use crate::form;
use crate::registry::Registry;
use crate::secret::verify_secret_digest;
use crate::throttle::{AuthThrottle, Fingerprint, Presented, Throttled};
use crate::token::{IssuedToken, TokenIssuer};
use base64::Engine as _;
use portcullis_core::{is_valid_id, is_valid_scope, Agent, AgentMode, AgentStatus, Status};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// Headers every token endpoint answer carries (RFC 6749 §5.1).
pub const TOKEN_RESPONSE_HEADERS: &[(&str, &str)] =
    &[("cache-control", "no-store"), ("pragma", "no-cache")];

/// Longest `client_id`, `client_secret` or `grant_type` value accepted.
pub const MAX_FIELD_LEN: usize = 1024;
/// Longest `scope` value accepted.
pub const MAX_SCOPE_LEN: usize = 8192;
/// Most scopes one request may ask for.
pub const MAX_REQUESTED_SCOPES: usize = 64;
const MAX_FORM_PAIRS: usize = 32;

/// A token endpoint error: RFC 6749 §5.2 fields plus DESIGN's `detail` and `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error}: {error_description}")]
pub struct OAuthError {
    /// HTTP status (bad request, unauthorized, forbidden; internal if signing fails).
    pub status: Status,
    /// OAuth error code (`invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type`, `invalid_scope`, `server_error`).
    pub error: &'static str,
    /// Human readable description (RFC 6749 charset: no quotes or backslashes).
    pub error_description: Cow<'static, str>,
    /// Machine code for the JSON `code` field (the OAuth code, `agent_disabled` or
    /// `auth_throttled`).
    pub code: &'static str,
    /// Seconds to wait before retrying, answered as `Retry-After` (429 only).
    pub retry_after_secs: Option<u64>,
}

impl OAuthError {
    fn new(status: Status, error: &'static str, desc: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            error,
            error_description: desc.into(),
            code: error,
            retry_after_secs: None,
        }
    }

    /// 429 for a throttled client (`temporarily_unavailable`, code `auth_throttled`), with
    /// the seconds to wait; the same whichever bucket refused.
    pub fn throttled(t: &Throttled) -> Self {
        let mut e = Self::new(
            Status::TooManyRequests,
            "temporarily_unavailable",
            "too many failed authentication attempts; retry later",
        );
        e.code = "auth_throttled";
        e.retry_after_secs = Some(t.retry_after_secs.max(1));
        e
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(desc: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Status::BadRequest, "invalid_request", desc)
    }

    /// 401 `invalid_client`.
    pub fn invalid_client(desc: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Status::Unauthorized, "invalid_client", desc)
    }

    /// 403 `invalid_scope`: a scope the agent may not have, or a `kind=token` policy denial.
    pub fn scope_denied(desc: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Status::Forbidden, "invalid_scope", desc)
    }

    /// The JSON body: `error`, `error_description`, `detail`, `code`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": self.error,
            "error_description": self.error_description,
            "detail": self.error_description,
            "code": self.code,
        })
    }

    /// The serialised JSON body with a trailing newline.
    pub fn to_body(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Whether the refusal is a decision against the client (a scope it may not have, a
    /// disabled agent) rather than a failure to authenticate or a malformed request.
    pub fn is_denial(&self) -> bool {
        matches!(self.code, "invalid_scope" | "agent_disabled")
    }

    /// The HTTP status code, for the layer that writes the response.
    pub fn status_code(&self) -> u16 {
        self.status.code()
    }

    /// `WWW-Authenticate` value for a 401 (RFC 6749 §5.2).
    pub fn www_authenticate(&self) -> Option<&'static str> {
        (self.status == Status::Unauthorized).then_some("Basic realm=\"portcullis\"")
    }

    /// Bounded label for `portcullis_tokens_issued_total{result}`.
    pub fn result(&self) -> &'static str {
        self.code
    }
}

/// An authenticated client asking for `scopes` (already checked against its allowed scopes).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientGrantRequest {
    /// The authenticated agent.
    pub agent: Arc<Agent>,
    /// Scopes to grant: the requested ones, or every allowed scope when none was asked for.
    pub scopes: Vec<String>,
}

/// A successful token endpoint answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenGrant {
    /// The agent the token was issued to.
    pub agent: Arc<Agent>,
    /// The issued token (serialises to the success body).
    pub token: IssuedToken,
}

impl TokenGrant {
    /// The JSON success body: `access_token`, `token_type`, `expires_in`, `scope`.
    pub fn to_json(&self) -> Value {
        json!({
            "access_token": self.token.access_token,
            "token_type": self.token.token_type,
            "expires_in": self.token.expires_in,
            "scope": self.token.scope,
        })
    }

    /// The serialised JSON body with a trailing newline.
    pub fn to_body(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A refused token request. `agent` is set when the refusal came after the client's
/// credentials were verified (suspended, revoked, disabled, a scope it may not have), so the
/// refusal can be attributed to that agent and its tenant; it is `None` when the client was
/// not authenticated (unknown client, wrong secret), whatever id it claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRefusal {
    /// The answer.
    pub error: OAuthError,
    /// The authenticated agent, if the credentials were verified.
    pub agent: Option<Arc<Agent>>,
    /// Set when the attempt was refused by the throttle, unverified.
    pub throttled: Option<Throttled>,
}

impl ClientRefusal {
    fn unauthenticated(error: OAuthError) -> Self {
        Self {
            error,
            agent: None,
            throttled: None,
        }
    }
}

/// A parsed token request whose client credentials have not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    client_id: String,
    secrets: Vec<String>,
    scopes: Option<Vec<String>>,
}

impl TokenRequest {
    /// Parses a token request.
    ///
    /// * `content_type`: `application/x-www-form-urlencoded` or `application/json`
    ///   (parameters such as `charset` ignored).
    /// * `authorization`: optional `Authorization` header; `Basic` carries
    ///   form-urlencoded `client_id:client_secret` (RFC 6749 §2.3.1). A secret is
    ///   also accepted verbatim, for clients that do not encode it.
    /// * `body`: the whole request body (`grant_type=client_credentials` required).
    ///
    /// Credentials go in the header or the body, not both (a body `client_id`
    /// equal to the Basic one is tolerated). An absent or empty `scope` asks for every
    /// allowed scope; scope names are matched exactly (case-sensitive, no wildcards).
    pub fn parse(
        content_type: Option<&[u8]>,
        authorization: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Self, OAuthError> {
        let params = parse_body(content_type, body)?;
        match params.grant_type.as_deref() {
            None | Some("") => return Err(OAuthError::invalid_request("missing grant_type")),
            Some("client_credentials") => {}
            Some(_) => {
                return Err(OAuthError::new(
                    Status::BadRequest,
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                ))
            }
        }
        let scopes = parse_scope(params.scope.as_deref())?;
        let (client_id, secrets) = client_credentials(authorization, &params)?;
        Ok(Self {
            client_id,
            secrets,
            scopes,
        })
    }

    /// The client id the request claims (not authenticated yet).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The secret candidates the request presents (the Basic password form-decoded and
    /// verbatim, or the body's `client_secret`); one of them must match.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Authenticates the client against `registry`, then checks its status, mode and the
    /// requested scopes.
    pub fn authenticate(&self, registry: &Registry) -> Result<ClientGrantRequest, ClientRefusal> {
        let entry = if is_valid_id(&self.client_id) {
            registry.entry(&self.client_id)
        } else {
            None
        };
        let entry = match entry {
            Some(e) if e.agent.parent.is_none() => e,
            _ => {
                return Err(ClientRefusal::unauthenticated(OAuthError::invalid_client(
                    "client authentication failed",
                )))
            }
        };
        let ok = match &entry.secret_digest {
            // Check every candidate so timing does not depend on which one matched.
            Some(d) => self
                .secrets
                .iter()
                .fold(false, |acc, s| verify_secret_digest(s, d) | acc),
            None => false,
        };
        if !ok {
            return Err(ClientRefusal::unauthenticated(OAuthError::invalid_client(
                "client authentication failed",
            )));
        }
        let refuse = |error: OAuthError| ClientRefusal {
            error,
            agent: Some(entry.agent.clone()),
            throttled: None,
        };
        match entry.agent.status {
            AgentStatus::Active => {}
            AgentStatus::Suspended => {
                return Err(refuse(OAuthError::invalid_client("client suspended")))
            }
            AgentStatus::Revoked => {
                return Err(refuse(OAuthError::invalid_client("client revoked")))
            }
        }
        if entry.agent.mode == AgentMode::Disabled {
            let mut e = OAuthError::new(Status::BadRequest, "invalid_grant", "agent disabled");
            e.code = "agent_disabled";
            return Err(refuse(e));
        }
        let allowed = &entry.agent.allowed_scopes;
        let scopes = match &self.scopes {
            None => allowed.clone(),
            Some(req) => {
                if let Some(bad) = req.iter().find(|s| !allowed.contains(s)) {
                    return Err(refuse(OAuthError::scope_denied(format!(
                        "scope {bad} is not allowed for this client"
                    ))));
                }
                req.clone()
            }
        };
        Ok(ClientGrantRequest {
            agent: entry.agent.clone(),
            scopes,
        })
    }
}

impl TokenRequest {
    /// [`TokenRequest::authenticate`] for a request from `client`, throttled: a client
    /// address or claimed `client_id` with too many failed attempts is refused (429
    /// `auth_throttled`) without its secret being verified, unless the secret is one verified
    /// recently ([`AuthThrottle`]). A wrong secret counts against both; an unknown client
    /// against its claimed id only; a success remembers the secret that matched.
    pub fn authenticate_throttled(
        &self,
        registry: &Registry,
        client: IpAddr,
        throttle: &AuthThrottle,
    ) -> Result<ClientGrantRequest, ClientRefusal> {
        let claimed = is_valid_id(&self.client_id).then_some(self.client_id.as_str());
        let fingerprints: Vec<Fingerprint> = claimed
            .map(|agent| {
                self.secrets
                    .iter()
                    .map(|secret| Presented::Secret { agent, secret }.fingerprint())
                    .collect()
            })
            .unwrap_or_default();
        if let Err(t) = throttle.check(client, claimed, &fingerprints) {
            return Err(ClientRefusal {
                error: OAuthError::throttled(&t),
                agent: None,
                throttled: Some(t),
            });
        }
        let registered = claimed
            .and_then(|id| registry.entry(id))
            .is_some_and(|e| e.agent.parent.is_none());
        let result = self.authenticate(registry);
        match &result {
            Ok(grant) => {
                let matched = grant.agent.secret_sha256.as_deref().and_then(|h| {
                    self.secrets
                        .iter()
                        .find(|s| crate::secret::verify_secret(s, h))
                });
                if let Some(secret) = matched {
                    throttle.verified(
                        &grant.agent.id,
                        Presented::Secret {
                            agent: &grant.agent.id,
                            secret,
                        },
                    );
                }
            }
            Err(r) if r.agent.is_none() && !registered => throttle.failed_unknown(claimed),
            Err(r) if r.agent.is_none() => throttle.failed(client, claimed, &fingerprints),
            Err(_) => {}
        }
        result
    }
}

/// Parses, authenticates and scope-checks a token request: [`TokenRequest::parse`] then
/// [`TokenRequest::authenticate`], without telling who a refusal concerns.
pub fn authenticate_client(
    content_type: Option<&[u8]>,
    authorization: Option<&[u8]>,
    body: &[u8],
    registry: &Registry,
) -> Result<ClientGrantRequest, OAuthError> {
    TokenRequest::parse(content_type, authorization, body)?
        .authenticate(registry)
        .map_err(|r| r.error)
}

/// Signs the token for an authenticated request (after any `kind=token` policy check).
pub fn issue_token(
    request: &ClientGrantRequest,
    issuer: &TokenIssuer,
    now_unix: u64,
) -> Result<TokenGrant, OAuthError> {
    let token = issuer
        .issue(&request.agent, &request.scopes, now_unix)
        .map_err(|_| OAuthError::new(Status::Internal, "server_error", "cannot sign token"))?;
    Ok(TokenGrant {
        agent: request.agent.clone(),
        token,
    })
}

/// [`authenticate_client`] then [`issue_token`], with no policy step in between.
pub fn token_endpoint(
    content_type: Option<&[u8]>,
    authorization: Option<&[u8]>,
    body: &[u8],
    registry: &Registry,
    issuer: &TokenIssuer,
    now_unix: u64,
) -> Result<TokenGrant, OAuthError> {
    let request = authenticate_client(content_type, authorization, body, registry)?;
    issue_token(&request, issuer, now_unix)
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default, deserialize_with = "json_scope")]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonScope {
    One(String),
    Many(Vec<String>),
}

/// JSON bodies may give `scope` as a string or as an array of strings.
fn json_scope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<JsonScope>::deserialize(d)? {
        None => None,
        Some(JsonScope::One(s)) => Some(s),
        Some(JsonScope::Many(v)) => Some(v.join(" ")),
    })
}

fn parse_body(content_type: Option<&[u8]>, body: &[u8]) -> Result<Params, OAuthError> {
    const EXPECTED: &str =
        "Content-Type must be application/x-www-form-urlencoded or application/json";
    let ct = content_type
        .and_then(|c| std::str::from_utf8(c).ok())
        .ok_or_else(|| OAuthError::invalid_request(EXPECTED))?;
    let media = ct.split(';').next().unwrap_or_default().trim();
    let params = if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        parse_form(body)?
    } else if media.eq_ignore_ascii_case("application/json") {
        serde_json::from_slice::<Params>(body)
            .map_err(|_| OAuthError::invalid_request("body is not a valid JSON token request"))?
    } else {
        return Err(OAuthError::invalid_request(EXPECTED));
    };
    for (name, value, max) in [
        ("grant_type", &params.grant_type, MAX_FIELD_LEN),
        ("client_id", &params.client_id, MAX_FIELD_LEN),
        ("client_secret", &params.client_secret, MAX_FIELD_LEN),
        ("scope", &params.scope, MAX_SCOPE_LEN),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > max) {
            return Err(OAuthError::invalid_request(format!("{name} is too long")));
        }
    }
    Ok(params)
}

fn parse_form(body: &[u8]) -> Result<Params, OAuthError> {
    let pairs = form::parse(body, MAX_FORM_PAIRS)
        .map_err(|_| OAuthError::invalid_request("body is not valid form-urlencoded UTF-8"))?;
    let mut p = Params::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "grant_type" => &mut p.grant_type,
            "client_id" => &mut p.client_id,
            "client_secret" => &mut p.client_secret,
            "scope" => &mut p.scope,
            _ => continue,
        };
        if slot.is_some() {
            // RFC 6749 §3.2: parameters must not be repeated.
            return Err(OAuthError::invalid_request(format!(
                "{name} given more than once"
            )));
        }
        *slot = Some(value);
    }
    Ok(p)
}

/// `None` when absent or empty; otherwise distinct, syntactically valid scopes in order.
fn parse_scope(scope: Option<&str>) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(scope) = scope else { return Ok(None) };
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !is_valid_scope(s) {
            return Err(OAuthError::new(
                Status::BadRequest,
                "invalid_scope",
                "malformed scope",
            ));
        }
        if !out.iter().any(|o| o == s) {
            if out.len() == MAX_REQUESTED_SCOPES {
                return Err(OAuthError::new(
                    Status::BadRequest,
                    "invalid_scope",
                    "too many scopes",
                ));
            }
            out.push(s.to_owned());
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// The client id and the secret candidates to try.
fn client_credentials(
    authorization: Option<&[u8]>,
    params: &Params,
) -> Result<(String, Vec<String>), OAuthError> {
    let Some(header) = authorization else {
        let id = params
            .client_id
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OAuthError::invalid_client("client authentication required"))?;
        let secret = params
            .client_secret
            .clone()
            .ok_or_else(|| OAuthError::invalid_client("client authentication required"))?;
        return Ok((id, vec![secret]));
    };
    let header = std::str::from_utf8(header)
        .map_err(|_| OAuthError::invalid_request("malformed Authorization header"))?
        .trim();
    let (scheme, param) = header
        .split_once([' ', '\t'])
        .ok_or_else(|| OAuthError::invalid_request("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "client authentication must use HTTP Basic",
        ));
    }
    let decoded = BASIC_B64
        .decode(param.trim())
        .map_err(|_| OAuthError::invalid_request("malformed Basic credentials"))?;
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| OAuthError::invalid_request("malformed Basic credentials"))?;
    let (raw_id, raw_secret) = text
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_request("malformed Basic credentials"))?;
    if raw_id.len() > MAX_FIELD_LEN || raw_secret.len() > MAX_FIELD_LEN {
        return Err(OAuthError::invalid_request("Basic credentials too long"));
    }
    let id = form::decode(raw_id.as_bytes())
        .map_err(|_| OAuthError::invalid_request("malformed Basic credentials"))?;
    if params.client_secret.is_some() {
        return Err(OAuthError::invalid_request(
            "use one client authentication method, not Basic and body credentials",
        ));
    }
    if params
        .client_id
        .as_ref()
        .is_some_and(|body_id| *body_id != id)
    {
        return Err(OAuthError::invalid_request(
            "client_id in the body differs from the Basic credentials",
        ));
    }
    let mut secrets = Vec::with_capacity(2);
    if let Ok(s) = form::decode(raw_secret.as_bytes()) {
        secrets.push(s);
    }
    if !secrets.iter().any(|s| s == raw_secret) {
        secrets.push(raw_secret.to_owned());
    }
    Ok((id, secrets))
}

#[cfg(test)]
mod tests;
