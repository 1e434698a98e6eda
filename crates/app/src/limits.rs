//! Rate limits and token budgets plugged into the data plane: per agent, the `[limits]`
//! defaults with the agent's overrides (config `[agents.limits]`, `agent set`, or
//! `PUT /v1/agents/{id}/config`), read from the registry on every request so a change applies
//! to the next one. The counters live in this process (`limits.backend = "memory"`) or in
//! Redis, shared by every replica (`"redis"`, `portcullis-limits-redis`).

use crate::alerts::BudgetAlerts;
use portcullis_admin::ReadyCheck;
use portcullis_core::{Clock, Principal};
use portcullis_identity::Registry;
use portcullis_limits::{
    Admission, Lease, LimitError, LimitFuture, LimitScopes, LimitSettings, Limiter, MemoryLimiter,
    Permit, ScopeKey, TokenReservation, UsageSnapshot,
};
use portcullis_llm::Classification;
use portcullis_proxy::phases::RequestLimits;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often idle scopes are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The limits phase: a limiter (in memory or shared) keyed by agent.
pub struct AgentLimits {
    limiter: Arc<dyn Limiter>,
    defaults: LimitSettings,
    registry: Arc<Registry>,
    alerts: Option<Arc<BudgetAlerts>>,
}

impl AgentLimits {
    /// The embedded in-memory limiter (state is per process; see the README).
    pub fn in_memory(
        defaults: LimitSettings,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::new(Arc::new(MemoryLimiter::new(clock)), defaults, registry)
    }

    /// The phase over any limiter (e.g. the shared Redis limiter).
    pub fn new(
        limiter: Arc<dyn Limiter>,
        defaults: LimitSettings,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            limiter,
            defaults,
            registry,
            alerts: None,
        }
    }

    /// Budget alerts: after each LLM request of an agent with a budget is settled, its
    /// budgets are checked against `[alerts] thresholds` (off the request path).
    #[must_use]
    pub fn with_alerts(mut self, alerts: BudgetAlerts) -> Self {
        self.alerts = Some(Arc::new(alerts));
        self
    }

    /// The limiter behind the phase.
    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    /// The budget alerts, when `[alerts]` configures webhooks.
    pub fn alerts(&self) -> Option<&Arc<BudgetAlerts>> {
        self.alerts.as_ref()
    }

    /// Forgets idle scopes every minute until `shutdown` turns true.
    pub fn spawn_sweeper(&self, mut shutdown: watch::Receiver<bool>) {
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => { limiter.sweep(); }
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// The limits of `agent_id`: the defaults with its overrides.
    fn settings(&self, agent_id: &str) -> LimitSettings {
        match self.registry.get(agent_id) {
            Some(agent) => self.defaults.with_overrides(&agent.limits),
            None => self.defaults.clone(),
        }
    }
}

/// The token reservation of a request: LLM API calls (chat, messages, responses,
/// embeddings) reserve their worst case; everything else reserves nothing.
fn reservation(
    settings: &LimitSettings,
    llm: Option<&Classification>,
    body_len: u64,
) -> Option<TokenReservation> {
    let c = llm.filter(|c| c.api.is_some())?;
    Some(TokenReservation::estimate(settings, c.max_tokens, body_len))
}

impl RequestLimits for AgentLimits {
    fn usage(&self, principal: &Principal) -> LimitFuture<'_, UsageSnapshot> {
        self.limiter
            .usage_snapshot(&ScopeKey::agent(&principal.agent_id))
    }

    fn admit(&self, principal: &Principal) -> LimitFuture<'_, Result<Admission, LimitError>> {
        let settings = self.settings(&principal.agent_id);
        let key = ScopeKey::agent(&principal.agent_id);
        self.limiter.admit(&LimitScopes::agent(&key, &settings))
    }

    fn acquire(
        &self,
        principal: &Principal,
        llm: Option<&Classification>,
        body_len: u64,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        let settings = self.settings(&principal.agent_id);
        let key = ScopeKey::agent(&principal.agent_id);
        let reserved = reservation(&settings, llm, body_len);
        let watched = reserved.is_some() && crate::alerts::watches(&settings);
        let acquired = self.limiter.acquire_admitted(
            &LimitScopes::agent(&key, &settings),
            reserved,
            admission,
        );
        match (&self.alerts, watched) {
            (Some(alerts), true) => watch(acquired, alerts.clone(), principal, settings),
            _ => acquired,
        }
    }

    fn mcp_calls_per_minute(&self, principal: &Principal) -> Option<u64> {
        self.registry
            .get(&principal.agent_id)
            .and_then(|a| a.limits.mcp_calls_per_minute)
    }
}

