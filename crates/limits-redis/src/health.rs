//! Whether Redis answers: the degraded flag, its metrics, and one log line per outage and one
//! per recovery.

use prometheus::{IntCounter, IntGauge, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tracing::{info, warn};

use crate::settings::OnRedisError;

/// The limiter's metrics: `portcullis_limits_backend_errors_total` (failed calls to Redis) and
/// `portcullis_limits_backend_degraded` (1 while Redis cannot be reached and
/// `on_redis_error` applies).
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    /// Failed calls.
    pub errors: IntCounter,
    /// 1 while degraded.
    pub degraded: IntGauge,
}

impl RedisMetrics {
    /// Registers both metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let errors = IntCounter::new(
            "portcullis_limits_backend_errors_total",
            "Calls to the shared limits backend (Redis) that failed or timed out",
        )?;
        let degraded = IntGauge::new(
            "portcullis_limits_backend_degraded",
            "1 while the shared limits backend cannot be reached and limits.on_redis_error applies",
        )?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        Ok(Self { errors, degraded })
    }
}

/// Degraded state shared by every call and background task.
#[derive(Debug)]
pub(crate) struct Health {
    degraded: AtomicBool,
    reason: Mutex<String>,
    metrics: Option<RedisMetrics>,
    on_error: OnRedisError,
    url: String,
}

impl Health {
    pub(crate) fn new(metrics: Option<RedisMetrics>, on_error: OnRedisError, url: String) -> Self {
        Self {
            degraded: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            metrics,
            on_error,
            url,
        }
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// A call failed: counted; the first failure of an outage is logged and flips the state.
    pub(crate) fn fail(&self, why: &str) {
        if let Some(m) = &self.metrics {
            m.errors.inc();
        }
        if !self.degraded.swap(true, Ordering::AcqRel) {
            if let Ok(mut r) = self.reason.lock() {
                *r = why.to_owned();
            }
            if let Some(m) = &self.metrics {
                m.degraded.set(1);
            }
            warn!(
                redis = %self.url,
                error = why,
                on_redis_error = self.on_error.as_str(),
                "limits backend unavailable: applying limits.on_redis_error until it is back"
            );
        }
    }

    /// Redis answered again: the end of an outage is logged once.
    pub(crate) fn recover(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            if let Some(m) = &self.metrics {
                m.degraded.set(0);
            }
            info!(redis = %self.url, "limits backend reachable again: shared limits apply");
        }
    }

    /// Why the backend is degraded, for `/readyz`.
    pub(crate) fn describe(&self) -> Option<String> {
        if !self.is_degraded() {
            return None;
        }
        let reason = self.reason.lock().map(|r| r.clone()).unwrap_or_default();
        Some(format!(
            "redis at {} unreachable ({reason}); on_redis_error = {}",
            self.url,
            self.on_error.as_str()
        ))
    }
}
