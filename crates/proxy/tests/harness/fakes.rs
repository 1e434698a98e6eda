//! Fake phases: small, deterministic stand-ins for identity, policy, limits, audit and
//! credentials, so the data plane is driven in-process without the real engines.

use base64::Engine;
use http::{HeaderValue, Method};
use portcullis_core::{AuditRecord, Decision, Injection, Principal, Verdict};
use portcullis_limits::{
    Admission, LimitError, LimitFuture, LimitKind, Permit, Refusal as LimitRefusal, ScopeKind,
    UsageSnapshot,
};
use portcullis_llm::Classification;
use portcullis_proxy::phases::{
    Authenticator, Authorization, Authorizer, CredentialInjector, Recorder, RequestFacts,
    RequestLimits,
};
use portcullis_proxy::refusal::{AuthFailure, AuthFailureKind, Malformed};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The password every fake agent authenticates with.
pub const GOOD: &str = "good";

/// `Proxy-Authorization` for `agent` with the good password.
pub fn basic(agent: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{agent}:{GOOD}"));
    format!("Basic {b64}")
}

/// A principal of tenant `acme`.
pub fn principal(agent: &str) -> Principal {
    let mut p = Principal::anonymous();
    p.agent_id = Arc::from(agent);
    p.tenant = Arc::from("acme");
    p
}

/// Agents are whoever sends the good password; `disabled` is refused as disabled and
/// `throttled` as throttled; anything else without it gets 407.
pub struct FakeAuth;

impl Authenticator for FakeAuth {
    fn authenticate(
        &self,
        h: Option<&HeaderValue>,
        _: SocketAddr,
    ) -> Result<Principal, AuthFailure> {
        let fail = |kind, code, reason| AuthFailure {
            kind,
            code,
            detail: "fake authentication refused".into(),
            reason,
        };
        let decoded = h
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some((agent, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(fail(
                AuthFailureKind::Unauthenticated,
                "proxy_auth_required",
                "missing",
            ));
        };
        match (agent, pass) {
            ("disabled", GOOD) => Err(fail(
                AuthFailureKind::Disabled,
                "agent_disabled",
                "agent_disabled",
            )),
            ("throttled", _) => Err(fail(
                AuthFailureKind::Throttled {
                    retry_after_secs: 7,
                },
                "auth_throttled",
                "throttled",
            )),
            (a, GOOD) => Ok(principal(a)),
            _ => Err(fail(
                AuthFailureKind::Unauthenticated,
                "proxy_auth_required",
                "bad_secret",
            )),
        }
    }

    fn subagent(&self, _: &Principal, value: &HeaderValue) -> Result<String, Malformed> {
        match value.to_str() {
            Ok(v) if portcullis_core::is_valid_id(v) => Ok(v.to_owned()),
            _ => Err(Malformed::Subagent {
                code: "invalid_subagent",
                detail: "bad sub-agent".into(),
            }),
        }
    }
}

/// Denies paths under `/deny` (policy `fake`), panics on `/panic`, allows the rest.
pub struct FakePolicy;

impl Authorizer for FakePolicy {
    fn authorize(&self, f: &RequestFacts<'_>) -> Authorization {
        if f.path.starts_with("/panic") {
            panic!("the fake policy panics on /panic");
        }
        let mut d = Decision::allow_unconditionally(format!("d-{}", f.path.len()));
        if f.path.starts_with("/deny") || (f.method == Method::CONNECT && f.port == 444) {
            d.allowed = false;
            d.verdict = Verdict::Deny;
            d.policy = Some("fake".into());
            d.reasons = vec!["the fake policy denies this".into()];
            d.code = Some("policy_denied".into());
        }
        Authorization {
            decision: d,
            stub: false,
        }
    }
}

/// Agent `limited` is over its rate limit; agent `unlimitable` meets a limits backend that is
/// down and set to refuse; agent `one_tool_call` may make one MCP tool call a minute (its own
/// override; `mcp.calls_per_minute` is unset); everyone else is admitted with no limit.
pub struct FakeLimits;

impl RequestLimits for FakeLimits {
    fn usage(&self, _: &Principal) -> LimitFuture<'_, UsageSnapshot> {
        LimitFuture::ready(UsageSnapshot::default())
    }

    fn admit(&self, principal: &Principal) -> LimitFuture<'_, Result<Admission, LimitError>> {
        if &*principal.agent_id == "unlimitable" {
            return LimitFuture::ready(Err(LimitError::Unavailable(
                "redis at redis://127.0.0.1:1 unreachable (connection refused); on_redis_error = deny"
                    .into(),
            )));
        }
        LimitFuture::ready(Ok(Admission::none()))
    }

    fn acquire(
        &self,
        principal: &Principal,
        _: Option<&Classification>,
        _: u64,
        _admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        if &*principal.agent_id != "limited" {
            return LimitFuture::ready(Ok(unlimited()));
        }
        LimitFuture::ready(Err(LimitError::Limited(LimitRefusal {
            limit: LimitKind::Rpm,
            scope: ScopeKind::Agent,
            limit_value: 1,
            remaining: 0,
            requested: 1,
            retry_after_secs: 30,
            reset_unix: 1_900_000_000,
            never_fits: false,
            unpriced: false,
        })))
    }

    fn mcp_calls_per_minute(&self, principal: &Principal) -> Option<u64> {
        (&*principal.agent_id == "one_tool_call").then_some(1)
    }
}

/// A permit from a real in-memory limiter with no limit configured.
fn unlimited() -> Permit {
    use portcullis_limits::{LimitScopes, LimitSettings, Limiter, MemoryLimiter, ScopeKey};
    let limiter = MemoryLimiter::new(Arc::new(portcullis_core::SystemClock));
    let key = ScopeKey::agent("any");
    let settings = LimitSettings::default();
    let answer = limiter
        .acquire(&LimitScopes::agent(&key, &settings), None)
        .into_ready();
    match answer {
        Ok(Ok(permit)) => permit,
        _ => panic!("no limit configured: the memory limiter admits at once"),
    }
}

/// Captures every record; `admit` refuses while `down` is set.
#[derive(Clone, Default)]
pub struct FakeRecorder {
    pub records: Arc<Mutex<Vec<AuditRecord>>>,
    pub down: Arc<AtomicBool>,
}

impl Recorder for FakeRecorder {
    fn record(&self, r: AuditRecord) {
        self.records.lock().expect("records").push(r);
    }

    fn admit(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        let down = self.down.load(Ordering::Acquire);
        Box::pin(async move {
            if down {
                Err("the fake audit trail is down".to_owned())
            } else {
                Ok(())
            }
        })
    }
}

/// Credential `broken` is bound to `localhost` for agent `keyed`, and its secret cannot be read.
pub struct FakeCredentials;

impl CredentialInjector for FakeCredentials {
    fn intercepts(&self, _: &str) -> bool {
        false
    }

    fn bound(&self, p: &Principal, host: &str) -> Option<Arc<str>> {
        (host == "localhost" && &*p.agent_id == "keyed").then(|| Arc::from("broken"))
    }

    fn injection(&self, name: &str) -> Result<Injection, String> {
        Err(format!("credential `{name}` cannot be read"))
    }
}
