//! Budget alerts plugged into the limits phase: after a request's permit is settled, the
//! agent's budgets are read from the limiter and handed to the alert engine
//! (`portcullis-alerts`), off the request path. Only built when `[[alerts.webhooks]]` exist;
//! without them the limits phase does nothing extra.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use portcullis_alerts::{
    AlertDeps, AlertMetrics, Alerts, BudgetUse, Dropped, Period, Scope, Transport,
};
use portcullis_core::{Clock, Usd};
use portcullis_limits::{LimitSettings, Limiter, ScopeKey, UsageSnapshot};
use portcullis_proxy::upstream::UpstreamClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most usage reads of a shared limiter (Redis) in flight for alerts; beyond it an
/// observation is skipped and counted (`portcullis_alerts_dropped_total{reason="busy"}`).
pub const MAX_READS_IN_FLIGHT: usize = 64;

/// The budgets of one scope (an agent, or a tenant with `[limits.tenants]`) that alerts
/// watch, as of `usage` (that scope's snapshot) at `now` (Unix seconds). This is the one
/// place that names budgets: a new budget is one more entry here, and one more case in
/// [`watches`]. Dollar amounts are in dollars.
pub fn budget_uses<'a>(
    scope: Scope,
    id: &'a str,
    tenant: &'a str,
    settings: &LimitSettings,
    usage: &UsageSnapshot,
    now: i64,
) -> Vec<BudgetUse<'a>> {
    let offset = settings.day_reset_offset;
    let budgets = [
        (
            "tokens_per_day",
            settings.tokens_per_day.map(|l| l as f64),
            usage.tokens_today as f64,
            Period::day(now, offset),
        ),
        (
            "usd_per_day",
            settings.usd_per_day.map(Usd::dollars),
            usage.usd_today.dollars(),
            Period::day(now, offset),
        ),
        (
            "usd_per_month",
            settings.usd_per_month.map(Usd::dollars),
            usage.usd_month.dollars(),
            Period::month(now, offset),
        ),
    ];
    budgets
        .into_iter()
        .filter_map(|(budget, limit, spent, period)| {
            Some(BudgetUse {
                scope,
                id,
                tenant,
                budget,
                spent,
                limit: limit?,
                period,
            })
        })
        .collect()
}

/// Whether a scope with `settings` has a budget alerts watch: requests of agents (and
/// tenants) without one cost nothing extra.
pub fn watches(settings: &LimitSettings) -> bool {
    settings.tokens_per_day.is_some() || settings.has_usd_budget()
}

/// The alert engine and the limiter whose usage it reads.
pub struct BudgetAlerts {
    alerts: Alerts,
    limiter: Arc<dyn Limiter>,
    clock: Arc<dyn Clock>,
    in_flight: Arc<AtomicUsize>,
}

