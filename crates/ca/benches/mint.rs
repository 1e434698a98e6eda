//! Leaf minting cost (cold) against a cache hit, and ClientHello sniffing.
//!
//! Target: a cold mint (key generation + signing + rustls key load) within 2 ms.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_ca::{
    mint_leaf, server_config_for, CertificateAuthority, LeafCache, LeafCacheConfig,
};
use portcullis_tls::rustls::pki_types::ServerName;
use portcullis_tls::rustls::{ClientConfig, ClientConnection, RootCertStore};
use portcullis_tls::{provider, sniff};

fn ca() -> Arc<CertificateAuthority> {
    match CertificateAuthority::generate("Bench CA") {
        Ok(ca) => Arc::new(ca),
        Err(e) => panic!("CA generation failed: {e}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

fn bench_mint(c: &mut Criterion) {
    let ca = ca();
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c.bench_function("mint_leaf (cold)", |b| {
        b.iter(|| mint_leaf(&ca, black_box("api.openai.com")).map(|k| k.cert.len()))
    });
    c.bench_function("mint_leaf + server_config (cold)", |b| {
        b.iter(|| {
            mint_leaf(&ca, black_box("api.openai.com"))
                .and_then(|k| server_config_for(k, &alpn))
                .is_ok()
        })
    });
}

fn bench_cache(c: &mut Criterion) {
    let rt = runtime();
    let ca = ca();
    let cache = match LeafCache::new(ca.clone(), LeafCacheConfig::default()) {
        Ok(cache) => cache,
        Err(e) => panic!("cache: {e}"),
    };
    rt.block_on(async {
        if let Err(e) = cache.server_config("api.openai.com").await {
            panic!("warm: {e}");
        }
    });
    c.bench_function("LeafCache::server_config (hit)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(cache.server_config(black_box("api.openai.com")).await);
                }
                start.elapsed()
            })
        })
    });

    let cold = match LeafCache::new(
        ca,
        LeafCacheConfig {
            capacity: 1,
            ..LeafCacheConfig::default()
        },
    ) {
        Ok(cache) => cache,
        Err(e) => panic!("cache: {e}"),
    };
    let mut n = 0u64;
    c.bench_function(
        "LeafCache::server_config (miss: spawn_blocking mint)",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        let host = format!("h{n}.example.com");
                        let start = Instant::now();
                        let _ = black_box(cold.server_config(&host).await);
                        total += start.elapsed();
                    }
                    total
                })
            })
        },
    );
}

fn bench_sniff(c: &mut Criterion) {
    let ca = ca();
    let mut roots = RootCertStore::empty();
    if let Err(e) = roots.add(ca.cert_der().clone()) {
        panic!("roots: {e}");
    }
    let mut config = match ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(e) => panic!("client config: {e}"),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = match ServerName::try_from("api.openai.com") {
        Ok(n) => n,
        Err(e) => panic!("name: {e}"),
    };
    let mut client = match ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    };
    let mut hello = Vec::new();
    while client.wants_write() {
        if let Err(e) = client.write_tls(&mut hello) {
            panic!("write_tls: {e}");
        }
    }
    c.bench_function("sniff (rustls ClientHello)", |b| {
        b.iter(|| sniff(black_box(&hello)))
    });
    c.bench_function("sniff (HTTP request line)", |b| {
        b.iter(|| sniff(black_box(b"POST /v1/chat/completions HTTP/1.1\r\n")))
    });
}

criterion_group!(benches, bench_mint, bench_cache, bench_sniff);
criterion_main!(benches);
