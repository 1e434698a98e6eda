//! A bounded cache of per-host server configurations with single-flight minting.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use portcullis_tls::rustls::server::{
    NoServerSessionStorage, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::leaf::{build_server_config, mint_leaf_with, LeafParams};
use crate::CertificateAuthority;
use portcullis_tls::{LeafHost, TlsError};

/// Default number of hosts kept.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;
/// Default size of the TLS session-resumption store shared by all cached configurations.
pub const DEFAULT_SESSION_CACHE_SIZE: usize = 4096;
/// Default share of a leaf's validity after which its cache entry is replaced.
pub const DEFAULT_REFRESH_FRACTION: f64 = 0.8;

/// Settings of a [`LeafCache`].
#[derive(Debug, Clone, PartialEq)]
pub struct LeafCacheConfig {
    /// Most hosts kept; the least recently used is evicted beyond it.
    pub capacity: usize,
    /// Validity of minted leaves.
    pub leaf: LeafParams,
    /// Share of the validity (0 < f < 1) after which an entry is minted anew, so a cached
    /// configuration never serves an expired (or nearly expired) leaf.
    pub refresh_fraction: f64,
    /// ALPN protocols offered to clients, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Entries of the session-resumption store shared by every cached configuration (one
    /// bound for all hosts instead of one store per host); 0 disables resumption.
    pub session_cache_size: usize,
}

impl Default for LeafCacheConfig {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CACHE_CAPACITY,
            leaf: LeafParams::default(),
            refresh_fraction: DEFAULT_REFRESH_FRACTION,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            session_cache_size: DEFAULT_SESSION_CACHE_SIZE,
        }
    }
}

impl LeafCacheConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.capacity == 0 {
            return Err(TlsError::InvalidConfig {
                key: "tls.cert_cache_capacity",
                reason: "must be at least 1",
            });
        }
        if !(self.refresh_fraction > 0.0 && self.refresh_fraction < 1.0) {
            return Err(TlsError::InvalidConfig {
                key: "tls.cert_refresh_fraction",
                reason: "must be strictly between 0 and 1",
            });
        }
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(TlsError::InvalidConfig {
                key: "tls.alpn",
                reason: "protocol names must be 1 to 255 bytes",
            });
        }
        self.leaf.validate()
    }

    /// How long after minting an entry is replaced.
    pub fn refresh_after(&self) -> Duration {
        self.leaf.validity.mul_f64(self.refresh_fraction)
    }
}

/// Per-host `rustls::ServerConfig`s for intercepted tunnels.
///
/// Bounded (LRU), entries replaced before their leaf expires, one mint per host at a time
/// (concurrent callers for the same host wait for the same mint), minting on tokio's
/// blocking pool. Counters are plain atomics; the proxy exports them.
#[derive(Debug)]
pub struct LeafCache {
    ca: Arc<CertificateAuthority>,
    sessions: Arc<dyn StoresServerSessions>,
    config: LeafCacheConfig,
    refresh_after: Duration,
    lru: Mutex<Lru>,
    minted: AtomicU64,
    hits: AtomicU64,
    size: AtomicUsize,
}

#[derive(Debug)]
struct Ready {
    config: Arc<ServerConfig>,
    refresh_at: Instant,
}

type Slot = Arc<OnceCell<Ready>>;

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<String, Node>,
    /// Recency order: tick → key. The smallest tick is the least recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
}

#[derive(Debug)]
struct Node {
    slot: Slot,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(node) = self.map.get_mut(key) {
            if let Some(k) = self.order.remove(&node.tick) {
                self.order.insert(tick, k);
            }
            node.tick = tick;
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(node) = self.map.remove(key) {
            self.order.remove(&node.tick);
        }
    }

    fn insert(&mut self, key: String, slot: Slot, capacity: usize) {
        self.remove(&key);
        while self.map.len() >= capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(
            key,
            Node {
                slot,
                tick: self.tick,
            },
        );
    }
}

impl LeafCache {
    /// A cache minting with `ca`. Fails on invalid settings.
    pub fn new(ca: Arc<CertificateAuthority>, config: LeafCacheConfig) -> Result<Self, TlsError> {
        config.validate()?;
        let sessions: Arc<dyn StoresServerSessions> = match config.session_cache_size {
            0 => Arc::new(NoServerSessionStorage {}),
            n => ServerSessionMemoryCache::new(n),
        };
        Ok(Self {
            ca,
            sessions,
            refresh_after: config.refresh_after(),
            config,
            lru: Mutex::new(Lru::default()),
            minted: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            size: AtomicUsize::new(0),
        })
    }

