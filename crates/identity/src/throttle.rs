//! Throttling of failed authentications, so secrets cannot be guessed at line rate.
//!
//! Failures are counted per client address (IPv6 by /64, IPv4-mapped as IPv4) and per
//! claimed agent id, each a GCRA bucket: a burst of `burst` failures, then `per_minute`
//! more per minute. Once either bucket is empty, further attempts are refused *before*
//! the credential is verified, so a throttled attempt tells nothing about the guess.
//!
//! A failure for an id that is not a registered agent ([`AuthThrottle::failed_unknown`])
//! counts for that claimed id only: no secret can be guessed for it, and a client with a
//! mistyped id, or one racing the registry reload after its agent was created, must not
//! use up the budget of every agent behind the same address. The claimed id's own bucket
//! fills the same way whether the id exists or not.
//!
//! The real agent keeps working while its address or its id is throttled: the gateway
//! remembers, per agent, the fingerprints (SHA-256) of a few credentials it recently
//! verified, and a throttled attempt presenting exactly one of them is let through to the
//! normal verification. Only credentials no one can enumerate qualify: tokens (signed by
//! the gateway) and secrets of at least [`MIN_BYPASS_SECRET_LEN`] characters (generated
//! secrets have 43). A shorter secret could be guessed, and letting a matching guess through
//! would make the throttle an oracle for it, so short secrets get no pass.
//!
//! Memory is bounded: each map holds at most `max_entries` keys; an entry whose bucket has
//! refilled is forgotten, and when a map is full of throttled keys the one closest to
//! refilling makes room. Time comes from the injected [`Clock`].

use portcullis_core::{ApiError, Clock, ErrorSource, Status};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

/// Keys each map holds at most (client addresses; claimed agent ids; agents with
/// remembered credentials).
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Credentials remembered per agent (the most recently verified).
pub const KNOWN_GOOD_PER_AGENT: usize = 8;
/// Shortest secret whose fingerprint may let a throttled attempt through.
pub const MIN_BYPASS_SECRET_LEN: usize = 32;

const NANOS_PER_MINUTE: u64 = 60_000_000_000;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Throttle settings (`[identity] auth_failure_burst`, `auth_failure_per_minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures allowed back to back; 0 disables throttling.
    pub burst: u32,
    /// Failures regained per minute (at least 1).
    pub per_minute: u32,
    /// Keys per map.
    pub max_entries: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            burst: 20,
            per_minute: 10,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Which bucket refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleScope {
    /// The client address.
    Client,
    /// The claimed agent id.
    Agent,
}

impl ThrottleScope {
    /// Bounded label for `portcullis_auth_throttled_total{scope}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Agent => "agent",
        }
    }
}

/// A refused (throttled) attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// The bucket that was empty (the client's is checked first).
    pub scope: ThrottleScope,
    /// Seconds until one more attempt is allowed (at least 1).
    pub retry_after_secs: u64,
}

impl Throttled {
    /// The 429 answered on the proxy port: `auth_throttled` with `Retry-After`. The body
    /// is the same for both scopes, so it does not tell whether a claimed agent exists.
    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(
            Status::TooManyRequests,
            "auth_throttled",
            "too many failed authentication attempts; retry later",
            ErrorSource::Client,
        )
        .with_retry_after(self.retry_after_secs)
    }
}

/// A credential as presented, before verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A client secret for the claimed agent.
    Secret {
        /// The claimed agent id.
        agent: &'a str,
        /// The secret.
        secret: &'a str,
    },
    /// A token (the agent is in its signed claims).
    Token(&'a str),
}

/// SHA-256 of a presented credential, as remembered after a successful verification.
pub type Fingerprint = [u8; 32];