/// The limits phase `cfg` asks for: in memory, or the shared Redis limiter (started here:
/// connected, or degraded until Redis answers) with its metrics in `metrics`. Also returns
/// the readiness check and the banner's `limits=` part.
pub async fn from_config(
    cfg: &portcullis_config::Config,
    metrics: &prometheus::Registry,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
) -> Result<(AgentLimits, LimitsReady, String), String> {
    let defaults = crate::settings::limit_settings(cfg);
    let env = std::env::var(crate::settings::REDIS_URL_ENV).ok();
    let redis = crate::settings::redis_settings(cfg, env).map_err(|e| e.to_string())?;
    let Some(redis) = redis else {
        let limits = AgentLimits::in_memory(defaults, registry, clock);
        let ready = LimitsReady {
            backend: "memory",
            limiter: limits.limiter.clone(),
        };
        return Ok((limits, ready, "limits=memory".to_owned()));
    };
    let banner = format!(
        "limits=redis({}, on_redis_error={})",
        portcullis_limits_redis::redact_url(&redis.url),
        redis.on_error
    );
    let m = portcullis_limits_redis::RedisMetrics::register(metrics).map_err(|e| e.to_string())?;
    let limiter = portcullis_limits_redis::RedisLimiter::start(redis, Some(m))
        .await
        .map_err(|e| e.to_string())?;
    let limiter: Arc<dyn Limiter> = Arc::new(limiter);
    let ready = LimitsReady {
        backend: "redis",
        limiter: limiter.clone(),
    };
    Ok((AgentLimits::new(limiter, defaults, registry), ready, banner))
}

/// The permit of a watched request, wrapped so that settling it (or dropping it) also hands
/// the agent's budgets to the alerts once the limiter has the charge.
fn watch<'a>(
    acquired: LimitFuture<'a, Result<Permit, LimitError>>,
    alerts: Arc<BudgetAlerts>,
    principal: &Principal,
    settings: LimitSettings,
) -> LimitFuture<'a, Result<Permit, LimitError>> {
    let (agent, tenant) = (principal.agent_id.clone(), principal.tenant.clone());
    let wrap = move |permit: Permit| {
        let (rate, reserved) = (permit.rate_info().copied(), permit.reserved_tokens());
        let lease = Watched {
            permit,
            alerts,
            agent,
            tenant,
            settings,
        };
        Permit::new(Box::new(lease), rate, reserved)
    };
    match acquired.into_ready() {
        Ok(r) => LimitFuture::ready(r.map(wrap)),
        Err(pending) => LimitFuture::boxed(async move { pending.await.map(wrap) }),
    }
}

/// A permit whose end is reported to the alerts.
struct Watched {
    permit: Permit,
    alerts: Arc<BudgetAlerts>,
    agent: Arc<str>,
    tenant: Arc<str>,
    settings: LimitSettings,
}

impl Lease for Watched {
    fn finish(self: Box<Self>, usage: Option<u64>) {
        let Watched {
            permit,
            alerts,
            agent,
            tenant,
            settings,
        } = *self;
        permit.settle(usage);
        alerts.after_settle(&agent, &tenant, &settings);
    }
}

/// `/readyz` component `limits`: which backend, and whether it is degraded (Redis unreachable,
/// `limits.on_redis_error` applying). Always ready: a degraded backend still answers every
/// request as configured, and taking every replica out of service would not bring Redis back.
pub struct LimitsReady {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// The limiter.
    pub limiter: Arc<dyn Limiter>,
}

