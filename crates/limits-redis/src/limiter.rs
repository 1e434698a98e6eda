//! [`RedisLimiter`]: the [`Limiter`] whose counters live in Redis.

use arc_swap::ArcSwapOption;
use portcullis_limits::{
    Admission, LimitError, LimitFuture, LimitScopes, Limiter, MemoryLimiter, Permit, Refusal,
    ScopeKey, TokenReservation, UsageSnapshot,
};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

use crate::background;
use crate::health::{Health, RedisMetrics};
use crate::lease::{Job, LeaseBook, NoLease, RedisLease, Taken};
use crate::scripts::{ACQUIRE, USAGE};
use crate::settings::{redact_url, OnRedisError, RedisSettings, TimeSource};
use crate::wire::{cap, kind_code, limit_arg, parse_acquire, Answer, OwnedScopes, Stage};

/// Longest wait for a new connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Limiter`] shared by every replica through one Redis: each check and charge is one
/// atomic script over all of a request's scopes on the server's clock, concurrency slots are
/// leases this process renews while requests are in flight, and settlements run in the
/// background. See the crate documentation.
#[derive(Clone)]
pub struct RedisLimiter {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) settings: RedisSettings,
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    local: Option<MemoryLimiter>,
    pub(crate) health: Health,
    pub(crate) book: Arc<LeaseBook>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Distinguishes this process's leases from every other replica's.
    replica: String,
    next_lease: AtomicU64,
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

impl Shared {
    /// Opens a connection and checks that the server answers.
    pub(crate) async fn connect(&self) -> Result<(), String> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.settings.timeout));
        let attempt = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => {
                self.conn.store(Some(Arc::new(conn)));
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".to_owned()),
        }
    }

    /// A connection, unless the backend is degraded.
    fn connection(&self) -> Option<MultiplexedConnection> {
        if self.health.is_degraded() {
            return None;
        }
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// `now` for a script: empty for the server's clock, else the injected time in µs.
    pub(crate) fn now_arg(&self) -> String {
        match &self.settings.time {
            TimeSource::Server => String::new(),
            TimeSource::Clock(c) => c
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros())
                .to_string(),
        }
    }

    /// Runs a prepared script invocation with the timeout. A failure is counted, degrades the
    /// backend and drops the connection (the probe reconnects).
    pub(crate) async fn eval<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let Some(mut conn) = self.connection() else {
            return Err("not connected".to_owned());
        };
        let answer = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<T>(&mut conn),
        );
        let why = match answer.await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.conn.store(None);
        self.health.fail(&why);
        Err(why)
    }

    /// The id of lease number `n` in Redis: this process's id and the number.
    pub(crate) fn lease_id_of(&self, n: u64) -> String {
        format!("{}:{n}", self.replica)
    }

    /// One check-and-charge: `Ok(Err(refusal))` when a limit refused, `Err` when Redis failed.
    async fn exec(
        self: &Arc<Self>,
        owned: &OwnedScopes,
        tokens: Option<u64>,
        stage: Stage,
    ) -> Result<Result<Granted, Refusal>, String> {
        let keys = owned.keys(&self.settings.prefix);
        let lease = stage
            .takes_slot()
            .then(|| self.next_lease.fetch_add(1, Ordering::Relaxed));
        let mut inv = ACQUIRE.prepare_invoke();
        for k in keys.iter() {
            inv.key(k.as_str());
        }
        let report = if stage == Stage::Slot {
            owned.agent + 1
        } else {
            0
        };
        inv.arg(self.now_arg())
            .arg(stage as i64)
            .arg(tokens.map_or(-1, |t| cap(t) as i64))
            .arg(lease.map(|n| self.lease_id_of(n)).unwrap_or_default())
            .arg(
                self.settings
                    .lease
                    .as_micros()
                    .min(u128::from(crate::wire::MAX_EXACT)) as u64,
            )
            .arg(report);
        for s in &owned.scopes {
            let l = &s.settings;
            inv.arg(kind_code(s.kind))
                .arg(limit_arg(l.rpm))
                .arg(limit_arg(l.tpm))
                .arg(limit_arg(l.tokens_per_day))
                .arg(limit_arg(l.max_concurrent))
                .arg(l.day_reset_offset.secs());
        }
        let reply: Vec<i64> = self.eval(&inv).await?;
        match parse_acquire(&reply, owned.scopes.len()) {
            Ok(Answer::Refused(r)) => Ok(Err(r)),
            Ok(Answer::Admitted {
                rate,
                usage,
                charged,
            }) => {
                if let Some(n) = lease {
                    let sets: Vec<String> = keys.iter().skip(2).step_by(3).cloned().collect();
                    self.book.insert(n, sets.into());
                }
                let taken = Taken {
                    reserved: tokens.map_or(0, cap),
                    charged: stage.charges().then_some(charged),
                    offsets: owned
                        .scopes
                        .iter()
                        .map(|s| i64::from(s.settings.day_reset_offset.secs()))
                        .collect(),
                };
                let lease = RedisLease {
                    jobs: self.jobs.clone(),
                    book: self.book.clone(),
                    keys,
                    lease,
                    taken,
                };
                Ok(Ok(Granted { lease, rate, usage }))
            }
            Err(why) => {
                self.health.fail(&why);
                Err(why)
            }
        }
    }

    /// The answer while Redis cannot be asked, per `on_error`.
    fn fallback(&self) -> Fallback<'_> {
        match (self.settings.on_error, &self.local) {
            (OnRedisError::Local, Some(local)) => Fallback::Local(local),
            (OnRedisError::Allow, _) => Fallback::Allow,
            _ => Fallback::Deny(
                self.health
                    .describe()
                    .unwrap_or_else(|| "redis unreachable".to_owned()),
            ),
        }
    }
}

