//! Test helpers: a shared CA and in-memory rustls handshakes.

use std::sync::{Arc, OnceLock};

use portcullis_tls::provider;
use portcullis_tls::rustls::pki_types::ServerName;
use portcullis_tls::rustls::{
    self, ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};

use crate::CertificateAuthority;

/// One CA for the whole test binary (generation is not free).
pub(crate) fn test_ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("Portcullis Test CA").expect("test CA"))
}

/// A client config trusting only `ca`.
pub(crate) fn client_trusting(ca: &CertificateAuthority, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("add CA");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Runs a full in-memory handshake; returns the negotiated ALPN protocol or the first error
/// (Debug-formatted, client side first).
pub(crate) fn handshake(
    ca: &CertificateAuthority,
    server: Arc<ServerConfig>,
    server_name: &str,
    alpn: &[&[u8]],
) -> Result<Option<Vec<u8>>, String> {
    drive(client_trusting(ca, alpn), server, server_name)
}

/// Runs a full in-memory handshake between the two configurations.
pub(crate) fn drive(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<Option<Vec<u8>>, String> {
    drive_full(client, server, server_name).map(|(alpn, _)| alpn)
}

/// Like [`drive`], also telling whether the session was resumed.
pub(crate) fn drive_full(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<(Option<Vec<u8>>, bool), String> {
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
            let resumed = client.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            return Ok((client.alpn_protocol().map(<[u8]>::to_vec), resumed));
        }
    }
    Err("handshake did not finish".into())
}
