//! Identity plugged into the data plane: the proxy authenticator, sub-agent
//! registration, and the token/JWKS endpoints served on the proxy port.

use crate::policy::PolicyAuthorizer;
use http::{HeaderValue, Method, StatusCode};
use portcullis_config::IdentityConfig;
use portcullis_core::{Agent, Clock, Decision, Principal, RequestKind, TokenInfo};
use portcullis_identity::{
    issue_token, validate_subagent, AuthError, AuthThrottle, Authenticator, ClientGrantRequest,
    ClientRefusal, OAuthError, Presented, Registry, ThrottleScope, ThrottleSettings, Throttled,
    TokenIssuer, TokenRequest, TOKEN_RESPONSE_HEADERS,
};
use portcullis_proxy::phases::{
    LocalAudit, LocalRefusal, LocalRequest, LocalResponse, LocalRoute, LocalService,
};
use portcullis_proxy::refusal::{AuthFailure, AuthFailureKind, Malformed};
use portcullis_store::Store;
use prometheus::{IntCounterVec, Opts, Registry as Metrics};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Most sub-agents one agent may register.
const MAX_SUBAGENTS_PER_AGENT: usize = 1000;

/// `portcullis_proxy_auth_failures_total{reason}`, `portcullis_tokens_issued_total{result}`
/// and `portcullis_auth_throttled_total{scope}`.
#[derive(Clone)]
pub struct IdentityMetrics {
    auth_failures: IntCounterVec,
    tokens_issued: IntCounterVec,
    auth_throttled: IntCounterVec,
}

impl IdentityMetrics {
    /// Registers the identity metrics.
    pub fn new(registry: &Metrics) -> prometheus::Result<Self> {
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "portcullis_proxy_auth_failures_total",
                "Proxy authentication failures by reason.",
            ),
            &["reason"],
        )?;
        let tokens_issued = IntCounterVec::new(
            Opts::new(
                "portcullis_tokens_issued_total",
                "Token endpoint outcomes (issued, or the OAuth error).",
            ),
            &["result"],
        )?;
        let auth_throttled = IntCounterVec::new(
            Opts::new(
                "portcullis_auth_throttled_total",
                "Authentication attempts refused unverified after too many failures, by the \
                 bucket that was empty (client address or claimed agent).",
            ),
            &["scope"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        registry.register(Box::new(auth_throttled.clone()))?;
        for scope in [ThrottleScope::Client, ThrottleScope::Agent] {
            auth_throttled.with_label_values(&[scope.label()]);
        }
        Ok(Self {
            auth_failures,
            tokens_issued,
            auth_throttled,
        })
    }

    fn throttled(&self, t: &Throttled) {
        self.auth_throttled
            .with_label_values(&[t.scope.label()])
            .inc();
    }
}

/// The failed-authentication throttle of `[identity]`, shared by the proxy authenticator
/// and the token endpoint.
pub fn auth_throttle(cfg: &IdentityConfig, clock: Arc<dyn Clock>) -> Arc<AuthThrottle> {
    Arc::new(AuthThrottle::new(
        ThrottleSettings {
            burst: cfg.auth_failure_burst,
            per_minute: cfg.auth_failure_per_minute,
            ..ThrottleSettings::default()
        },
        clock,
    ))
}

/// The proxy's authenticator backed by the identity registry.
pub struct ProxyAuth {
    inner: Authenticator,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    registering: Arc<Mutex<HashSet<(String, String)>>>,
    sidecar: Option<String>,
}

impl ProxyAuth {
    /// An authenticator over `inner`, registering sub-agents in `store`.
    pub fn new(
        inner: Authenticator,
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: IdentityMetrics,
    ) -> Self {
        Self {
            inner,
            store,
            clock,
            metrics,
            registering: Arc::default(),
            sidecar: None,
        }
    }

    /// Sidecar mode: loopback clients without credentials act as `agent`.
    pub fn with_sidecar(mut self, agent: Option<String>) -> Self {
        self.sidecar = agent;
        self
    }

    /// The sidecar agent's principal, checked like any credential (status, mode).
    fn sidecar_principal(&self, agent: &str) -> Result<Principal, AuthError> {
        let principal = self
            .inner
            .registry()
            .snapshot()
            .get(agent)
            .map(|e| e.principal().clone());
        match principal {
            Some(p) => self.inner.recheck(&p),
            None => self.inner.authenticate(None),
        }
    }
}

/// An identity failure as the data plane answers it.
fn auth_failure(e: &AuthError) -> AuthFailure {
    let kind = match e {
        AuthError::AgentDisabled => AuthFailureKind::Disabled,
        AuthError::Throttled(t) => AuthFailureKind::Throttled {
            retry_after_secs: t.retry_after_secs,
        },
        _ => AuthFailureKind::Unauthenticated,
    };
    AuthFailure {
        kind,
        code: e.code(),
        detail: e.to_api_error().detail,
        reason: e.reason(),
    }
}

