//! TLS for Portcullis without certificate generation: the rules deciding which tunnels are
//! intercepted, a sans-IO ClientHello sniffer, rustls client configurations for upstreams,
//! handshake errors explained in one sentence, PEM encoding and the error type. The gateway
//! CA and minted leaves live in `portcullis-ca`, so the data plane builds without a
//! certificate generator.
//!
//! No sockets here. Every rustls configuration is built with the ring provider passed
//! explicitly ([`provider`]), never a process-wide default, so the tree has one crypto
//! provider.
//!
//! Deciding what to do with the first bytes of a CONNECT tunnel whose policy passed:
//!
//! ```
//! use portcullis_tls::{sniff, InterceptRules, Sniff};
//!
//! let rules = InterceptRules::default();
//! let connect_host = "api.openai.com";
//! let first_bytes = b"GET / HTTP/1.1\r\n";
//! match sniff(first_bytes) {
//!     Sniff::NeedMore => { /* read more, bounded by MAX_SNIFF_BYTES */ }
//!     Sniff::TlsClientHello { .. } if rules.should_intercept(connect_host) => {
//!         /* terminate TLS with a leaf for the CONNECT target (portcullis-ca) */
//!     }
//!     Sniff::Http => { /* serve the tunnel as inner plaintext HTTP */ }
//!     _ => { /* splice */ }
//! }
//! ```
#![warn(missing_docs)]

mod client;
mod error;
mod explain;
mod host;
mod matcher;
mod pem;
mod sniff;
#[cfg(test)]
mod testutil;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use client::{
    client_config_with_roots, upstream_client_config, upstream_server_name, UpstreamRoots,
    UpstreamTls, ALPN_H2_HTTP11, ALPN_HTTP11,
};
pub use error::TlsError;
pub use explain::{explain_handshake_error, explain_tls_error};
pub use host::LeafHost;
pub use matcher::{HostMatcher, InterceptRules, DEFAULT_INTERCEPT_HOSTS};
pub use pem::encode_pem;
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
