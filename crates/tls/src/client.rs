//! TLS client configurations for the gateway's upstream connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::{provider, LeafHost, TlsError};

/// ALPN offer for upstreams reached over HTTP/2 or HTTP/1.1.
pub const ALPN_H2_HTTP11: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN offer for HTTP/1.1-only upstream use.
pub const ALPN_HTTP11: &[&[u8]] = &[b"http/1.1"];

/// Which trust anchors verify upstream certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRoots {
    /// Mozilla's public roots (compiled in).
    pub public_roots: bool,
    /// The operating system's store; load failures are logged, not fatal.
    pub native_roots: bool,
    /// Extra PEM files (`tls.upstream_ca`); each must hold at least one certificate.
    pub extra_ca_pems: Vec<PathBuf>,
}

impl Default for UpstreamRoots {
    fn default() -> Self {
        Self {
            public_roots: true,
            native_roots: true,
            extra_ca_pems: Vec::new(),
        }
    }
}

impl UpstreamRoots {
    /// Builds the root store. Fails on an unreadable or empty extra PEM file, or when no
    /// root at all could be loaded.
    pub fn load(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        if self.public_roots {
            let (added, ignored) = roots.add_parsable_certificates(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned(),
            );
            if ignored > 0 {
                tracing::debug!(added, ignored, "public roots skipped");
            }
        }
        if self.native_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(error = %error, "could not load some native root certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "native roots loaded");
        }
        for path in &self.extra_ca_pems {
            for cert in read_pem_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::UpstreamCa {
                    path: path.clone(),
                    reason: format!("not a usable trust anchor ({e})"),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::InvalidConfig {
                key: "tls.upstream_ca",
                reason: "no trusted root certificate could be loaded",
            });
        }
        Ok(Arc::new(roots))
    }
}

/// Upstream client configurations sharing one root store: with ALPN `h2` + `http/1.1`, and
/// HTTP/1.1 only.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Offers `h2` then `http/1.1`.
    pub h2: Arc<ClientConfig>,
    /// Offers `http/1.1` only.
    pub http1: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Loads the roots once and builds both configurations.
    pub fn new(roots: &UpstreamRoots) -> Result<Self, TlsError> {
        let store = roots.load()?;
        Ok(Self {
            h2: client_config_with_roots(store.clone(), ALPN_H2_HTTP11)?,
            http1: client_config_with_roots(store, ALPN_HTTP11)?,
        })
    }
}

/// The name to verify an upstream certificate against, and to send as SNI: a DNS name, or
/// an IP address (rustls sends no SNI for those). Accepts `[v6]` brackets and a trailing
/// dot; refuses ports and malformed hosts.
pub fn upstream_server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    match LeafHost::parse(host)? {
        LeafHost::Dns(name) => ServerName::try_from(name)
            .map_err(|_| TlsError::invalid_host(host, "not a valid DNS name")),
        LeafHost::Ip(ip) => Ok(ServerName::IpAddress(ip.into())),
    }
}

/// A client configuration verifying against the public roots, the native roots and
/// `extra_ca_pems`, offering `alpn`.
pub fn upstream_client_config(
    extra_ca_pems: &[PathBuf],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = UpstreamRoots {
        extra_ca_pems: extra_ca_pems.to_vec(),
        ..UpstreamRoots::default()
    }
    .load()?;
    client_config_with_roots(roots, alpn)
}

/// A client configuration (ring provider, TLS 1.2 + 1.3, no client certificate) verifying
/// against `roots`, offering `alpn`.
pub fn client_config_with_roots(
    roots: Arc<RootCertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::UpstreamCa {
            path: path.to_path_buf(),
            reason: format!("malformed PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::UpstreamCa {
            path: path.to_path_buf(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::{drive, TestCa};

    /// Handshake between `client` and a server presenting a leaf for `host` from `ca`.
    fn connect(
        client: Arc<ClientConfig>,
        ca: &TestCa,
        host: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        let server_alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        drive(client, ca.server_for(host, &server_alpn), host)
    }

    #[test]
    fn extra_ca_is_trusted_and_alpn_is_offered() {
        let dir = tempfile::tempdir().expect("dir");
        let origin_ca = TestCa::generate("Origin CA");
        let cert = origin_ca.write_cert(dir.path());
        let h2 =
            upstream_client_config(std::slice::from_ref(&cert), ALPN_H2_HTTP11).expect("config");
        assert_eq!(
            connect(h2, &origin_ca, "localhost"),
            Ok(Some(b"h2".to_vec()))
        );
        let http1 =
            upstream_client_config(std::slice::from_ref(&cert), ALPN_HTTP11).expect("config");
        assert_eq!(
            connect(http1, &origin_ca, "localhost"),
            Ok(Some(b"http/1.1".to_vec()))
        );
    }

    #[test]
    fn untrusted_upstream_is_rejected() {
        let unknown = TestCa::generate("Unknown CA");
        let tls = UpstreamTls::new(&UpstreamRoots::default()).expect("roots");
        let err = connect(tls.h2.clone(), &unknown, "localhost").expect_err("untrusted");
        assert!(err.contains("UnknownIssuer"), "{err}");
        assert_eq!(
            tls.h2.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(tls.http1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn server_names_for_upstreams() {
        let dns = upstream_server_name("API.OpenAI.com.").expect("dns");
        assert_eq!(dns.to_str(), "api.openai.com");
        assert!(matches!(dns, ServerName::DnsName(_)));
        for ip in ["127.0.0.1", "[::1]", "::1"] {
            let name = upstream_server_name(ip).expect(ip);
            assert!(matches!(name, ServerName::IpAddress(_)), "{ip}");
        }
        for bad in ["", "host:443", "*.a.com", "[::1]:443"] {
            assert!(upstream_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_roots_are_present() {
        let store = UpstreamRoots {
            native_roots: false,
            ..UpstreamRoots::default()
        }
        .load()
        .expect("roots");
        assert!(store.len() > 100);
    }

    #[test]
    fn bad_extra_pems_are_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "# nothing here\n").expect("write");
        let err =
            upstream_client_config(std::slice::from_ref(&empty), ALPN_HTTP11).expect_err("empty");
        assert!(err.to_string().contains("no certificate"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = upstream_client_config(std::slice::from_ref(&missing), ALPN_HTTP11)
            .expect_err("missing");
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err =
            upstream_client_config(std::slice::from_ref(&junk), ALPN_HTTP11).expect_err("junk");
        assert!(matches!(err, TlsError::UpstreamCa { .. }), "{err}");
        let none = UpstreamRoots {
            public_roots: false,
            native_roots: false,
            extra_ca_pems: Vec::new(),
        };
        assert!(none.load().is_err());
    }
}