impl portcullis_proxy::phases::Authenticator for ProxyAuth {
    fn authenticate(
        &self,
        proxy_authorization: Option<&HeaderValue>,
        client: SocketAddr,
    ) -> Result<Principal, AuthFailure> {
        let result = match sidecar_agent(self.sidecar.as_deref(), proxy_authorization, client) {
            Some(agent) => self.sidecar_principal(agent),
            None => self
                .inner
                .authenticate_from(proxy_authorization.map(|v| v.as_bytes()), client.ip()),
        };
        result.map_err(|e| {
            self.metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
            if let AuthError::Throttled(t) = &e {
                self.metrics.throttled(t);
            }
            auth_failure(&e)
        })
    }

    fn recheck(&self, principal: &Principal) -> Result<Principal, AuthFailure> {
        self.inner.recheck(principal).map_err(|e| {
            self.metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
            auth_failure(&e)
        })
    }

    fn subagent(&self, principal: &Principal, value: &HeaderValue) -> Result<String, Malformed> {
        let name = validate_subagent(value.as_bytes())
            .map_err(|e| Malformed::Subagent {
                code: "invalid_subagent",
                detail: e.to_string(),
            })?
            .to_owned();
        let registry = self.inner.registry();
        let parent = principal.agent_id.to_string();
        if registry.subagent(&parent, &name).is_some() {
            return Ok(name);
        }
        let snapshot = registry.snapshot();
        let count = snapshot
            .agents()
            .iter()
            .filter(|a| a.parent.as_deref() == Some(parent.as_str()))
            .count();
        if count >= MAX_SUBAGENTS_PER_AGENT {
            return Err(Malformed::Subagent {
                code: "too_many_subagents",
                detail: format!(
                    "an agent may register at most {MAX_SUBAGENTS_PER_AGENT} sub-agents"
                ),
            });
        }
        // Register off the request path: persist first, then publish to the registry.
        let key = (parent.clone(), name.clone());
        let fresh = self
            .registering
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(false);
        if fresh {
            let store = self.store.clone();
            let registry = registry.clone();
            let now = self.clock.unix_secs();
            let registering = self.registering.clone();
            tokio::spawn(async move {
                register_subagent(store, registry, key.clone(), now).await;
                if let Ok(mut s) = registering.lock() {
                    s.remove(&key);
                }
            });
        }
        Ok(name)
    }
}

/// The sidecar agent a request is attributed to: only without credentials and only
/// from loopback (IPv4-mapped loopback included, for dual-stack listeners).
fn sidecar_agent<'a>(
    sidecar: Option<&'a str>,
    proxy_authorization: Option<&HeaderValue>,
    client: SocketAddr,
) -> Option<&'a str> {
    let agent = sidecar?;
    (proxy_authorization.is_none() && client.ip().to_canonical().is_loopback()).then_some(agent)
}

async fn register_subagent(store: Store, registry: Arc<Registry>, key: (String, String), now: u64) {
    let (parent, name) = key;
    match store.register_subagent(&parent, &name, now).await {
        Ok(agent) => {
            info!(agent = %parent, subagent = %name, "sub-agent registered");
            registry.upsert(agent);
        }
        Err(e) => {
            warn!(agent = %parent, subagent = %name, error = %e, "sub-agent registration failed")
        }
    }
}

/// `POST /oauth/token` and `GET /.well-known/jwks.json` on the proxy port.
pub struct TokenService {
    registry: Arc<Registry>,
    issuer: Arc<TokenIssuer>,
    jwks: serde_json::Value,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    policy: Option<Arc<PolicyAuthorizer>>,
    throttle: Option<Arc<AuthThrottle>>,
}

impl TokenService {
    /// The token endpoint and public keys of `issuer`, deciding scopes with `policy`.
    pub fn new(
        registry: Arc<Registry>,
        issuer: Arc<TokenIssuer>,
        jwks: serde_json::Value,
        clock: Arc<dyn Clock>,
        metrics: IdentityMetrics,
        policy: Option<Arc<PolicyAuthorizer>>,
    ) -> Self {
        Self {
            registry,
            issuer,
            jwks,
            clock,
            metrics,
            policy,
            throttle: None,
        }
    }

    /// Throttles failed client authentications (shared with the proxy authenticator), and
    /// remembers issued tokens as known good so they pass a throttled address.
    pub fn with_throttle(mut self, throttle: Arc<AuthThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    fn check_policy(
        &self,
        grant: &ClientGrantRequest,
    ) -> Result<(), (OAuthError, Option<Arc<Decision>>)> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let snapshot = self.registry.snapshot();
        let Some(entry) = snapshot.get(&grant.agent.id) else {
            return Err((OAuthError::invalid_client("unknown client"), None));
        };
        let mut principal = entry.principal().clone();
        principal.scopes = Arc::from(grant.scopes.clone());
        principal.token = Some(Arc::new(TokenInfo {
            scopes: grant.scopes.clone(),
            exp: self.clock.unix_secs() + grant.agent.token_ttl_secs,
            jti: String::new(),
        }));
        let d = policy.decide_token(&principal);
        if d.allowed {
            return Ok(());
        }
        let reason = d
            .reasons
            .first()
            .cloned()
            .unwrap_or_else(|| "denied by policy".to_owned());
        let e = OAuthError::scope_denied(format!("{reason} (decision {})", d.decision_id));
        Err((e, Some(Arc::new(d))))
    }