impl Presented<'_> {
    /// The credential's fingerprint (domain-separated; a secret is bound to its agent id).
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        match self {
            Self::Secret { agent, secret } => {
                h.update(b"portcullis-auth-secret\0");
                h.update(agent.as_bytes());
                h.update(b"\0");
                h.update(secret.as_bytes());
            }
            Self::Token(t) => {
                h.update(b"portcullis-auth-token\0");
                h.update(t.as_bytes());
            }
        }
        h.finalize().into()
    }

    /// Whether the credential cannot be enumerated, so knowing it may pass a throttle.
    pub fn may_bypass(&self) -> bool {
        match self {
            Self::Secret { secret, .. } => secret.chars().count() >= MIN_BYPASS_SECRET_LEN,
            Self::Token(_) => true,
        }
    }
}

/// The throttle shared by the proxy authenticator and the token endpoint.
pub struct AuthThrottle {
    settings: ThrottleSettings,
    clock: Arc<dyn Clock>,
    clients: Mutex<Buckets<IpAddr>>,
    agents: Mutex<Buckets<String>>,
    good: Mutex<KnownGood>,
}

impl std::fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AuthThrottle {
    /// A throttle with `settings` reading time from `clock`.
    pub fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        let max = settings.max_entries.max(1);
        Self {
            settings,
            clock,
            clients: Mutex::new(Buckets::new(max)),
            agents: Mutex::new(Buckets::new(max)),
            good: Mutex::new(KnownGood::new(max)),
        }
    }

    /// Whether throttling is on (`burst > 0`).
    pub fn enabled(&self) -> bool {
        self.settings.burst > 0
    }

    /// Before verifying: refuses when the client's bucket, or the claimed agent's, is
    /// empty, unless `presented` is a credential verified recently (see the module doc).
    pub fn check(
        &self,
        client: IpAddr,
        agent: Option<&str>,
        presented: &[Fingerprint],
    ) -> Result<(), Throttled> {
        if !self.enabled() {
            return Ok(());
        }
        let now = self.now();
        let (_, tolerance) = self.gcra();
        let client_wait = lock(&self.clients).wait(&client_key(client), now, tolerance);
        let agent_wait = match agent {
            Some(a) => lock(&self.agents).wait(a, now, tolerance),
            None => None,
        };
        let refused = match (client_wait, agent_wait) {
            (Some(w), _) => (ThrottleScope::Client, w),
            (None, Some(w)) => (ThrottleScope::Agent, w),
            (None, None) => return Ok(()),
        };
        if presented.iter().any(|fp| lock(&self.good).contains(fp)) {
            return Ok(());
        }
        Err(Throttled {
            scope: refused.0,
            retry_after_secs: refused.1.div_ceil(NANOS_PER_SEC).max(1),
        })
    }

    /// After a failed verification (unknown agent, wrong secret, bad token): uses up one
    /// attempt of the client and of the claimed agent, and forgets `presented` as known good.
    pub fn failed(&self, client: IpAddr, agent: Option<&str>, presented: &[Fingerprint]) {
        if !self.enabled() {
            return;
        }
        let now = self.now();
        let (interval, _) = self.gcra();
        lock(&self.clients).consume(client_key(client), now, interval);
        if let Some(a) = agent {
            lock(&self.agents).consume(a.to_owned(), now, interval);
        }
        let mut good = lock(&self.good);
        for fp in presented {
            good.remove(fp);
        }
    }

    /// After a failure for an id that is not a registered agent: uses up one attempt of that
    /// claimed id only (see the module doc).
    pub fn failed_unknown(&self, agent: Option<&str>) {
        if !self.enabled() {
            return;
        }
        if let Some(a) = agent {
            let now = self.now();
            let (interval, _) = self.gcra();
            lock(&self.agents).consume(a.to_owned(), now, interval);
        }
    }

    /// After a successful verification: remembers the credential for `agent` when it may
    /// pass a throttle ([`Presented::may_bypass`]).
    pub fn verified(&self, agent: &str, presented: Presented<'_>) {
        self.verified_fingerprint(agent, &presented, presented.fingerprint());
    }

    /// [`Self::verified`] with the credential's fingerprint already computed (the proxy
    /// hashes each request's credential once, for [`Self::check`] and for this).
    pub fn verified_fingerprint(&self, agent: &str, presented: &Presented<'_>, fp: Fingerprint) {
        if self.enabled() && presented.may_bypass() {
            lock(&self.good).insert(agent, fp);
        }
    }

    /// Keys held: (client addresses, claimed agents, agents with remembered credentials).
    pub fn entries(&self) -> (usize, usize, usize) {
        (
            lock(&self.clients).map.len(),
            lock(&self.agents).map.len(),
            lock(&self.good).by_agent.len(),
        )
    }

    /// (emission interval, tolerance) in nanoseconds.
    fn gcra(&self) -> (u64, u64) {
        let interval = NANOS_PER_MINUTE / u64::from(self.settings.per_minute.max(1));
        let tolerance = interval.saturating_mul(u64::from(self.settings.burst.saturating_sub(1)));
        (interval, tolerance)
    }

    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of a client address: IPv4 (mapped forms included) as is, IPv6 by its /64 (one
/// host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// GCRA buckets: key → theoretical arrival time (ns). An entry at or before `now` is the
/// same as no entry (a full bucket) and may be forgotten.
struct Buckets<K> {
    map: HashMap<K, u64>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            max,
        }
    }

    /// Nanoseconds until `key` may try again, `None` when it may now.
    fn wait<Q>(&self, key: &Q, now: u64, tolerance: u64) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let tat = *self.map.get(key)?;
        let ahead = tat.saturating_sub(now);
        (ahead > tolerance).then(|| ahead - tolerance)
    }

    fn consume(&mut self, key: K, now: u64, interval: u64) {
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.make_room(now);
        }
        let tat = self.map.entry(key).or_insert(now);
        *tat = (*tat).max(now).saturating_add(interval);
    }

    /// Forgets refilled entries; if none, the one closest to refilling.
    fn make_room(&mut self, now: u64) {
        self.map.retain(|_, tat| *tat > now);
        if self.map.len() >= self.max {
            if let Some(k) = self
                .map
                .iter()
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&k);
            }
        }
    }
}

