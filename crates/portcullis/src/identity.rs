//! Identity plugged into the data plane: the proxy authenticator, sub-agent
//! registration, and the token/JWKS endpoints served on the proxy port.

use crate::policy::PolicyAuthorizer;
use http::{HeaderValue, Method};
use portcullis_config::IdentityConfig;
use portcullis_core::{Agent, ApiError, Clock, Decision, Principal, TokenInfo, Verdict};
use portcullis_identity::{
    issue_token, validate_subagent, AuthError, AuthThrottle, Authenticator, ClientGrantRequest,
    ClientRefusal, OAuthError, Presented, Registry, ThrottleScope, ThrottleSettings, Throttled,
    TokenIssuer, TokenRequest, TOKEN_RESPONSE_HEADERS,
};
use portcullis_proxy::pipeline::{LocalRequest, LocalResponse, LocalService};
use portcullis_proxy::pipeline::{Record, Recorder};
use portcullis_store::Store;
use prometheus::{IntCounterVec, Opts, Registry as Metrics};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{info, warn};

/// Most sub-agents one agent may register.
const MAX_SUBAGENTS_PER_AGENT: usize = 1000;

/// `portcullis_proxy_auth_failures_total{reason}`, `portcullis_tokens_issued_total{result}`
/// and `portcullis_auth_throttled_total{scope}`.
#[derive(Clone)]
pub(crate) struct IdentityMetrics {
    auth_failures: IntCounterVec,
    tokens_issued: IntCounterVec,
    auth_throttled: IntCounterVec,
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
pub(crate) fn auth_throttle(cfg: &IdentityConfig, clock: Arc<dyn Clock>) -> Arc<AuthThrottle> {
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
pub(crate) struct ProxyAuth {
    inner: Authenticator,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    registering: Arc<Mutex<HashSet<(String, String)>>>,
    sidecar: Option<String>,
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
            sidecar: None,
        }
    }

    /// Sidecar mode: loopback clients without credentials act as `agent`.
    pub(crate) fn with_sidecar(mut self, agent: Option<String>) -> Self {
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

impl portcullis_proxy::pipeline::Authenticator for ProxyAuth {
    fn authenticate(
        &self,
        proxy_authorization: Option<&HeaderValue>,
        client: SocketAddr,
    ) -> Result<Principal, ApiError> {
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
pub(crate) struct TokenService {
    registry: Arc<Registry>,
    issuer: Arc<TokenIssuer>,
    jwks: serde_json::Value,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
    policy: Option<Arc<PolicyAuthorizer>>,
    recorder: Option<Arc<dyn Recorder>>,
    throttle: Option<Arc<AuthThrottle>>,
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
            recorder: None,
            throttle: None,
        }
    }

    /// Throttles failed client authentications (shared with the proxy authenticator), and
    /// remembers issued tokens as known good so they pass a throttled address.
    pub(crate) fn with_throttle(mut self, throttle: Arc<AuthThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Audits every token request (one record each, secrets never included).
    pub(crate) fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    fn record(&self, req: &LocalRequest, started: Instant, outcome: TokenOutcome<'_>) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let (agent, status, verdict, error, decision) = match outcome {
            TokenOutcome::Issued(agent) => (Some(agent), 200, Verdict::Allow, None, None),
            TokenOutcome::Refused(agent, e, d) => (
                agent,
                e.status_code(),
                if d.is_some() || e.status_code() == 403 {
                    Verdict::Deny
                } else {
                    Verdict::Error
                },
                Some(e.code.to_owned()),
                d,
            ),
        };
        recorder.record(Record {
            id: portcullis_proxy::ids::new_id(),
            ts_ms: self.clock.unix_secs().saturating_mul(1000),
            kind: "token",
            agent_id: agent.map(|a| Arc::from(a.id.as_str())),
            tenant: agent.map(|a| Arc::from(a.tenant.as_str())),
            subagent: None,
            provider: None,
            api: None,
            model: None,
            stream: false,
            usage: None,
            method: req.method.as_str().to_owned(),
            scheme: "http",
            host: String::new(),
            port: 0,
            path: req.path.clone(),
            verdict,
            decision,
            status,
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            upstream_ttfb_ms: None,
            bytes_in: req.body.len() as u64,
            bytes_out: 0,
            completed: true,
            client_addr: req.client_addr,
            refusal: None,
            credential: None,
            tls_intercepted: false,
        });
    }

    /// The `kind=token` policy check between client authentication and issuance.
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

    fn token(&self, req: &LocalRequest) -> LocalResponse {
        let started = Instant::now();
        let h = |n: &str| req.headers.get(n).map(|v| v.as_bytes());
        let headers: Vec<(&'static str, String)> = TOKEN_RESPONSE_HEADERS
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        let request = match TokenRequest::parse(h("content-type"), h("authorization"), &req.body) {
            Ok(r) => r,
            Err(e) => {
                self.record(req, started, TokenOutcome::Refused(None, &e, None));
                return self.refused(e, headers);
            }
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
                self.record(
                    req,
                    started,
                    TokenOutcome::Refused(agent.as_deref(), &error, None),
                );
                return self.refused(error, headers);
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
                self.record(req, started, TokenOutcome::Issued(&grant.agent));
                LocalResponse {
                    status: 200,
                    headers,
                    body: issued.to_json(),
                }
            }
            Err((e, decision)) => {
                self.record(
                    req,
                    started,
                    TokenOutcome::Refused(Some(&grant.agent), &e, decision),
                );
                self.refused(e, headers)
            }
        }
    }

    fn refused(&self, e: OAuthError, mut headers: Vec<(&'static str, String)>) -> LocalResponse {
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
        LocalResponse {
            status: e.status_code(),
            headers,
            body: e.to_json(),
        }
    }
}

/// How a token request ended, for its audit record.
enum TokenOutcome<'a> {
    Issued(&'a Agent),
    Refused(Option<&'a Agent>, &'a OAuthError, Option<Arc<Decision>>),
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
