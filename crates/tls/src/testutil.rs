//! Test helpers: a CA made directly with rcgen (certificate generation is not part of this
//! crate), leaves it signs, and in-memory rustls handshakes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::{encode_pem, provider};

/// A self-signed CA for tests.
pub(crate) struct TestCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA named `name`.
    pub(crate) fn generate(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed");
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate.
    pub(crate) fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Writes the CA certificate as `ca.pem` into `dir`; returns its path.
    pub(crate) fn write_cert(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, encode_pem("CERTIFICATE", &self.cert)).expect("write CA");
        path
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.issuer.key().serialize_der()))
    }

    /// A server presenting a leaf for `host` signed by this CA, offering `alpn`.
    pub(crate) fn server_for(&self, host: &str, alpn: &[Vec<u8>]) -> Arc<ServerConfig> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec![host.to_owned()]).expect("params");
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &self.issuer).expect("leaf");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        server(vec![leaf.der().clone()], key, alpn)
    }

    /// A server presenting this CA's own certificate as its server certificate.
    pub(crate) fn server_presenting_itself(&self) -> Arc<ServerConfig> {
        server(vec![self.cert.clone()], self.key_der(), &[])
    }
}

fn server(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[Vec<u8>],
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = alpn.to_vec();
    Arc::new(config)
}

/// One CA for the whole test binary (generation is not free).
fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::generate("Portcullis Test CA"))
}

/// The first flight of a rustls client: its ClientHello record(s).
pub(crate) fn client_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots.add(test_ca().cert().clone()).expect("add CA");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut client = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// Runs a full in-memory handshake between the two configurations; returns the negotiated
/// ALPN protocol or the first error (Debug-formatted, client side first).
pub(crate) fn drive(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| format!("{e:?}"))?;
    let mut client = ClientConnection::new(client, name).map_err(|e| format!("{e:?}"))?;
    let mut server = ServerConnection::new(server).map_err(|e| format!("{e:?}"))?;
    for _ in 0..32 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).map_err(|e| e.to_string())?;
            server
                .process_new_packets()
                .map_err(|e| format!("server: {e:?}"))?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).map_err(|e| e.to_string())?;
            client
                .process_new_packets()
                .map_err(|e| format!("client: {e:?}"))?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(client.alpn_protocol().map(<[u8]>::to_vec));
        }
    }
    Err("handshake did not finish".into())
}

/// Runs an in-memory handshake expected to fail on the client side; returns the client's
/// error as rustls reports it.
pub(crate) fn client_error(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> rustls::Error {
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut client = ClientConnection::new(client, name).expect("client");
    let mut server = ServerConnection::new(server).expect("server");
    for _ in 0..32 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).expect("server read");
            server.process_new_packets().expect("server");
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).expect("client read");
            if let Err(e) = client.process_new_packets() {
                return e;
            }
        }
    }
    panic!("the handshake did not fail");
}