/// Recently verified credentials: fingerprint → agent, and per agent its most recent
/// fingerprints (at most [`KNOWN_GOOD_PER_AGENT`]); at most `max` agents, the least
/// recently verified making room.
struct KnownGood {
    by_fp: HashMap<Fingerprint, String>,
    by_agent: HashMap<String, (u64, VecDeque<Fingerprint>)>,
    seq: u64,
    max: usize,
}

impl KnownGood {
    fn new(max: usize) -> Self {
        Self {
            by_fp: HashMap::new(),
            by_agent: HashMap::new(),
            seq: 0,
            max,
        }
    }

    fn contains(&self, fp: &Fingerprint) -> bool {
        self.by_fp.contains_key(fp)
    }

    fn insert(&mut self, agent: &str, fp: Fingerprint) {
        self.seq += 1;
        if let Some(owner) = self.by_fp.get(&fp) {
            if owner != agent {
                return;
            }
        }
        if !self.by_agent.contains_key(agent) && self.by_agent.len() >= self.max {
            let oldest = self
                .by_agent
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                if let Some((_, fps)) = self.by_agent.remove(&a) {
                    for f in fps {
                        self.by_fp.remove(&f);
                    }
                }
            }
        }
        let seq = self.seq;
        let slot = self
            .by_agent
            .entry(agent.to_owned())
            .or_insert_with(|| (seq, VecDeque::new()));
        slot.0 = seq;
        slot.1.retain(|f| *f != fp);
        slot.1.push_back(fp);
        if slot.1.len() > KNOWN_GOOD_PER_AGENT {
            if let Some(old) = slot.1.pop_front() {
                self.by_fp.remove(&old);
            }
        }
        self.by_fp.insert(fp, agent.to_owned());
    }

    fn remove(&mut self, fp: &Fingerprint) {
        if let Some(agent) = self.by_fp.remove(fp) {
            if let Some(slot) = self.by_agent.get_mut(&agent) {
                slot.1.retain(|f| f != fp);
                if slot.1.is_empty() {
                    self.by_agent.remove(&agent);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
