//! TLS for Portcullis: the gateway certificate authority, leaf certificates minted per
//! intercepted host (and their cache), rustls configurations for both sides of an
//! intercepted tunnel, the rules deciding which tunnels are intercepted, and a sans-IO
//! ClientHello sniffer.
//!
//! No sockets here. Every rustls configuration is built with the ring provider passed
//! explicitly ([`provider`]), never a process-wide default, so the tree has one crypto
//! provider. Minting is CPU work; [`LeafCache`] runs it on tokio's blocking pool, one mint
//! per host at a time.
//!
//! How the data plane uses it for a CONNECT tunnel whose policy already passed:
//!
//! ```
//! use std::sync::Arc;
//! use portcullis_tls::{sniff, CertificateAuthority, InterceptRules, LeafCache, LeafCacheConfig, Sniff};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = Arc::new(CertificateAuthority::generate("Example CA")?);
//! let cache = LeafCache::new(ca, LeafCacheConfig::default())?;
//! let rules = InterceptRules::default();
//! let connect_host = "api.openai.com";
//! # let first_bytes = b"GET / HTTP/1.1\r\n";
//! match sniff(first_bytes) {
//!     Sniff::NeedMore => { /* read more, bounded by MAX_SNIFF_BYTES */ }
//!     Sniff::TlsClientHello { sni, .. } if rules.should_intercept(connect_host) => {
//!         // Mint for the CONNECT target (not the SNI); a differing SNI is the proxy's call.
//!         let _ = sni;
//!         let rt = tokio::runtime::Builder::new_current_thread().build()?;
//!         let server_config = rt.block_on(cache.server_config(connect_host))?;
//!         // ... accept TLS on the tunnel with `server_config` (ALPN h2, http/1.1).
//!         # let _ = server_config;
//!     }
//!     Sniff::Http => { /* serve the tunnel as inner plaintext HTTP */ }
//!     _ => { /* splice */ }
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod ca;
mod cache;
mod client;
mod der;
mod error;
mod explain;
mod host;
mod leaf;
mod matcher;
mod pem;
mod sniff;
#[cfg(test)]
mod testutil;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use ca::{
    trust_instructions, CaPaths, CertificateAuthority, CA_BACKDATE, CA_BUNDLE_FILE, CA_CERT_FILE,
    CA_KEY_FILE, CA_VALIDITY, DEFAULT_CA_COMMON_NAME,
};
pub use cache::{
    LeafCache, LeafCacheConfig, DEFAULT_CACHE_CAPACITY, DEFAULT_REFRESH_FRACTION,
    DEFAULT_SESSION_CACHE_SIZE,
};
pub use client::{
    client_config_with_roots, upstream_client_config, upstream_server_name, UpstreamRoots,
    UpstreamTls, ALPN_H2_HTTP11, ALPN_HTTP11,
};
pub use error::TlsError;
pub use explain::{explain_handshake_error, explain_tls_error};
pub use host::LeafHost;
pub use leaf::{
    mint_leaf, mint_leaf_with, server_config_for, LeafParams, DEFAULT_LEAF_BACKDATE,
    DEFAULT_LEAF_VALIDITY,
};
pub use matcher::{HostMatcher, InterceptRules, DEFAULT_INTERCEPT_HOSTS};
pub use rustls;
pub use sniff::{sniff, Sniff, MAX_REQUEST_LINE, MAX_SNIFF_BYTES};

/// The one crypto provider of the gateway (ring), shared by every configuration built here.
/// Use it for any other rustls configuration too.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