impl ReadyCheck for LimitsReady {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn check(&self) -> (bool, Value) {
        let detail = match self.limiter.degraded() {
            Some(reason) => json!({"backend": self.backend, "state": "degraded", "reason": reason}),
            None => json!({"backend": self.backend, "state": "ok"}),
        };
        (true, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{Agent, ManualClock};
    use portcullis_limits::LimitKind;
    use portcullis_llm::{Classifier, RequestHead};

    fn classified(body: &[u8]) -> Classification {
        let classifier = Classifier::new(&[]).unwrap();
        let head = RequestHead {
            method: "POST",
            host: "api.openai.com",
            port: 443,
            path: "/v1/chat/completions",
            content_type: Some("application/json"),
        };
        let mut c = classifier.classify_head(&head).unwrap();
        c.inspect_body(Some("application/json"), body, 1 << 20);
        c
    }

    fn principal(id: &str) -> Principal {
        let mut p = Principal::anonymous();
        p.agent_id = Arc::from(id);
        p
    }

    fn limits(defaults: LimitSettings, agents: Vec<Agent>) -> AgentLimits {
        AgentLimits::in_memory(
            defaults,
            Arc::new(Registry::from_agents(agents)),
            Arc::new(ManualClock::at(1_800_000_000)),
        )
    }

    #[test]
    fn llm_calls_reserve_max_tokens_plus_the_prompt_estimate() {
        let s = LimitSettings::default();
        let body = br#"{"model":"gpt-4o","max_tokens":100,"messages":[]}"#;
        let c = classified(body);
        let r = reservation(&s, Some(&c), body.len() as u64).unwrap();
        assert_eq!(r.get(), 100 + (body.len() as u64).div_ceil(4));
        // No max_tokens: the configured default.
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        let c = classified(body);
        let r = reservation(&s, Some(&c), 40).unwrap();
        assert_eq!(r.get(), s.default_max_tokens + 10);
        // Not an LLM API call: nothing reserved.
        assert!(reservation(&s, None, 1000).is_none());
    }

    /// The in-memory limiter answers at once.
    fn now<T>(f: LimitFuture<'_, T>) -> T {
        match f.into_ready() {
            Ok(v) => v,
            Err(_) => panic!("the in-memory limiter answered with a future"),
        }
    }

    fn acquire(l: &AgentLimits, agent: &str) -> Result<Permit, portcullis_limits::Refusal> {
        let refused = |e: LimitError| e.refusal().cloned().expect("a limit refusal");
        let admission = now(l.admit(&principal(agent))).map_err(refused)?;
        now(l.acquire(&principal(agent), None, 0, admission)).map_err(refused)
    }

    #[test]
    fn agent_overrides_apply_on_top_of_the_defaults() {
        let mut strict = Agent::new("strict", "default", 0);
        strict.limits.rpm = Some(1);
        let l = limits(
            LimitSettings {
                rpm: Some(3),
                ..LimitSettings::default()
            },
            vec![strict],
        );
        let p = acquire(&l, "strict").unwrap();
        assert_eq!(
            p.rate_info().map(|r| (r.limit_value, r.remaining)),
            Some((1, 0))
        );
        let e = acquire(&l, "strict").unwrap_err();
        assert_eq!((e.limit, e.limit_value), (LimitKind::Rpm, 1));
        // Unknown to the registry (e.g. anonymous): the defaults.
        for left in [2, 1, 0] {
            let p = acquire(&l, "other").unwrap();
            assert_eq!(p.rate_info().unwrap().remaining, left);
        }
        assert!(acquire(&l, "other").is_err());
        assert_eq!(now(l.usage(&principal("other"))).requests_last_minute, 3);
        assert_eq!(now(l.usage(&principal("nobody"))), UsageSnapshot::default());
        // The next admission carries the usage read with its slot.
        let admission = now(l.admit(&principal("other"))).unwrap();
        assert_eq!(admission.usage().requests_last_minute, 3);
    }

    #[test]
    fn an_agents_tool_call_limit_comes_from_its_overrides() {
        let mut capped = Agent::new("capped", "acme", 0);
        capped.limits.mcp_calls_per_minute = Some(7);
        let l = limits(
            LimitSettings::default(),
            vec![capped, Agent::new("free", "acme", 0)],
        );
        assert_eq!(l.mcp_calls_per_minute(&principal("capped")), Some(7));
        assert_eq!(
            l.mcp_calls_per_minute(&principal("free")),
            None,
            "no override"
        );
        assert_eq!(
            l.mcp_calls_per_minute(&principal("ghost")),
            None,
            "unknown agent"
        );
    }

    #[test]
    fn usage_counts_without_any_limit_configured() {
        let l = limits(LimitSettings::default(), vec![]);
        let body = br#"{"model":"gpt-4o","max_tokens":50,"messages":[]}"#;
        let admission = now(l.admit(&principal("bot"))).unwrap();
        let c = classified(body);
        let p = now(l.acquire(&principal("bot"), Some(&c), body.len() as u64, admission)).unwrap();
        assert!(p.rate_info().is_none(), "no limit, no X-RateLimit headers");
        p.settle(Some(20));
        let u = now(l.usage(&principal("bot")));
        assert_eq!((u.requests_last_minute, u.tokens_today), (1, 20));
    }

    /// Never answers: the alerts below have no webhook.
    struct NoTransport;

    impl portcullis_alerts::Transport for NoTransport {
        fn post(
            &self,
            _: &http::Uri,
            _: http::HeaderMap,
            _: bytes::Bytes,
        ) -> futures_util::future::BoxFuture<'static, Result<u16, String>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_settled_llm_request_of_a_budgeted_agent_is_observed_by_the_alerts() {
        use portcullis_alerts::{AlertDeps, AlertMetrics, AlertSettings, Alerts};
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = records.clone();
        let alerts = Alerts::start(
            AlertSettings {
                thresholds: vec![0.5, 1.0],
                queue: 8,
                webhooks: Vec::new(),
                max_tracked: 10,
                shared: None,
            },
            AlertDeps {
                transport: Arc::new(NoTransport),
                audit: Arc::new(move |r| sink.lock().unwrap().push(r)),
                clock: clock.clone(),
                new_id: || "alert1".to_owned(),
                metrics: AlertMetrics::unregistered().unwrap(),
            },
        );
        let mut budgeted = Agent::new("budgeted", "acme", 0);
        budgeted.limits.tokens_per_day = Some(1000);
        let l = limits(
            LimitSettings::default(),
            vec![budgeted, Agent::new("free", "acme", 0)],
        );
        let l = {
            let watch = BudgetAlerts::new(alerts.clone(), l.limiter().clone(), clock);
            l.with_alerts(watch)
        };
        let body = br#"{"model":"gpt-4o","max_tokens":50,"messages":[]}"#;
        let c = classified(body);
        let mut p = principal("budgeted");
        p.tenant = Arc::from("acme");
        let send = |who: &Principal, used: u64| {
            let admission = now(l.admit(who)).unwrap();
            let permit = now(l.acquire(who, Some(&c), body.len() as u64, admission)).unwrap();
            assert!(permit.reserved_tokens() > 0);
            permit.settle(Some(used));
        };
        send(&p, 400);
        assert_eq!(alerts.tracked(), 0, "400 of 1000: below every threshold");
        send(&p, 200);
        assert_eq!(alerts.tracked(), 1, "600 of 1000 fired 50 %");
        // An agent without a budget is not watched at all.
        send(&principal("free"), 1000);
        assert_eq!(alerts.tracked(), 1);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let records = records.lock().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].agent_id.as_str(), records[0].tenant.as_str()),
            ("budgeted", "acme")
        );
        assert!(
            records[0].reasons[0].contains("600 of 1000"),
            "{:?}",
            records[0].reasons
        );
    }
}
