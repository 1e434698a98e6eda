//! Rate limits, token and dollar budgets plugged into the data plane: per agent, the `[limits]`
//! defaults with the agent's overrides (config `[agents.limits]`, `agent set`, or
//! `PUT /v1/agents/{id}/config`), read from the registry on every request so a change applies
//! to the next one; per tenant, `[limits.tenants."<tenant>"]` on top. The counters live in
//! this process (`limits.backend = "memory"`) or in Redis, shared by every replica
//! (`"redis"`, `portcullis-limits-redis`).
//!
//! An LLM request's reservation carries its model's price (the price table on today's UTC
//! day), so it reserves its worst-case cost against the dollar budgets and its permit settles
//! with the real cost; the data plane never sees a price.

use crate::alerts::BudgetAlerts;
use portcullis_admin::ReadyCheck;
use portcullis_core::{Clock, Principal};
use portcullis_identity::Registry;
use portcullis_limits::{
    Admission, Lease, LimitError, LimitFuture, LimitScopes, LimitSettings, Limiter, MemoryLimiter,
    Permit, ScopeKey, Settlement, TokenReservation, UsageSnapshot,
};
use portcullis_llm::Classification;
use portcullis_proxy::phases::RequestLimits;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::pricing::PriceTable;
use tokio::sync::watch;

/// How often idle scopes are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The limits phase: a limiter (in memory or shared) keyed by agent.
pub struct AgentLimits {
    limiter: Arc<dyn Limiter>,
    defaults: LimitSettings,
    registry: Arc<Registry>,
    alerts: Option<Arc<BudgetAlerts>>,
    /// Tenant scopes, by tenant (`[limits.tenants]`).
    tenants: HashMap<String, (ScopeKey, LimitSettings)>,
    /// Prices of LLM calls, and the clock that says which day's price applies.
    prices: Option<(Arc<PriceTable>, Arc<dyn Clock>)>,
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
            tenants: HashMap::new(),
            prices: None,
            alerts: None,
        }
    }

    /// Adds tenant scopes: each tenant's settings, checked on top of its agents' own.
    #[must_use]
    pub fn with_tenants(mut self, tenants: HashMap<String, LimitSettings>) -> Self {
        self.tenants = tenants
            .into_iter()
            .map(|(t, s)| {
                let key = ScopeKey::tenant(&t);
                (t, (key, s))
            })
            .collect();
        self
    }

    /// Prices LLM reservations with `prices` on `clock`'s UTC day. Without prices every LLM
    /// request is unpriced: dollar budgets then refuse it.
    #[must_use]
    pub fn with_prices(mut self, prices: Arc<PriceTable>, clock: Arc<dyn Clock>) -> Self {
        self.prices = Some((prices, clock));
        self
    }

    /// The price of a classified LLM call today; `None` when unknown.
    fn price(&self, c: &Classification) -> Option<portcullis_limits::TokenPrice> {
        let (table, clock) = self.prices.as_ref()?;
        let secs = clock.now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let model = c.model.as_deref()?;
        table.lookup_at(&c.provider, model, i64::try_from(secs).ok()?)
    }

    /// The limits of `tenant` (`[limits.tenants]`), when it has any; its usage is
    /// `limiter().usage_snapshot(&ScopeKey::tenant(tenant))`.
    pub fn tenant_settings(&self, tenant: &str) -> Option<&LimitSettings> {
        self.tenants.get(tenant).map(|(_, s)| s)
    }

    /// The tenant scope of `principal`, when its tenant has limits.
    fn tenant(&self, principal: &Principal) -> Option<&(ScopeKey, LimitSettings)> {
        if self.tenants.is_empty() {
            return None;
        }
        self.tenants.get(&*principal.tenant)
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

    /// The limits of `agent_id` now: the defaults with its overrides (what budget alerts
    /// compare an agent's [`UsageSnapshot`] with).
    pub fn settings(&self, agent_id: &str) -> LimitSettings {
        match self.registry.get(agent_id) {
            Some(agent) => self.defaults.with_overrides(&agent.limits),
            None => self.defaults.clone(),
        }
    }
}

