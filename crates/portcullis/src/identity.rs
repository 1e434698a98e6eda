//! Identity plugged into the data plane: the proxy authenticator, sub-agent
//! registration, and the token/JWKS endpoints served on the proxy port.

use crate::policy::PolicyAuthorizer;
use http::{HeaderValue, Method};
use portcullis_core::{ApiError, Clock, Principal, TokenInfo};
use portcullis_identity::{
    authenticate_client, issue_token, validate_subagent, Authenticator, ClientGrantRequest,
    OAuthError, Registry, TokenIssuer, TOKEN_RESPONSE_HEADERS,
};
use portcullis_proxy::pipeline::{LocalRequest, LocalResponse, LocalService};
use portcullis_store::Store;
use prometheus::{IntCounterVec, Opts, Registry as Metrics};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Most sub-agents one agent may register.
const MAX_SUBAGENTS_PER_AGENT: usize = 1000;

/// `portcullis_proxy_auth_failures_total{reason}` and `portcullis_tokens_issued_total{result}`.
#[derive(Clone)]
pub(crate) struct IdentityMetrics {
    auth_failures: IntCounterVec,
    tokens_issued: IntCounterVec,
}

impl IdentityMetrics {
    pub(crate) fn new(registry: &Metrics) -> prometheus::Result<Self> {
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
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(tokens_issued.clone()))?;
        Ok(Self {
            auth_failures,
            tokens_issued,
        })
    }
}

/// The proxy's authenticator backed by the identity registry.
pub(crate) struct ProxyAuth {
    inner: Authenticator,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    registering: Arc<Mutex<HashSet<(String, String)>>>,
}

impl ProxyAuth {
    pub(crate) fn new(
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
        }
    }
}

impl portcullis_proxy::pipeline::Authenticator for ProxyAuth {
    fn authenticate(
        &self,
        proxy_authorization: Option<&HeaderValue>,
        _client: SocketAddr,
    ) -> Result<Principal, ApiError> {
        self.inner
            .authenticate(proxy_authorization.map(|v| v.as_bytes()))
            .map_err(|e| {
                self.metrics
                    .auth_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                e.to_api_error()
            })
    }

    fn recheck(&self, principal: &Principal) -> Result<Principal, ApiError> {
        self.inner.recheck(principal).map_err(|e| {
            self.metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
            e.to_api_error()
        })
    }

    fn subagent(&self, principal: &Principal, value: &HeaderValue) -> Result<String, ApiError> {
        let name = validate_subagent(value.as_bytes())
            .map_err(|e| e.to_api_error())?
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
            return Err(ApiError::bad_request(
                "too_many_subagents",
                format!("an agent may register at most {MAX_SUBAGENTS_PER_AGENT} sub-agents"),
            ));
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
pub(crate) struct TokenService {
    registry: Arc<Registry>,
    issuer: Arc<TokenIssuer>,
    jwks: serde_json::Value,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    policy: Option<Arc<PolicyAuthorizer>>,
}

impl TokenService {
    pub(crate) fn new(
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
        }
    }

    /// The `kind=token` policy check between client authentication and issuance.
    fn check_policy(&self, grant: &ClientGrantRequest) -> Result<(), OAuthError> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let snapshot = self.registry.snapshot();
        let Some(entry) = snapshot.get(&grant.agent.id) else {
            return Err(OAuthError::invalid_client("unknown client"));
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
        Err(OAuthError::scope_denied(format!(
            "{reason} (decision {})",
            d.decision_id
        )))
    }

    fn token(&self, req: &LocalRequest) -> LocalResponse {
        let h = |n: &str| req.headers.get(n).map(|v| v.as_bytes());
        let result = authenticate_client(
            h("content-type"),
            h("authorization"),
            &req.body,
            &self.registry,
        )
        .and_then(|grant| {
            self.check_policy(&grant)?;
            issue_token(&grant, &self.issuer, self.clock.unix_secs())
        });
        let mut headers: Vec<(&'static str, String)> = TOKEN_RESPONSE_HEADERS
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        match result {
            Ok(grant) => {
                self.metrics
                    .tokens_issued
                    .with_label_values(&["issued"])
                    .inc();
                info!(agent = %grant.agent.id, scope = %grant.token.scope, "token issued");
                LocalResponse {
                    status: 200,
                    headers,
                    body: grant.to_json(),
                }
            }
            Err(e) => {
                self.metrics
                    .tokens_issued
                    .with_label_values(&[e.result()])
                    .inc();
                if let Some(w) = e.www_authenticate() {
                    headers.push(("www-authenticate", w.to_owned()));
                }
                LocalResponse {
                    status: e.status,
                    headers,
                    body: e.to_json(),
                }
            }
        }
    }
}

impl LocalService for TokenService {
    fn serves(&self, method: &Method, path: &str) -> bool {
        matches!(
            (method, path),
            (&Method::POST, "/oauth/token") | (&Method::GET, "/.well-known/jwks.json")
        )
    }

    fn handle(&self, req: LocalRequest) -> LocalResponse {
        if req.path == "/oauth/token" {
            self.token(&req)
        } else {
            LocalResponse {
                status: 200,
                headers: vec![("cache-control", "public, max-age=300".to_owned())],
                body: self.jwks.clone(),
            }
        }
    }
}
