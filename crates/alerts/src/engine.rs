//! The running alerts: observations in (non-blocking), a dispatcher that claims (Redis),
//! audits and fans out, and one delivery task per webhook.

use crate::alert::Alert;
use crate::budget::BudgetUse;
use crate::delivery::{self, Transport, Webhook};
use crate::metrics::{AlertMetrics, Dropped};
use crate::shared::{Claims, SharedDedupe};
use crate::tracker::{Full, Tracker};
use portcullis_core::{AuditRecord, Clock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Most budgets whose fired thresholds are remembered (each a few dozen bytes).
pub const DEFAULT_MAX_TRACKED: usize = 100_000;

/// How often budgets of ended periods are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What `[alerts]` asks for.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Fractions of a budget, sorted ascending and deduplicated.
    pub thresholds: Vec<f64>,
    /// Capacity of the queue to the dispatcher and of each webhook's queue.
    pub queue: usize,
    /// Where alerts go.
    pub webhooks: Vec<Webhook>,
    /// Most budgets remembered.
    pub max_tracked: usize,
    /// Fire once across replicas through Redis; `None`: once per replica (in memory).
    pub shared: Option<SharedDedupe>,
}

/// Writes a fired alert's audit record (the audit pipeline's non-blocking submit).
pub type AuditSink = Arc<dyn Fn(AuditRecord) + Send + Sync>;

/// What the engine is given: how to POST, where records go, the clock, the id source.
#[derive(Clone)]
pub struct AlertDeps {
    /// The HTTP client.
    pub transport: Arc<dyn Transport>,
    /// Where each fired alert's audit record goes.
    pub audit: AuditSink,
    /// Time of alerts and of periods.
    pub clock: Arc<dyn Clock>,
    /// Unique time-ordered ids (the audit record ids' generator).
    pub new_id: fn() -> String,
    /// Metrics.
    pub metrics: AlertMetrics,
}

/// The handle the request path holds: [`Alerts::observe`] never waits.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    tracker: Arc<Mutex<Tracker>>,
    tx: mpsc::Sender<Alert>,
    clock: Arc<dyn Clock>,
    new_id: fn() -> String,
    metrics: AlertMetrics,
    /// Alerts queued or being delivered (one per alert before the dispatcher, one per
    /// webhook after it).
    pending: Arc<AtomicUsize>,
}

impl Alerts {
    /// Starts the dispatcher and one delivery task per webhook (call inside a Tokio runtime).
    /// They stop once every handle is dropped and their queues are empty.
    pub fn start(settings: AlertSettings, deps: AlertDeps) -> Self {
        let queue = settings.queue.max(1);
        let tracker = Arc::new(Mutex::new(Tracker::new(
            settings.thresholds,
            settings.max_tracked,
        )));
        let pending = Arc::new(AtomicUsize::new(0));
        let mut hooks = Vec::with_capacity(settings.webhooks.len());
        for hook in settings.webhooks {
            let (tx, rx) = mpsc::channel(queue);
            tokio::spawn(delivery::run(
                hook,
                deps.transport.clone(),
                rx,
                deps.metrics.clone(),
                pending.clone(),
            ));
            hooks.push(tx);
        }
        let (tx, rx) = mpsc::channel(queue);
        let dispatcher = Dispatcher {
            claims: settings.shared.map(Claims::new),
            audit: deps.audit,
            hooks,
            tracker: tracker.clone(),
            clock: deps.clock.clone(),
            metrics: deps.metrics.clone(),
            pending: pending.clone(),
        };
        tokio::spawn(dispatcher.run(rx));
        Self {
            inner: Arc::new(Inner {
                tracker,
                tx,
                clock: deps.clock,
                new_id: deps.new_id,
                metrics: deps.metrics,
                pending,
            }),
        }
    }

    /// Checks one budget after a request settled: every threshold it reaches for the first
    /// time in its period is queued as one alert (lowest first). Never blocks: a full queue
    /// drops the alert (counted). Returns how many alerts were queued.
    pub fn observe(&self, u: &BudgetUse<'_>) -> usize {
        let i = &self.inner;
        let now_ms = unix_ms(i.clock.as_ref());
        let crossed = {
            let mut t = lock(&i.tracker);
            match t.crossed(u, now_ms.div_euclid(1000)) {
                Ok(c) if c.is_empty() => return 0,
                Ok(c) => c
                    .into_iter()
                    .filter_map(|n| t.thresholds().get(n).copied())
                    .collect::<Vec<_>>(),
                Err(Full) => {
                    i.metrics.dropped(Dropped::StateFull);
                    return 0;
                }
            }
        };
        let mut queued = 0;
        for threshold in crossed {
            let alert = Alert::new((i.new_id)(), now_ms, u, threshold);
            i.pending.fetch_add(1, Ordering::AcqRel);
            match i.tx.try_send(alert) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    i.pending.fetch_sub(1, Ordering::AcqRel);
                    i.metrics.dropped(Dropped::QueueFull);
                    warn!(
                        budget = u.budget,
                        threshold, "alert queue full; alert dropped"
                    );
                }
                // The dispatcher is gone: the runtime is shutting down.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    i.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        queued
    }