/// The token reservation of a request: LLM API calls (chat, messages, responses,
/// embeddings) reserve their worst case, priced with `price` when known; everything else
/// reserves nothing.
fn reservation(
    settings: &LimitSettings,
    llm: Option<&Classification>,
    body_len: u64,
    price: impl FnOnce(&Classification) -> Option<portcullis_limits::TokenPrice>,
) -> Option<TokenReservation> {
    let c = llm.filter(|c| c.api.is_some())?;
    Some(TokenReservation::estimate(settings, c.max_tokens, body_len).with_price(price(c)))
}

impl RequestLimits for AgentLimits {
    fn usage(&self, principal: &Principal) -> LimitFuture<'_, UsageSnapshot> {
        self.limiter
            .usage_snapshot(&ScopeKey::agent(&principal.agent_id))
    }

    fn admit(&self, principal: &Principal) -> LimitFuture<'_, Result<Admission, LimitError>> {
        let settings = self.settings(&principal.agent_id);
        let key = ScopeKey::agent(&principal.agent_id);
        let mut scopes = LimitScopes::agent(&key, &settings);
        if let Some((tkey, tsettings)) = self.tenant(principal) {
            scopes = scopes.with_tenant(tkey, tsettings);
        }
        self.limiter.admit(&scopes)
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
        let mut scopes = LimitScopes::agent(&key, &settings);
        let tenant = self.tenant(principal);
        if let Some((tkey, tsettings)) = tenant {
            scopes = scopes.with_tenant(tkey, tsettings);
        }
        let reserved = reservation(&settings, llm, body_len, |c| self.price(c));
        let watched = reserved.is_some()
            && (crate::alerts::watches(&settings)
                || tenant.is_some_and(|(_, t)| crate::alerts::watches(t)));
        let acquired = self.limiter.acquire_admitted(&scopes, reserved, admission);
        match (&self.alerts, watched) {
            (Some(alerts), true) => {
                let tenant_settings = tenant.map(|(_, t)| t.clone());
                watch(
                    acquired,
                    alerts.clone(),
                    principal,
                    settings,
                    tenant_settings,
                )
            }
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
    prices: Arc<PriceTable>,
) -> Result<(AgentLimits, LimitsReady, String), String> {
    let defaults = crate::settings::limit_settings(cfg);
    let tenants = crate::settings::tenant_limit_settings(cfg).map_err(|e| e.to_string())?;
    let env = std::env::var(crate::settings::REDIS_URL_ENV).ok();
    let redis = crate::settings::redis_settings(cfg, env).map_err(|e| e.to_string())?;
    let Some(redis) = redis else {
        let limits = AgentLimits::in_memory(defaults, registry, clock.clone())
            .with_tenants(tenants)
            .with_prices(prices, clock);
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
    let limits = AgentLimits::new(limiter, defaults, registry)
        .with_tenants(tenants)
        .with_prices(prices, clock);
    Ok((limits, ready, banner))
}

/// The permit of a watched request, wrapped so that settling it (or dropping it) also hands
/// the budgets of its agent (and tenant) to the alerts once the limiter has the charge.
fn watch<'a>(
    acquired: LimitFuture<'a, Result<Permit, LimitError>>,
    alerts: Arc<BudgetAlerts>,
    principal: &Principal,
    settings: LimitSettings,
    tenant_settings: Option<LimitSettings>,
) -> LimitFuture<'a, Result<Permit, LimitError>> {
    let (agent, tenant) = (principal.agent_id.clone(), principal.tenant.clone());
    let wrap = move |permit: Permit| {
        let (rate, reserved) = (permit.rate_info().copied(), permit.reserved_tokens());
        let price = permit.price().copied();
        let lease = Watched {
            permit,
            alerts,
            agent,
            tenant,
            settings,
            tenant_settings,
        };
        Permit::new(Box::new(lease), rate, reserved).with_price(price)
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
    tenant_settings: Option<LimitSettings>,
}