    fn token(&self, req: &LocalRequest) -> (LocalResponse, LocalAudit) {
        let h = |n: &str| req.headers.get(n).map(|v| v.as_bytes());
        let headers: Vec<(&'static str, String)> = TOKEN_RESPONSE_HEADERS
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        let request = match TokenRequest::parse(h("content-type"), h("authorization"), &req.body) {
            Ok(r) => r,
            Err(e) => return self.refused(e, headers, None, None),
        };
        let authenticated = match &self.throttle {
            Some(t) => request.authenticate_throttled(&self.registry, req.client_addr.ip(), t),
            None => request.authenticate(&self.registry),
        };
        let grant = match authenticated {
            Ok(g) => g,
            Err(ClientRefusal {
                error,
                agent,
                throttled,
            }) => {
                if let Some(t) = &throttled {
                    self.metrics.throttled(t);
                }
                // Attributed to the agent (and its tenant) once its credentials are verified.
                return self.refused(error, headers, agent.as_deref(), None);
            }
        };
        let result = self.check_policy(&grant).and_then(|()| {
            issue_token(&grant, &self.issuer, self.clock.unix_secs()).map_err(|e| (e, None))
        });
        match result {
            Ok(issued) => {
                self.metrics
                    .tokens_issued
                    .with_label_values(&["issued"])
                    .inc();
                info!(agent = %issued.agent.id, scope = %issued.token.scope, "token issued");
                if let Some(t) = &self.throttle {
                    t.verified(
                        &issued.agent.id,
                        Presented::Token(&issued.token.access_token),
                    );
                }
                let audit = LocalAudit {
                    principal: self.principal_of(&grant.agent),
                    ..LocalAudit::default()
                };
                let resp = LocalResponse {
                    status: StatusCode::OK,
                    headers,
                    body: issued.to_json(),
                };
                (resp, audit)
            }
            Err((e, decision)) => self.refused(e, headers, Some(&grant.agent), decision),
        }
    }

    fn principal_of(&self, agent: &Agent) -> Option<Principal> {
        let snapshot = self.registry.snapshot();
        snapshot.get(&agent.id).map(|e| e.principal().clone())
    }

    /// The answer to a refused token request, and what its record says: the agent once its
    /// credentials were verified, the decision when policy refused the scope.
    fn refused(
        &self,
        e: OAuthError,
        mut headers: Vec<(&'static str, String)>,
        agent: Option<&Agent>,
        decision: Option<Arc<Decision>>,
    ) -> (LocalResponse, LocalAudit) {
        self.metrics
            .tokens_issued
            .with_label_values(&[e.result()])
            .inc();
        if let Some(w) = e.www_authenticate() {
            headers.push(("www-authenticate", w.to_owned()));
        }
        if let Some(secs) = e.retry_after_secs {
            headers.push(("retry-after", secs.to_string()));
        }
        let audit = LocalAudit {
            principal: agent.and_then(|a| self.principal_of(a)),
            decision,
            refused: Some(LocalRefusal {
                code: e.code,
                denied: e.is_denial(),
            }),
        };
        let resp = LocalResponse {
            status: StatusCode::from_u16(e.status_code())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            headers,
            body: e.to_json(),
        };
        (resp, audit)
    }
}

impl LocalService for TokenService {
    fn route(&self, method: &Method, path: &str) -> LocalRoute {
        match (method, path) {
            (&Method::POST, "/oauth/token") => LocalRoute::Audited(RequestKind::Token),
            (&Method::GET, "/.well-known/jwks.json") => LocalRoute::Unaudited,
            _ => LocalRoute::NotServed,
        }
    }

    fn handle(&self, req: LocalRequest) -> (LocalResponse, LocalAudit) {
        if req.path == "/oauth/token" {
            return self.token(&req);
        }
        let resp = LocalResponse {
            status: StatusCode::OK,
            headers: vec![("cache-control", "public, max-age=300".to_owned())],
            body: self.jwks.clone(),
        };
        (resp, LocalAudit::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_only_for_loopback_clients_without_credentials() {
        let hv = HeaderValue::from_static("Basic eDp5");
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let table = [
            (Some("bot"), None, "127.0.0.1:5000", Some("bot")),
            (Some("bot"), None, "127.8.9.1:5000", Some("bot")),
            (Some("bot"), None, "[::1]:5000", Some("bot")),
            (Some("bot"), None, "[::ffff:127.0.0.1]:5000", Some("bot")),
            (Some("bot"), None, "10.0.0.7:5000", None),
            (Some("bot"), None, "[::ffff:10.0.0.7]:5000", None),
            (Some("bot"), None, "[fe80::1]:5000", None),
            (Some("bot"), Some(&hv), "127.0.0.1:5000", None),
            (None, None, "127.0.0.1:5000", None),
        ];
        for (sidecar, header, client, want) in table {
            assert_eq!(
                sidecar_agent(sidecar, header, at(client)),
                want,
                "{client} {header:?}"
            );
        }
    }
}
