//! The gateway CA's leaf cache as the data plane's source of certificates for intercepted
//! tunnels, and its counters as metrics.

use futures_util::future::BoxFuture;
use portcullis_ca::LeafCache;
use portcullis_proxy::LeafSource;
use portcullis_tls::rustls::ServerConfig;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Registry};
use std::sync::Arc;

/// Leaves minted by the gateway CA (cached; one mint per host at a time, off the async threads).
pub struct Leaves(pub Arc<LeafCache>);

impl LeafSource for Leaves {
    fn server_config<'a>(
        &'a self,
        host: &'a str,
    ) -> BoxFuture<'a, Result<Arc<ServerConfig>, String>> {
        Box::pin(async move { self.0.server_config(host).await.map_err(|e| e.to_string()) })
    }
}
/// Exports a [`LeafCache`]'s counters as `portcullis_certs_minted_total` and
/// `portcullis_cert_cache_size`, read at scrape time.
pub struct CertCacheCollector {
    cache: Arc<LeafCache>,
    minted: IntCounter,
    size: IntGauge,
}

impl CertCacheCollector {
    /// Registers a collector for `cache` in `registry`.
    pub fn register(registry: &Registry, cache: Arc<LeafCache>) -> prometheus::Result<()> {
        let c = Self {
            cache,
            minted: IntCounter::new(
                "portcullis_certs_minted_total",
                "Leaf certificates minted for intercepted hosts.",
            )?,
            size: IntGauge::new(
                "portcullis_cert_cache_size",
                "Hosts whose leaf certificate is cached.",
            )?,
        };
        registry.register(Box::new(c))
    }
}

impl Collector for CertCacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.minted.desc();
        d.extend(self.size.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let minted = self.cache.minted_total();
        let have = self.minted.get();
        if minted > have {
            self.minted.inc_by(minted - have);
        }
        self.size
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        let mut m = self.minted.collect();
        m.extend(self.size.collect());
        m
    }
}
