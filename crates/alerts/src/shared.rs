//! Firing once across replicas: the first replica to `SET key NX PX <until the period ends>`
//! in Redis fires the alert; the others see the key and do not.

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::time::Duration;

/// Where the shared dedupe keys live: the limits backend's Redis.
#[derive(Debug, Clone)]
pub struct SharedDedupe {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Key prefix (the limits' `redis_prefix`): keys are `<prefix>alert:...`.
    pub prefix: String,
    /// Longest wait for one call (and for a connection).
    pub timeout: Duration,
}

/// How long a claim outlives its period, for replicas whose clocks disagree a little.
const GRACE_MS: i64 = 60_000;

/// A lazily (re)connected client for claims.
pub(crate) struct Claims {
    settings: SharedDedupe,
    client: Option<redis::Client>,
    conn: Option<MultiplexedConnection>,
}

impl Claims {
    pub(crate) fn new(settings: SharedDedupe) -> Self {
        let client = redis::Client::open(settings.url.as_str()).ok();
        Self {
            settings,
            client,
            conn: None,
        }
    }

    /// Claims `key` until `until_ms` (Unix ms) plus a grace: `Ok(true)` when this replica is
    /// the first, `Ok(false)` when another one was, `Err` when Redis did not answer.
    pub(crate) async fn claim(
        &mut self,
        key: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, String> {
        let ttl = until_ms
            .saturating_sub(now_ms)
            .saturating_add(GRACE_MS)
            .max(1000);
        let key = format!("{}{key}", self.settings.prefix);
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(1).arg("NX").arg("PX").arg(ttl);
        let set = cmd.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(self.settings.timeout, set).await {
            Ok(Ok(answer)) => Ok(answer.is_some()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                Err(format!("no answer within {:?}", self.settings.timeout))
            }
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| "invalid Redis URL".to_owned())?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(self.settings.timeout));
        let connect = client.get_multiplexed_async_connection_with_config(&cfg);
        let wait = self.settings.timeout.max(Duration::from_secs(1));
        let conn = match tokio::time::timeout(wait, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("connect timed out".to_owned()),
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}
