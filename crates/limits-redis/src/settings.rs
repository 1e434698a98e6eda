//! How the shared limiter reaches Redis and what it does when it cannot.

use portcullis_core::Clock;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// What a request gets while Redis cannot be reached (`limits.on_redis_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Fall back to this replica's in-memory limiter: limits still hold per replica (so the
    /// fleet admits up to replicas × the limit) until Redis is back.
    #[default]
    Local,
    /// Refuse every request that needs a limit check (503 `limits_unavailable`): no request
    /// escapes its limits, and none gets through.
    Deny,
    /// Admit without limits: traffic flows, nothing is limited until Redis is back.
    Allow,
}

impl OnRedisError {
    /// `local`, `deny` or `allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

impl fmt::Display for OnRedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OnRedisError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "deny" => Ok(Self::Deny),
            "allow" => Ok(Self::Allow),
            other => Err(format!(
                "unknown value {other:?} (use \"local\", \"deny\" or \"allow\")"
            )),
        }
    }
}

/// Where time comes from.
#[derive(Clone, Default)]
pub enum TimeSource {
    /// The Redis server's clock (`TIME`, read inside each script): every replica decides on
    /// the same clock, whatever its own says. The default, and the only sound choice in
    /// production.
    #[default]
    Server,
    /// An injected clock whose time is sent with each call (tests drive it by hand).
    Clock(Arc<dyn Clock>),
}

impl fmt::Debug for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server => f.write_str("Server"),
            Self::Clock(_) => f.write_str("Clock"),
        }
    }
}

/// Settings of the Redis limiter.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key (several gateways, or tests, can share one Redis).
    pub prefix: String,
    /// Lifetime of a concurrency lease. A live replica renews its leases every third of it;
    /// the slots of a replica that died come back at most this long after its last renewal.
    pub lease: Duration,
    /// Longest wait for one answer from Redis before the call counts as failed.
    pub timeout: Duration,
    /// What happens while Redis cannot be reached.
    pub on_error: OnRedisError,
    /// How often an unreachable Redis is tried again.
    pub probe_every: Duration,
    /// Where time comes from.
    pub time: TimeSource,
}

impl RedisSettings {
    /// Defaults for `url`: prefix `portcullis:limits:`, 30 s leases, 250 ms timeout, `local`
    /// fallback, a probe every second, the server's clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "portcullis:limits:".to_owned(),
            lease: Duration::from_secs(30),
            timeout: Duration::from_millis(250),
            on_error: OnRedisError::Local,
            probe_every: Duration::from_secs(1),
            time: TimeSource::Server,
        }
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@db:6379/0"),
            "redis://user:***@db:6379/0"
        );
        assert_eq!(redact_url("rediss://tok@db:6380"), "rediss://***@db:6380");
        assert_eq!(redact_url("redis://db:6379"), "redis://db:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn fallback_names() {
        for v in [OnRedisError::Local, OnRedisError::Deny, OnRedisError::Allow] {
            assert_eq!(v.as_str().parse::<OnRedisError>(), Ok(v));
        }
        assert!("open".parse::<OnRedisError>().is_err());
    }
}
