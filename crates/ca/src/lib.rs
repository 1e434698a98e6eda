//! The gateway certificate authority of Portcullis: CA loading and generation, leaf
//! certificates minted per intercepted host, and their cache.
//!
//! Everything here needs certificate generation (rcgen); what does not (sniffing,
//! interception rules, upstream client configs, handshake explanations) lives in
//! `portcullis-tls`, so the data plane can be built without a certificate generator.
//! Minting is CPU work; [`LeafCache`] runs it on tokio's blocking pool, one mint per host
//! at a time.
//!
//! How the data plane uses it for a CONNECT tunnel whose policy already passed:
//!
//! ```
//! use std::sync::Arc;
//! use portcullis_ca::{CertificateAuthority, LeafCache, LeafCacheConfig};
//! use portcullis_tls::{sniff, InterceptRules, Sniff};
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
mod leaf;
#[cfg(test)]
mod testutil;

use portcullis_tls::TlsError;

pub use ca::{
    trust_instructions, CaPaths, CertificateAuthority, CA_BACKDATE, CA_BUNDLE_FILE, CA_CERT_FILE,
    CA_KEY_FILE, CA_VALIDITY, DEFAULT_CA_COMMON_NAME,
};
pub use cache::{
    LeafCache, LeafCacheConfig, DEFAULT_CACHE_CAPACITY, DEFAULT_REFRESH_FRACTION,
    DEFAULT_SESSION_CACHE_SIZE,
};
pub use leaf::{
    mint_leaf, mint_leaf_with, server_config_for, LeafParams, DEFAULT_LEAF_BACKDATE,
    DEFAULT_LEAF_VALIDITY,
};

/// A certificate generation failure, as the TLS crate's error.
pub(crate) fn generation(e: rcgen::Error) -> TlsError {
    TlsError::Generation(Box::new(e))
}