impl Lease for Watched {
    fn finish(self: Box<Self>, settlement: Settlement) {
        let Watched {
            permit,
            alerts,
            agent,
            tenant,
            settings,
            tenant_settings,
        } = *self;
        permit.finish(settlement);
        alerts.after_settle(&agent, &tenant, &settings, tenant_settings.as_ref());
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
        let r = reservation(&s, Some(&c), body.len() as u64, |_| None).unwrap();
        assert_eq!(r.get(), 100 + (body.len() as u64).div_ceil(4));
        // No max_tokens: the configured default.
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        let c = classified(body);
        let r = reservation(&s, Some(&c), 40, |_| None).unwrap();
        assert_eq!(r.get(), s.default_max_tokens + 10);
        // Not an LLM API call: nothing reserved.
        assert!(reservation(&s, None, 1000, |_| None).is_none());
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

    /// An alert engine without webhooks whose audit records land in the returned list.
    fn alerts(
        clock: Arc<ManualClock>,
    ) -> (
        portcullis_alerts::Alerts,
        Arc<std::sync::Mutex<Vec<portcullis_audit::AuditRecord>>>,
    ) {
        use portcullis_alerts::{AlertDeps, AlertMetrics, AlertSettings, Alerts};
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
                clock,
                new_id: || "alert1".to_owned(),
                metrics: AlertMetrics::unregistered().unwrap(),
            },
        );
        (alerts, records)
    }

    #[tokio::test]
    async fn a_settled_llm_request_of_a_budgeted_agent_is_observed_by_the_alerts() {
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let (alerts, records) = alerts(clock.clone());
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

    #[test]
    fn llm_calls_are_priced_and_tenants_share_their_budget() {
        let mut a = Agent::new("a", "acme", 0);
        a.limits.usd_per_day = Some(portcullis_limits::Usd::from_micros(1_000_000));
        let b = Agent::new("b", "acme", 0);
        let clock = Arc::new(ManualClock::at(1_754_000_000));
        let prices =
            Arc::new(PriceTable::from_config(&portcullis_config::Config::default()).unwrap());
        let tenant = LimitSettings {
            tokens_per_day: Some(1_000),
            ..LimitSettings::default()
        };
        let l = AgentLimits::in_memory(
            LimitSettings::default(),
            Arc::new(Registry::from_agents(vec![a, b])),
            clock.clone(),
        )
        .with_tenants(HashMap::from([("acme".to_owned(), tenant)]))
        .with_prices(prices, clock);
        let p = |id: &str| {
            let mut p = principal(id);
            p.tenant = Arc::from("acme");
            p
        };
        // gpt-4o: 100 output at $10/M + 10 prompt tokens at $2.50/M = 1025 µ$ reserved.
        let body = br#"{"model":"gpt-4o","max_tokens":100,"messages":["abc"]}"#;
        let c = classified(body);
        let prompt = (body.len() as u64).div_ceil(4);
        let admission = now(l.admit(&p("a"))).unwrap();
        let permit = now(l.acquire(&p("a"), Some(&c), body.len() as u64, admission)).unwrap();
        let usd = now(l.usage(&p("a"))).usd_today.micros();
        assert_eq!(
            usd,
            (100 * 10_000_000 + prompt * 2_500_000).div_ceil(1_000_000)
        );
        permit.settle_usage(Some(&portcullis_llm::Usage::provider(10, 20, 0, 0)));
        // 10 × 2.50 + 20 × 10 = 225 µ$.
        assert_eq!(now(l.usage(&p("a"))).usd_today.micros(), 225);
        // An unknown model under a dollar budget is refused; without one it is admitted.
        let body = br#"{"model":"mystery-1","max_tokens":10,"messages":[]}"#;
        let c = classified(body);
        let admission = now(l.admit(&p("a"))).unwrap();
        let e = now(l.acquire(&p("a"), Some(&c), body.len() as u64, admission)).unwrap_err();
        let r = e.refusal().unwrap();
        assert_eq!((r.limit, r.unpriced), (LimitKind::UsdPerDay, true));
        let admission = now(l.admit(&p("b"))).unwrap();
        let permit = now(l.acquire(&p("b"), Some(&c), body.len() as u64, admission)).unwrap();
        permit.settle(Some(900));
        // The tenant's daily tokens are shared: a's 30 plus b's 900; 100 more do not fit.
        let body = br#"{"model":"gpt-4o","max_tokens":90,"messages":[]}"#;
        let c = classified(body);
        let admission = now(l.admit(&p("b"))).unwrap();
        let e = now(l.acquire(&p("b"), Some(&c), body.len() as u64, admission)).unwrap_err();
        let r = e.refusal().unwrap();
        assert_eq!(
            (r.limit, r.scope),
            (
                LimitKind::TokensPerDay,
                portcullis_limits::ScopeKind::Tenant
            )
        );
    }

    #[tokio::test]
    async fn dollar_and_tenant_budgets_are_observed_by_the_alerts() {
        let clock = Arc::new(ManualClock::at(1_754_000_000));
        let (alerts, records) = alerts(clock.clone());
        let mut a = Agent::new("a", "acme", 0);
        // gpt-4o at $2.50/M input, $10/M output: 200 output tokens cost $0.002.
        a.limits.usd_per_day = Some(portcullis_limits::Usd::from_micros(4_000));
        let tenant = LimitSettings {
            usd_per_month: Some(portcullis_limits::Usd::from_micros(10_000)),
            ..LimitSettings::default()
        };
        let prices =
            Arc::new(PriceTable::from_config(&portcullis_config::Config::default()).unwrap());
        let l = AgentLimits::in_memory(
            LimitSettings::default(),
            Arc::new(Registry::from_agents(vec![a, Agent::new("b", "acme", 0)])),
            clock.clone(),
        )
        .with_tenants(HashMap::from([("acme".to_owned(), tenant)]))
        .with_prices(prices, clock.clone());
        let l = {
            let watch = BudgetAlerts::new(alerts.clone(), l.limiter().clone(), clock);
            l.with_alerts(watch)
        };
        let body = br#"{"model":"gpt-4o","max_tokens":200,"messages":[]}"#;
        let c = classified(body);
        let send = |id: &str, output: u64| {
            let mut p = principal(id);
            p.tenant = Arc::from("acme");
            let admission = now(l.admit(&p)).unwrap();
            let permit = now(l.acquire(&p, Some(&c), body.len() as u64, admission)).unwrap();
            permit.settle_usage(Some(&portcullis_llm::Usage::provider(0, output, 0, 0)));
        };
        // a: $0.002 of its $0.004 a day (50 %); the tenant: $0.002 of $0.01 a month.
        send("a", 200);
        assert_eq!(alerts.tracked(), 1);
        // b has no budget of its own, but its tenant does: $0.005 of $0.01 (50 %).
        send("b", 300);
        assert_eq!(alerts.tracked(), 2);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let records = records.lock().unwrap();
        let reasons: Vec<&str> = records.iter().map(|r| r.reasons[0].as_str()).collect();
        assert_eq!(
            reasons,
            [
                "budget_threshold: Portcullis: agent a (tenant acme) reached 50% of its \
                 usd_per_day budget: 0.002 of 0.004 (period 2025-07-31T00:00:00.000Z to \
                 2025-08-01T00:00:00.000Z)",
                "budget_threshold: Portcullis: tenant acme reached 50% of its usd_per_month \
                 budget: 0.005 of 0.01 (period 2025-07-01T00:00:00.000Z to \
                 2025-08-01T00:00:00.000Z)",
            ]
        );
        assert_eq!(records[0].agent_id, "a");
        assert_eq!(records[1].agent_id, "");
    }
}