impl BudgetAlerts {
    /// Alerts over `limiter`'s usage.
    pub fn new(alerts: Alerts, limiter: Arc<dyn Limiter>, clock: Arc<dyn Clock>) -> Self {
        Self {
            alerts,
            limiter,
            clock,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The engine.
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// A request of `agent` was settled: read the usage of its scopes with a budget (the
    /// agent's, and its tenant's when `tenant_settings` has one) and observe their budgets.
    /// The in-memory limiter answers at once (a lock and a comparison); a shared one is read
    /// in a task of its own after this process's settlements reached it (bounded in number).
    pub fn after_settle(
        &self,
        agent: &Arc<str>,
        tenant: &Arc<str>,
        settings: &LimitSettings,
        tenant_settings: Option<&LimitSettings>,
    ) {
        let mut scopes = Vec::with_capacity(2);
        if watches(settings) {
            scopes.push((Scope::Agent, agent.clone(), settings.clone()));
        }
        if let Some(t) = tenant_settings.filter(|t| watches(t)) {
            scopes.push((Scope::Tenant, tenant.clone(), t.clone()));
        }
        let key = |scope: Scope, id: &str| match scope {
            Scope::Agent => ScopeKey::agent(id),
            Scope::Tenant => ScopeKey::tenant(id),
        };
        let mut unread = Vec::new();
        for (scope, id, settings) in scopes {
            match self.limiter.usage_snapshot(&key(scope, &id)).into_ready() {
                Ok(usage) => self.observe(scope, &id, tenant, &settings, &usage),
                Err(_pending) => unread.push((scope, id, settings)),
            }
        }
        if unread.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return self.alerts.skipped(Dropped::Busy);
        };
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_READS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return self.alerts.skipped(Dropped::Busy);
        }
        let this = BudgetAlerts {
            alerts: self.alerts.clone(),
            limiter: self.limiter.clone(),
            clock: self.clock.clone(),
            in_flight: self.in_flight.clone(),
        };
        let tenant = tenant.clone();
        rt.spawn(async move {
            // Settlements go to the shared backend in order: after the flush, the usage read
            // includes this request's actual charge rather than its reservation.
            this.limiter.flush().await;
            for (scope, id, settings) in unread {
                let usage = this.limiter.usage_snapshot(&key(scope, &id)).await;
                this.observe(scope, &id, &tenant, &settings, &usage);
            }
            this.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn observe(
        &self,
        scope: Scope,
        id: &str,
        tenant: &str,
        settings: &LimitSettings,
        usage: &UsageSnapshot,
    ) {
        let now = i64::try_from(self.clock.unix_secs()).unwrap_or(i64::MAX);
        for u in budget_uses(scope, id, tenant, settings, usage, now) {
            self.alerts.observe(&u);
        }
    }
}

/// Webhook POSTs through the proxy's pooled client: the same dialer and rustls setup as
/// upstream requests (public and native roots plus `tls.upstream_ca`). Webhook URLs are the
/// operator's, so every address is allowed (a receiver on a private network is usual).
pub struct HttpTransport {
    client: UpstreamClient,
}

impl HttpTransport {
    /// A client with `tls` for `https` webhooks (`None`: http only).
    pub fn new(
        tls: Option<Arc<portcullis_tls::rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Self {
        let everywhere = ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let guard = Arc::new(portcullis_proxy::ssrf::Guard::new(everywhere, Vec::new()));
        Self {
            client: portcullis_proxy::upstream::client(
                guard,
                connect_timeout,
                Duration::from_secs(60),
                2,
                tls,
            ),
        }
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'static, Result<u16, String>> {
        let mut req = Request::new(Full::new(body).map_err(|e| match e {}).boxed());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.clone();
        *req.headers_mut() = headers;
        // The client leaves Host to its caller.
        if let Some(host) = url
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let client = self.client.clone();
        Box::pin(async move {
            match client.request(req).await {
                Ok(resp) => Ok(resp.status().as_u16()),
                Err(e) => Err(match portcullis_proxy::upstream::find_dial_error(&e) {
                    Some(d) => d.to_string(),
                    None => e.to_string(),
                }),
            }
        })
    }
}

/// Starts the alert engine `[alerts]` asks for (`None` without webhooks): secrets read,
/// metrics registered in `metrics`, records submitted to `audit`, deduped in the limits'
/// Redis when that backend is on.
pub fn start(
    cfg: &portcullis_config::Config,
    metrics: &prometheus::Registry,
    audit: portcullis_audit::AuditHandle,
    clock: Arc<dyn Clock>,
    limiter: Arc<dyn Limiter>,
    new_id: fn() -> String,
) -> Result<Option<BudgetAlerts>, String> {
    let redis =
        crate::settings::redis_settings(cfg, std::env::var(crate::settings::REDIS_URL_ENV).ok())
            .map_err(|e| e.to_string())?;
    let env = |k: &str| std::env::var(k).ok();
    let Some(settings) =
        crate::settings::alert_settings(cfg, &env, redis.as_ref()).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let https = settings
        .webhooks
        .iter()
        .any(|w| w.url.scheme_str() == Some("https"));
    let tls = if https {
        let roots = portcullis_tls::UpstreamRoots {
            extra_ca_pems: cfg.tls.upstream_ca.clone(),
            ..portcullis_tls::UpstreamRoots::default()
        };
        let tls = portcullis_tls::UpstreamTls::new(&roots)
            .map_err(|e| format!("alerts: TLS for https webhooks: {e}"))?;
        Some(tls.http1)
    } else {
        None
    };
    let connect = settings
        .webhooks
        .iter()
        .map(|w| w.timeout)
        .max()
        .unwrap_or(Duration::from_secs(5));
    let deps = AlertDeps {
        transport: Arc::new(HttpTransport::new(tls, connect)),
        audit: Arc::new(move |r| {
            if let Err(e) = audit.submit(r) {
                tracing::warn!(error = ?e, "audit queue full; alert record not queued");
            }
        }),
        clock: clock.clone(),
        new_id,
        metrics: AlertMetrics::register(metrics).map_err(|e| e.to_string())?,
    };
    let names: Vec<&str> = settings.webhooks.iter().map(|w| w.name.as_str()).collect();
    tracing::info!(
        thresholds = ?settings.thresholds,
        webhooks = ?names,
        shared = settings.shared.is_some(),
        "budget alerts on"
    );
    let alerts = Alerts::start(settings, deps);
    Ok(Some(BudgetAlerts::new(alerts, limiter, clock)))
}