    /// Counts an observation that was skipped before it reached [`Alerts::observe`].
    pub fn skipped(&self, why: Dropped) {
        self.inner.metrics.dropped(why);
    }

    /// The metrics.
    pub fn metrics(&self) -> &AlertMetrics {
        &self.inner.metrics
    }

    /// Waits (at most `limit`) until every queued alert was delivered or given up, e.g. at
    /// shutdown; whether they all were.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.inner.pending.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Budgets currently remembered.
    pub fn tracked(&self) -> usize {
        lock(&self.inner.tracker).len()
    }
}

struct Dispatcher {
    claims: Option<Claims>,
    audit: AuditSink,
    hooks: Vec<mpsc::Sender<Arc<Alert>>>,
    tracker: Arc<Mutex<Tracker>>,
    clock: Arc<dyn Clock>,
    metrics: AlertMetrics,
    pending: Arc<AtomicUsize>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Alert>) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(alert) => {
                        self.fire(alert).await;
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                    }
                    None => return,
                },
                _ = sweep.tick() => {
                    let now = unix_ms(self.clock.as_ref()).div_euclid(1000);
                    lock(&self.tracker).sweep(now);
                }
            }
        }
    }

    /// Fires `alert` unless another replica already did: audit record, log line, and a
    /// place in every webhook's queue.
    async fn fire(&mut self, alert: Alert) {
        if let Some(claims) = &mut self.claims {
            let now = unix_ms(self.clock.as_ref());
            let until = alert.period.end.saturating_mul(1000);
            match claims.claim(&alert.dedupe_key(), now, until).await {
                Ok(true) => {}
                Ok(false) => {
                    self.metrics.deduplicated();
                    return;
                }
                // Better twice than never: without Redis each replica fires on its own.
                Err(e) => {
                    warn!(error = %e, "alert dedupe in Redis failed; firing from this replica")
                }
            }
        }
        self.metrics.fired(alert.budget);
        info!(
            alert = %alert.id,
            scope = alert.scope.as_str(),
            agent = alert.agent.as_deref().unwrap_or(""),
            tenant = %alert.tenant,
            budget = alert.budget,
            threshold = alert.threshold,
            spent = alert.spent,
            limit = alert.limit,
            "budget alert"
        );
        (self.audit)(alert.audit_record());
        let alert = Arc::new(alert);
        for tx in &self.hooks {
            self.pending.fetch_add(1, Ordering::AcqRel);
            if tx.try_send(alert.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.metrics.dropped(Dropped::WebhookQueueFull);
            }
        }
    }
}

