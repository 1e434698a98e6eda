//! Alert metrics: fired, deduplicated across replicas, sent per webhook and outcome, dropped.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Why an alert was dropped (the `reason` label of `portcullis_alerts_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The queue between the request path and the dispatcher was full.
    QueueFull,
    /// A webhook's own queue was full (it is slow or down); other webhooks still got it.
    WebhookQueueFull,
    /// The dedupe state was full of budgets whose periods still run.
    StateFull,
    /// Too many usage reads of a shared limiter were in flight; this observation was skipped.
    Busy,
}

impl Dropped {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::WebhookQueueFull => "webhook_queue_full",
            Self::StateFull => "state_full",
            Self::Busy => "busy",
        }
    }
}

/// How one delivery ended (the `outcome` label of `portcullis_alerts_sent_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// A 4xx answer other than 408 and 429: the receiver refuses it, retrying cannot help.
    Rejected,
    /// Every attempt failed (connection error, timeout, 408, 429, 5xx, other status).
    Failed,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// The alerts' Prometheus metrics.
///
/// - `portcullis_alerts_fired_total{budget}`: alerts fired (audited and queued to every
///   webhook) by this replica.
/// - `portcullis_alerts_deduplicated_total`: alerts this replica did not fire because another
///   replica already had (shared Redis dedupe).
/// - `portcullis_alerts_sent_total{webhook,outcome}`: deliveries by outcome: `ok`,
///   `rejected` (4xx), `failed` (every attempt failed).
/// - `portcullis_alerts_dropped_total{reason}`: alerts or observations dropped: `queue_full`,
///   `webhook_queue_full`, `state_full`, `busy`.
#[derive(Debug, Clone)]
pub struct AlertMetrics {
    fired: IntCounterVec,
    deduplicated: IntCounter,
    sent: IntCounterVec,
    dropped: IntCounterVec,
}

impl AlertMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.fired.clone()))?;
        registry.register(Box::new(m.deduplicated.clone()))?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            fired: IntCounterVec::new(
                Opts::new(
                    "portcullis_alerts_fired_total",
                    "Budget alerts fired by this replica, by budget.",
                ),
                &["budget"],
            )?,
            deduplicated: IntCounter::new(
                "portcullis_alerts_deduplicated_total",
                "Budget alerts not fired here because another replica fired them.",
            )?,
            sent: IntCounterVec::new(
                Opts::new(
                    "portcullis_alerts_sent_total",
                    "Budget alert deliveries per webhook and outcome (ok, rejected, failed).",
                ),
                &["webhook", "outcome"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "portcullis_alerts_dropped_total",
                    "Budget alerts (or usage observations) dropped, by reason.",
                ),
                &["reason"],
            )?,
        })
    }

    pub(crate) fn fired(&self, budget: &str) {
        self.fired.with_label_values(&[budget]).inc();
    }

    pub(crate) fn deduplicated(&self) {
        self.deduplicated.inc();
    }

    pub(crate) fn sent(&self, webhook: &str, outcome: Outcome) {
        self.sent
            .with_label_values(&[webhook, outcome.as_str()])
            .inc();
    }

    /// Counts one drop.
    pub fn dropped(&self, why: Dropped) {
        self.dropped.with_label_values(&[why.as_str()]).inc();
    }

    /// Drops counted for `why` (tests, status).
    pub fn dropped_count(&self, why: Dropped) -> u64 {
        self.dropped.with_label_values(&[why.as_str()]).get()
    }

    /// Deliveries counted for `webhook` and `outcome`.
    pub fn sent_count(&self, webhook: &str, outcome: Outcome) -> u64 {
        self.sent
            .with_label_values(&[webhook, outcome.as_str()])
            .get()
    }

    /// Alerts fired for `budget`.
    pub fn fired_count(&self, budget: &str) -> u64 {
        self.fired.with_label_values(&[budget]).get()
    }
}
