//! [`RedisLimiter`]: the [`Limiter`] whose counters live in Redis.

use arc_swap::ArcSwapOption;
use portcullis_limits::{
    Admission, LimitError, LimitFuture, LimitScopes, Limiter, MemoryLimiter, Permit, ScopeKey,
    TokenReservation, UsageSnapshot, Usd,
};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::background;
use crate::health::{Health, RedisMetrics};
use crate::lease::{Job, LeaseBook};
use crate::scripts::USAGE;
use crate::settings::{redact_url, OnRedisError, RedisSettings, TimeSource};
use crate::shared::Shared;
use crate::wire::{OwnedScopes, Stage};

/// A [`Limiter`] shared by every replica through one Redis: each check and charge is one
/// atomic script over all of a request's scopes on the server's clock, concurrency slots are
/// leases this process renews while requests are in flight, and settlements run in the
/// background. See the crate documentation.
#[derive(Clone)]
pub struct RedisLimiter {
    shared: Arc<Shared>,
}

/// An error that keeps the limiter from starting (the URL does not parse).
#[derive(Debug, thiserror::Error)]
#[error("limits.redis_url {url}: {reason}")]
pub struct StartError {
    url: String,
    reason: String,
}

impl RedisLimiter {
    /// Starts the limiter: connects (a Redis that cannot be reached now only makes the limiter
    /// start degraded, applying `on_error` until it answers) and spawns the settlement worker,
    /// the lease renewer and the reconnecting probe on the current Tokio runtime. They stop
    /// once the limiter and every permit it granted are dropped.
    pub async fn start(
        settings: RedisSettings,
        metrics: Option<RedisMetrics>,
    ) -> Result<Self, StartError> {
        let shown = redact_url(&settings.url);
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| StartError {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        let local = match settings.on_error {
            OnRedisError::Local => Some(MemoryLimiter::new(match &settings.time {
                TimeSource::Clock(c) => c.clone(),
                TimeSource::Server => Arc::new(portcullis_core::SystemClock),
            })),
            OnRedisError::Deny | OnRedisError::Allow => None,
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        let replica = format!("{:016x}", rand::random::<u64>());
        let shared = Arc::new(Shared {
            health: Health::new(metrics, settings.on_error, shown),
            settings,
            client,
            conn: ArcSwapOption::empty(),
            local,
            book: Arc::new(LeaseBook::default()),
            jobs,
            replica,
            next_lease: AtomicU64::new(1),
        });
        if let Err(why) = shared.connect().await {
            shared.health.fail(&why);
        }
        let weak = Arc::downgrade(&shared);
        tokio::spawn(background::settle_worker(weak.clone(), rx));
        tokio::spawn(background::renew_leases(weak.clone()));
        tokio::spawn(background::probe(weak));
        Ok(Self { shared })
    }

    /// Whether Redis is unreachable and `on_error` applies.
    pub fn is_degraded(&self) -> bool {
        self.shared.health.is_degraded()
    }
}

impl Limiter for RedisLimiter {
    fn acquire(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        let shared = &self.shared;
        if shared.health.is_degraded() {
            let fallback = shared.fallback();
            let owned = OwnedScopes::from(scopes);
            return LimitFuture::boxed(async move {
                let scopes = owned.borrowed().ok_or_else(no_agent)?;
                fallback.acquire(&scopes, reservation).await
            });
        }
        let owned = OwnedScopes::from(scopes);
        LimitFuture::boxed(async move {
            let tokens = reservation.map_or(0, TokenReservation::get);
            let price = reservation.and_then(TokenReservation::price);
            match shared.exec(&owned, reservation, Stage::Both).await {
                Ok(Ok(g)) => Ok(Permit::new(Box::new(g.lease), g.rate, tokens).with_price(price)),
                Ok(Err(r)) => Err(LimitError::Limited(r)),
                Err(_) => {
                    let scopes = owned.borrowed().ok_or_else(no_agent)?;
                    shared.fallback().acquire(&scopes, reservation).await
                }
            }
        })
    }

    fn admit(&self, scopes: &LimitScopes<'_>) -> LimitFuture<'_, Result<Admission, LimitError>> {
        let shared = &self.shared;
        let owned = OwnedScopes::from(scopes);
        LimitFuture::boxed(async move {
            if !shared.health.is_degraded() {
                match shared.exec(&owned, None, Stage::Slot).await {
                    Ok(Ok(g)) => return Ok(Admission::new(Box::new(g.lease), g.usage)),
                    Ok(Err(r)) => return Err(LimitError::Limited(r)),
                    Err(_) => {}
                }
            }
            let scopes = owned.borrowed().ok_or_else(no_agent)?;
            shared.fallback().admit(&scopes).await
        })
    }

    fn acquire_admitted(
        &self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> LimitFuture<'_, Result<Permit, LimitError>> {
        let shared = &self.shared;
        let owned = OwnedScopes::from(scopes);
        LimitFuture::boxed(async move {
            let tokens = reservation.map_or(0, TokenReservation::get);
            let price = reservation.and_then(TokenReservation::price);
            if !shared.health.is_degraded() {
                match shared.exec(&owned, reservation, Stage::Charge).await {
                    Ok(Ok(g)) => {
                        return Ok(Permit::with_admission(
                            Box::new(g.lease),
                            admission,
                            g.rate,
                            tokens,
                        )
                        .with_price(price))
                    }
                    Ok(Err(r)) => return Err(LimitError::Limited(r)),
                    Err(_) => {}
                }
            }
            let scopes = owned.borrowed().ok_or_else(no_agent)?;
            shared
                .fallback()
                .acquire_admitted(&scopes, reservation, admission)
                .await
        })
    }

    fn usage_snapshot(&self, key: &ScopeKey) -> LimitFuture<'_, UsageSnapshot> {
        let shared = &self.shared;
        let key = key.clone();
        LimitFuture::boxed(async move {
            if !shared.health.is_degraded() {
                let base = format!("{}{}", shared.settings.prefix, key.as_str());
                let mut inv = USAGE.prepare_invoke();
                inv.key(base.as_str())
                    .key(format!("{base}:w"))
                    .arg(shared.now_arg());
                if let Ok((requests_last_minute, tokens_today, usd_today, usd_month)) =
                    shared.eval::<(u64, u64, u64, u64)>(&inv).await
                {
                    return UsageSnapshot {
                        requests_last_minute,
                        tokens_today,
                        usd_today: Usd::from_micros(usd_today),
                        usd_month: Usd::from_micros(usd_month),
                    };
                }
            }
            shared.fallback().usage(&key).await
        })
    }

    fn flush(&self) -> LimitFuture<'_, ()> {
        let (tx, rx) = oneshot::channel();
        if self.shared.jobs.send(Job::Flush(tx)).is_err() {
            return LimitFuture::ready(());
        }
        LimitFuture::boxed(async move {
            let _ = rx.await;
        })
    }

    fn sweep(&self) -> usize {
        self.shared.local.as_ref().map_or(0, MemoryLimiter::sweep)
    }

    fn degraded(&self) -> Option<String> {
        self.shared.health.describe()
    }
}

fn no_agent() -> LimitError {
    LimitError::Unavailable("a limit check without an agent scope".to_owned())
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.shared.settings.prefix)
            .field("degraded", &self.shared.health.is_degraded())
            .finish_non_exhaustive()
    }
}