fn lock(m: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Period, Scope};
    use crate::delivery::Format;
    use crate::metrics::Outcome;
    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use http::{HeaderMap, Uri};
    use portcullis_core::{ManualClock, RequestKind};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Records every POST body; answers 200, or never when `hang`.
    #[derive(Default)]
    struct Receiver {
        bodies: Mutex<Vec<Bytes>>,
        hang: bool,
    }

    impl Transport for Receiver {
        fn post(&self, _: &Uri, _: HeaderMap, b: Bytes) -> BoxFuture<'static, Result<u16, String>> {
            self.bodies.lock().unwrap().push(b);
            let hang = self.hang;
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(200)
            })
        }
    }

    fn next_id() -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!("id{}", N.fetch_add(1, Ordering::Relaxed))
    }

    struct Rig {
        alerts: Alerts,
        receiver: Arc<Receiver>,
        records: Arc<Mutex<Vec<AuditRecord>>>,
        clock: Arc<ManualClock>,
    }

    fn rig(queue: usize, hang: bool) -> Rig {
        rig_with(queue, hang, None)
    }

    fn rig_with(queue: usize, hang: bool, shared: Option<SharedDedupe>) -> Rig {
        let receiver = Arc::new(Receiver {
            hang,
            ..Receiver::default()
        });
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let clock = Arc::new(ManualClock::at(1_796_256_000 + 3600));
        let alerts = Alerts::start(
            AlertSettings {
                thresholds: vec![0.5, 0.8, 1.0],
                queue,
                webhooks: vec![Webhook {
                    name: "ops".into(),
                    url: Uri::from_static("http://127.0.0.1:9/"),
                    format: Format::Json,
                    secret: None,
                    timeout: Duration::from_secs(3600),
                    max_retries: 0,
                    retry_backoff: Duration::from_millis(10),
                }],
                max_tracked: 100,
                shared,
            },
            AlertDeps {
                transport: receiver.clone(),
                audit: Arc::new(move |r| sink.lock().unwrap().push(r)),
                clock: clock.clone(),
                new_id: next_id,
                metrics: AlertMetrics::unregistered().unwrap(),
            },
        );
        Rig {
            alerts,
            receiver,
            records,
            clock,
        }
    }

    fn day(clock: &ManualClock) -> Period {
        Period::day(
            i64::try_from(clock.unix_secs()).unwrap(),
            portcullis_core::UtcOffset::UTC,
        )
    }

    fn spent(id: &str, spent: f64, period: Period) -> BudgetUse<'_> {
        BudgetUse {
            scope: Scope::Agent,
            id,
            tenant: "acme",
            budget: "tokens_per_day",
            spent,
            limit: 1000.0,
            period,
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    fn thresholds(r: &Rig) -> Vec<f64> {
        r.receiver
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["threshold"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_per_threshold_and_rearms_on_the_next_day() {
        let r = rig(16, false);
        let p = day(&r.clock);
        for s in [100.0, 520.0, 600.0, 950.0, 960.0, 1200.0, 1300.0] {
            r.alerts.observe(&spent("bot", s, p));
        }
        settle().await;
        assert!(r.alerts.drain(Duration::from_secs(1)).await);
        assert_eq!(thresholds(&r), vec![0.5, 0.8, 1.0]);
        let recs = r.records.lock().unwrap().clone();
        assert_eq!(recs.len(), 3);
        assert!(recs
            .iter()
            .all(|x| x.kind == RequestKind::Alert && x.agent_id == "bot"));
        assert_eq!(r.alerts.metrics().sent_count("ops", Outcome::Ok), 3);
        assert_eq!(r.alerts.metrics().fired_count("tokens_per_day"), 3);
        // Midnight: a new period, every threshold armed again.
        r.clock.advance(Duration::from_secs(86_400));
        let next = day(&r.clock);
        assert_eq!(next.start, p.end);
        assert_eq!(r.alerts.observe(&spent("bot", 510.0, next)), 1);
        assert_eq!(
            r.alerts.observe(&spent("bot", 1300.0, p)),
            0,
            "late report of yesterday"
        );
        settle().await;
        assert_eq!(thresholds(&r), vec![0.5, 0.8, 1.0, 0.5]);
        let v: serde_json::Value =
            serde_json::from_slice(r.receiver.bodies.lock().unwrap().last().unwrap()).unwrap();
        assert_eq!(v["period"]["start"], "2026-12-04T00:00:00.000Z");
        assert_eq!(v["spent"], 510);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // One slot to the dispatcher, one per webhook, and a webhook that never answers.
        let r = rig(1, true);
        let p = day(&r.clock);
        // Not yet polled: the dispatcher's queue holds one, the rest is dropped at once.
        let queued: usize = ["a", "b", "c"]
            .iter()
            .map(|id| r.alerts.observe(&spent(id, 600.0, p)))
            .sum();
        assert_eq!(queued, 1);
        let m = r.alerts.metrics();
        assert_eq!(m.dropped_count(Dropped::QueueFull), 2);
        settle().await;
        // Stuck webhook: one in delivery, one in its queue, then its queue is full.
        for id in ["d", "e", "f", "g"] {
            r.alerts.observe(&spent(id, 600.0, p));
            settle().await;
        }
        // "d" waits in the webhook's queue behind "a"; "e", "f", "g" find it full.
        assert_eq!(m.dropped_count(Dropped::WebhookQueueFull), 3);
        assert!(
            !r.alerts.drain(Duration::from_secs(5)).await,
            "a stuck webhook holds its alerts: the drain gives up at its bound"
        );
        assert_eq!(
            r.records.lock().unwrap().len(),
            5,
            "every fired alert is audited"
        );
        assert_eq!(r.alerts.tracked(), 7);
    }

    #[tokio::test]
    async fn an_unreachable_redis_still_fires_from_this_replica() {
        // Nothing listens on port 1: the claim fails at once, and the alert fires anyway
        // (twice across replicas is better than never).
        let r = rig_with(
            4,
            false,
            Some(SharedDedupe {
                url: "redis://127.0.0.1:1".into(),
                prefix: "t:".into(),
                timeout: Duration::from_millis(500),
            }),
        );
        assert_eq!(r.alerts.observe(&spent("bot", 500.0, day(&r.clock))), 1);
        for _ in 0..500 {
            if !r.records.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.records.lock().unwrap().len(), 1);
        assert_eq!(r.alerts.metrics().fired_count("tokens_per_day"), 1);
    }
}
