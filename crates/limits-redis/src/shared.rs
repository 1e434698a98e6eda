//! The state every part of the Redis limiter shares: the connection, the health, the lease
//! book, the settlement queue; and the scripts' calls on it.

use arc_swap::ArcSwapOption;
use portcullis_limits::{
    Admission, LimitError, LimitScopes, Limiter, MemoryLimiter, Permit, Refusal, ScopeKey,
    TokenReservation, UsageSnapshot,
};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;

use crate::health::Health;
use crate::lease::{Job, LeaseBook, NoLease, RedisLease, Taken};
use crate::scripts::ACQUIRE;
use crate::settings::{OnRedisError, RedisSettings, TimeSource};
use crate::wire::{cap, kind_code, limit_arg, parse_acquire, Answer, OwnedScopes, Stage};

/// Longest wait for a new connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the limiter, its permits and its background tasks share: the settings, the Redis
/// connection (replaced on reconnect), the local fallback, the health, the lease book and the
/// settlement queue.
pub(crate) struct Shared {
    pub(crate) settings: RedisSettings,
    pub(crate) client: redis::Client,
    pub(crate) conn: ArcSwapOption<MultiplexedConnection>,
    pub(crate) local: Option<MemoryLimiter>,
    pub(crate) health: Health,
    pub(crate) book: Arc<LeaseBook>,
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    /// Distinguishes this process's leases from every other replica's.
    pub(crate) replica: String,
    pub(crate) next_lease: AtomicU64,
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
    pub(crate) fn connection(&self) -> Option<MultiplexedConnection> {
        if self.health.is_degraded() {
            return None;
        }
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Unix seconds now by this process's clock (the injected one in tests), for what the
    /// limiter answers without asking Redis.
    pub(crate) fn now_secs(&self) -> u64 {
        let now = match &self.settings.time {
            TimeSource::Server => std::time::SystemTime::now(),
            TimeSource::Clock(c) => c.now(),
        };
        now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
    pub(crate) async fn exec(
        self: &Arc<Self>,
        owned: &OwnedScopes,
        reservation: Option<TokenReservation>,
        stage: Stage,
    ) -> Result<Result<Granted, Refusal>, String> {
        if stage.charges() {
            let unpriced = owned
                .borrowed()
                .and_then(|s| s.unpriced_refusal(reservation, self.now_secs()));
            if let Some(r) = unpriced {
                return Ok(Err(r));
            }
        }
        let tokens = reservation.map(TokenReservation::get);
        let usd = reservation
            .and_then(TokenReservation::usd)
            .map(|u| cap(u.micros()));
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
            .arg(report)
            .arg(usd.map_or(-1, |u| u as i64));
        for s in &owned.scopes {
            let l = &s.settings;
            inv.arg(kind_code(s.kind))
                .arg(limit_arg(l.rpm))
                .arg(limit_arg(l.tpm))
                .arg(limit_arg(l.tokens_per_day))
                .arg(limit_arg(l.max_concurrent))
                .arg(l.day_reset_offset.secs())
                .arg(limit_arg(l.usd_per_day.map(|u| u.micros())))
                .arg(limit_arg(l.usd_per_month.map(|u| u.micros())));
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
                    reserved_usd: usd.unwrap_or(0),
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
    pub(crate) fn fallback(&self) -> Fallback<'_> {
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
pub(crate) struct Granted {
    pub(crate) lease: RedisLease,
    pub(crate) rate: Option<portcullis_limits::RateInfo>,
    pub(crate) usage: UsageSnapshot,
}

pub(crate) enum Fallback<'a> {
    Local(&'a MemoryLimiter),
    Deny(String),
    Allow,
}

impl Fallback<'_> {
    pub(crate) async fn acquire(
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
            )
            .with_price(reservation.and_then(TokenReservation::price))),
        }
    }

    pub(crate) async fn admit(self, scopes: &LimitScopes<'_>) -> Result<Admission, LimitError> {
        match self {
            Fallback::Local(m) => m.admit(scopes).await,
            Fallback::Deny(why) => Err(LimitError::Unavailable(why)),
            Fallback::Allow => Ok(Admission::none()),
        }
    }

    pub(crate) async fn acquire_admitted(
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
            )
            .with_price(reservation.and_then(TokenReservation::price))),
        }
    }

    pub(crate) async fn usage(self, key: &ScopeKey) -> UsageSnapshot {
        match self {
            Fallback::Local(m) => m.usage_snapshot(key).await,
            Fallback::Deny(_) | Fallback::Allow => UsageSnapshot::default(),
        }
    }
}