/// What a successful script call granted.
struct Granted {
    lease: RedisLease,
    rate: Option<portcullis_limits::RateInfo>,
    usage: UsageSnapshot,
}

enum Fallback<'a> {
    Local(&'a MemoryLimiter),
    Deny(String),
    Allow,
}

impl Fallback<'_> {
    async fn acquire(
        self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
    ) -> Result<Permit, LimitError> {
        match self {
            Fallback::Local(m) => m.acquire(scopes, reservation).await,
            Fallback::Deny(why) => Err(LimitError::Unavailable(why)),
            Fallback::Allow => Ok(Permit::new(
                Box::new(NoLease),
                None,
                reservation.map_or(0, TokenReservation::get),
            )),
        }
    }

    async fn admit(self, scopes: &LimitScopes<'_>) -> Result<Admission, LimitError> {
        match self {
            Fallback::Local(m) => m.admit(scopes).await,
            Fallback::Deny(why) => Err(LimitError::Unavailable(why)),
            Fallback::Allow => Ok(Admission::none()),
        }
    }

    async fn acquire_admitted(
        self,
        scopes: &LimitScopes<'_>,
        reservation: Option<TokenReservation>,
        admission: Admission,
    ) -> Result<Permit, LimitError> {
        match self {
            Fallback::Local(m) => m.acquire_admitted(scopes, reservation, admission).await,
            Fallback::Deny(why) => Err(LimitError::Unavailable(why)),
            Fallback::Allow => Ok(Permit::with_admission(
                Box::new(NoLease),
                admission,
                None,
                reservation.map_or(0, TokenReservation::get),
            )),
        }
    }

    async fn usage(self, key: &ScopeKey) -> UsageSnapshot {
        match self {
            Fallback::Local(m) => m.usage_snapshot(key).await,
            Fallback::Deny(_) | Fallback::Allow => UsageSnapshot::default(),
        }
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
            let tokens = reservation.map(TokenReservation::get);
            match shared.exec(&owned, tokens, Stage::Both).await {
                Ok(Ok(g)) => Ok(Permit::new(Box::new(g.lease), g.rate, tokens.unwrap_or(0))),
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
            let tokens = reservation.map(TokenReservation::get);
            if !shared.health.is_degraded() {
                match shared.exec(&owned, tokens, Stage::Charge).await {
                    Ok(Ok(g)) => {
                        return Ok(Permit::with_admission(
                            Box::new(g.lease),
                            admission,
                            g.rate,
                            tokens.unwrap_or(0),
                        ))
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
                if let Ok((requests_last_minute, tokens_today)) =
                    shared.eval::<(u64, u64)>(&inv).await
                {
                    return UsageSnapshot {
                        requests_last_minute,
                        tokens_today,
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