    /// The server configuration for `host` (DNS name or IP literal, brackets allowed, no
    /// port): cached, or minted now. Invalid hosts fail fast with
    /// [`TlsError::InvalidHost`] and leave the cache untouched.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let host = LeafHost::parse(host)?;
        let key = host.to_string();
        let slot = {
            let now = Instant::now();
            let mut lru = self.lock();
            let existing = lru.map.get(&key).map(|node| node.slot.clone());
            let slot = match existing {
                Some(slot) => match slot.get() {
                    Some(ready) if ready.refresh_at > now => {
                        let config = ready.config.clone();
                        lru.touch(&key);
                        drop(lru);
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(config);
                    }
                    // Due for refresh: replace with a fresh slot.
                    Some(_) => None,
                    // Being minted by another caller: wait for it.
                    None => {
                        lru.touch(&key);
                        Some(slot)
                    }
                },
                None => None,
            };
            let slot = slot.unwrap_or_else(|| {
                let slot = Slot::default();
                lru.insert(key.clone(), slot.clone(), self.config.capacity);
                slot
            });
            self.size.store(lru.map.len(), Ordering::Relaxed);
            slot
        };
        let ready = slot.get_or_try_init(|| self.mint(key.clone())).await?;
        Ok(ready.config.clone())
    }

    async fn mint(&self, key: String) -> Result<Ready, TlsError> {
        let ca = self.ca.clone();
        let leaf = self.config.leaf;
        let alpn = self.config.alpn.clone();
        let sessions = self.sessions.clone();
        let config = tokio::task::spawn_blocking(move || {
            let certified = mint_leaf_with(&ca, &key, &leaf)?;
            build_server_config(certified, &alpn, Some(sessions))
        })
        .await
        .map_err(|e| TlsError::MintTask(e.to_string()))??;
        self.minted.fetch_add(1, Ordering::Relaxed);
        Ok(Ready {
            config,
            refresh_at: Instant::now() + self.refresh_after,
        })
    }

    /// Leaves minted since start (`portcullis_certs_minted_total`).
    pub fn minted_total(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// Lookups answered from the cache without minting or waiting.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Hosts currently cached (including mints in progress).
    pub fn len(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// The CA minting for this cache.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// Whether `host` currently has an entry (fresh, stale or in progress).
    pub fn contains(&self, host: &str) -> bool {
        LeafHost::parse(host)
            .map(|h| self.lock().map.contains_key(&h.to_string()))
            .unwrap_or(false)
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // The critical sections never panic midway; recover the data if one ever did.
        self.lru
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{client_trusting, drive_full, handshake, test_ca};
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn cache(capacity: usize) -> LeafCache {
        let ca = Arc::new(CertificateAuthority::generate("Cache CA").expect("ca"));
        LeafCache::new(
            ca,
            LeafCacheConfig {
                capacity,
                ..LeafCacheConfig::default()
            },
        )
        .expect("cache")
    }

    #[tokio::test]
    async fn hit_returns_the_same_config() {
        let cache = cache(8);
        let a = cache.server_config("example.com").await.expect("a");
        let b = cache.server_config("EXAMPLE.com.").await.expect("b");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.minted_total(), 1);
        assert_eq!(cache.hits(), 1);
        assert_eq!(cache.len(), 1);
        let c = cache.server_config("other.example.com").await.expect("c");
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(
            Arc::ptr_eq(&a.session_storage, &c.session_storage),
            "one resumption store for all hosts"
        );
        assert_eq!(cache.minted_total(), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn lru_bound_evicts_least_recently_used() {
        let cache = cache(3);
        for host in ["a.test", "b.test", "c.test"] {
            cache.server_config(host).await.expect("mint");
        }
        // Use a.test so b.test becomes the least recently used.
        cache.server_config("a.test").await.expect("hit");
        cache.server_config("d.test").await.expect("mint d");
        assert_eq!(cache.len(), 3);
        assert!(cache.contains("a.test"));
        assert!(!cache.contains("b.test"), "LRU entry evicted");
        assert!(cache.contains("c.test"));
        assert!(cache.contains("d.test"));
        assert_eq!(cache.minted_total(), 4);
        // b.test comes back only by minting again.
        cache.server_config("b.test").await.expect("re-mint");
        assert_eq!(cache.minted_total(), 5);
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains("c.test"));

        for i in 0..50 {
            cache
                .server_config(&format!("h{i}.test"))
                .await
                .expect("mint");
            assert!(cache.len() <= 3);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn single_flight_for_concurrent_gets() {
        let cache = Arc::new(cache(16));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move {
                cache.server_config("api.openai.com").await
            }));
        }
        let mut configs = Vec::new();
        for task in tasks {
            configs.push(task.await.expect("join").expect("config"));
        }
        assert_eq!(cache.minted_total(), 1, "one mint for one host");
        let first = configs.first().expect("configs");
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, first)));
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_gets_for_different_hosts_each_mint_once() {
        let cache = Arc::new(cache(64));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move {
                cache.server_config(&format!("h{}.test", i % 8)).await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("config");
        }
        assert_eq!(cache.minted_total(), 8);
        assert_eq!(cache.len(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_before_the_leaf() {
        let ca = Arc::new(CertificateAuthority::generate("Expiry CA").expect("ca"));
        let config = LeafCacheConfig {
            leaf: LeafParams {
                validity: Duration::from_secs(1000),
                backdate: Duration::from_secs(60),
            },
            refresh_fraction: 0.8,
            ..LeafCacheConfig::default()
        };
        assert!(config.refresh_after() < config.leaf.validity);
        let cache = LeafCache::new(ca, config).expect("cache");
        let first = cache.server_config("example.com").await.expect("first");
        tokio::time::advance(Duration::from_secs(799)).await;
        let again = cache.server_config("example.com").await.expect("again");
        assert!(Arc::ptr_eq(&first, &again), "still fresh at 79.9%");
        assert_eq!(cache.minted_total(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        let renewed = cache.server_config("example.com").await.expect("renewed");
        assert!(!Arc::ptr_eq(&first, &renewed), "replaced at 80%");
        assert_eq!(cache.minted_total(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn refresh_point_precedes_leaf_not_after() {
        // The refresh instant is measured after minting, the leaf's notAfter from before
        // minting: the entry must still go stale a fifth of the validity early.
        let config = LeafCacheConfig::default();
        let leaf =
            crate::leaf::mint_leaf_with(test_ca(), "example.com", &config.leaf).expect("mint");
        let (_, info) = X509Certificate::from_der(leaf.cert.first().expect("leaf")).expect("parse");
        let remaining = info.validity().not_after.to_datetime() - time::OffsetDateTime::now_utc();
        let margin = remaining - config.refresh_after();
        assert!(margin > time::Duration::days(1), "margin {margin}");
    }

    #[tokio::test]
    async fn invalid_hosts_fail_without_an_entry() {
        let cache = cache(4);
        for bad in ["", "*.x.com", "a b", "[::1", "host:443"] {
            let err = cache.server_config(bad).await.expect_err(bad);
            assert!(err.is_client_error());
        }
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.minted_total(), 0);
    }

    #[tokio::test]
    async fn cached_config_serves_alpn_and_the_right_name() {
        let ca = Arc::new(CertificateAuthority::generate("ALPN CA").expect("ca"));
        let cache = LeafCache::new(ca.clone(), LeafCacheConfig::default()).expect("cache");
        let server = cache
            .server_config("api.anthropic.com")
            .await
            .expect("config");
        let alpn = handshake(
            &ca,
            server.clone(),
            "api.anthropic.com",
            &[b"h2", b"http/1.1"],
        );
        assert_eq!(alpn, Ok(Some(b"h2".to_vec())));
        let alpn = handshake(&ca, server, "api.anthropic.com", &[b"http/1.1"]);
        assert_eq!(alpn, Ok(Some(b"http/1.1".to_vec())));

        let http1_only = LeafCache::new(
            ca.clone(),
            LeafCacheConfig {
                alpn: vec![b"http/1.1".to_vec()],
                ..LeafCacheConfig::default()
            },
        )
        .expect("cache");
        let server = http1_only
            .server_config("api.anthropic.com")
            .await
            .expect("config");
        let alpn = handshake(&ca, server, "api.anthropic.com", &[b"h2", b"http/1.1"]);
        assert_eq!(alpn, Ok(Some(b"http/1.1".to_vec())));
    }

    #[tokio::test]
    async fn sessions_resume_through_the_shared_store() {
        let ca = Arc::new(CertificateAuthority::generate("Resume CA").expect("ca"));
        let cache = LeafCache::new(ca.clone(), LeafCacheConfig::default()).expect("cache");
        let server = cache
            .server_config("resume.example.com")
            .await
            .expect("config");
        let client = client_trusting(&ca, &[b"h2"]);
        let first = drive_full(client.clone(), server.clone(), "resume.example.com");
        assert_eq!(first, Ok((Some(b"h2".to_vec()), false)));
        let second = drive_full(client, server, "resume.example.com");
        assert_eq!(second, Ok((Some(b"h2".to_vec()), true)));

        let no_resume = LeafCache::new(
            ca.clone(),
            LeafCacheConfig {
                session_cache_size: 0,
                ..LeafCacheConfig::default()
            },
        )
        .expect("cache");
        let server = no_resume
            .server_config("resume.example.com")
            .await
            .expect("config");
        let client = client_trusting(&ca, &[b"h2"]);
        let first = drive_full(client.clone(), server.clone(), "resume.example.com");
        assert_eq!(first, Ok((Some(b"h2".to_vec()), false)));
        let second = drive_full(client, server, "resume.example.com");
        assert_eq!(second, Ok((Some(b"h2".to_vec()), false)));
    }

    #[test]
    fn config_validation() {
        let ok = LeafCacheConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            LeafCacheConfig {
                capacity: 0,
                ..ok.clone()
            },
            LeafCacheConfig {
                refresh_fraction: 1.0,
                ..ok.clone()
            },
            LeafCacheConfig {
                refresh_fraction: f64::NAN,
                ..ok.clone()
            },
            LeafCacheConfig {
                alpn: vec![Vec::new()],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
