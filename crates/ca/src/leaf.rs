//! Minting leaf certificates for intercepted hosts.

use std::sync::Arc;
use std::time::Duration;

use portcullis_tls::rustls;
use portcullis_tls::{provider, LeafHost, TlsError};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ServerConfig, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use time::OffsetDateTime;

use crate::{generation, CertificateAuthority};

/// Default validity of a minted leaf.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default backdating of a leaf's `notBefore` (tolerates client clock skew).
pub const DEFAULT_LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// Longest common name X.509 allows (ub-common-name); longer hosts get a SAN only.
const MAX_CN_LEN: usize = 64;

/// Validity settings of minted leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafParams {
    /// How long a leaf is valid after it is minted.
    pub validity: Duration,
    /// How far before the minting time `notBefore` lies.
    pub backdate: Duration,
}

impl Default for LeafParams {
    fn default() -> Self {
        Self {
            validity: DEFAULT_LEAF_VALIDITY,
            backdate: DEFAULT_LEAF_BACKDATE,
        }
    }
}

impl LeafParams {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.validity < Duration::from_secs(60) {
            return Err(TlsError::InvalidConfig {
                key: "tls.leaf_validity",
                reason: "must be at least 60 seconds",
            });
        }
        if self.validity > Duration::from_secs(397 * 24 * 3600) {
            return Err(TlsError::InvalidConfig {
                key: "tls.leaf_validity",
                reason: "must be at most 397 days (clients reject longer server certificates)",
            });
        }
        if self.backdate > Duration::from_secs(7 * 24 * 3600) {
            return Err(TlsError::InvalidConfig {
                key: "tls.leaf_backdate",
                reason: "must be at most 7 days",
            });
        }
        Ok(())
    }
}

/// Mints a leaf for `host` with the default [`LeafParams`].
///
/// See [`mint_leaf_with`].
pub fn mint_leaf(ca: &CertificateAuthority, host: &str) -> Result<CertifiedKey, TlsError> {
    mint_leaf_with(ca, host, &LeafParams::default())
}

/// Mints a leaf for `host` signed by `ca`: a fresh ECDSA P-256 key, SAN = DNS name or IP
/// address, CN = host, AKI = the CA's key id, EKU serverAuth, KU digitalSignature, random
/// serial, valid from `now - backdate` to `now + validity`.
///
/// The chain holds the leaf only (clients have the CA as a trust anchor). This is CPU work
/// (~1 ms): from async code call it through [`LeafCache`](crate::LeafCache) or
/// `spawn_blocking`.
pub fn mint_leaf_with(
    ca: &CertificateAuthority,
    host: &str,
    leaf: &LeafParams,
) -> Result<CertifiedKey, TlsError> {
    let host = LeafHost::parse(host)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let cn = host.to_string();
    if cn.len() <= MAX_CN_LEN {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = vec![match &host {
        LeafHost::Dns(name) => SanType::DnsName(name.as_str().try_into().map_err(generation)?),
        LeafHost::Ip(ip) => SanType::IpAddress(*ip),
    }];
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - leaf.backdate;
    params.not_after = now + leaf.validity;
    params.serial_number = Some(random_serial()?);
    let cert = params.signed_by(&key, ca.issuer()).map_err(generation)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider().key_provider.load_private_key(key_der)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
}

/// Builds the server side of an intercepted tunnel from a minted leaf: TLS 1.2 and 1.3 with
/// the ring provider, no client authentication, and the given ALPN protocols (in preference
/// order, e.g. `h2`, `http/1.1`).
pub fn server_config_for(
    leaf: CertifiedKey,
    alpn: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(leaf, alpn, None)
}

/// Like [`server_config_for`], optionally sharing a session-resumption store between
/// configurations (rustls only resumes a session under the same SNI).
pub(crate) fn build_server_config(
    leaf: CertifiedKey,
    alpn: &[Vec<u8>],
    sessions: Option<Arc<dyn StoresServerSessions>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
    config.alpn_protocols = alpn.to_vec();
    if let Some(sessions) = sessions {
        config.session_storage = sessions;
    }
    Ok(Arc::new(config))
}

/// A random positive 16-byte serial from the provider's secure RNG.
pub(crate) fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Rustls(rustls::Error::FailedToGetRandomBytes))?;
    // Positive and exactly 16 bytes long once DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use super::*;
    use crate::testutil::{handshake, test_ca};
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("parse").1
    }

    fn leaf_der(ca: &CertificateAuthority, host: &str) -> Vec<u8> {
        let leaf = mint_leaf(ca, host).expect("mint");
        assert_eq!(leaf.cert.len(), 1);
        leaf.cert.first().expect("leaf").to_vec()
    }

    /// (dns names, ip addresses) in the SAN extension.
    fn sans(info: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
        let san = info
            .subject_alternative_name()
            .expect("unique")
            .expect("san");
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*ip).expect("v4"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*ip).expect("v6"))),
                    n => panic!("bad ip length {n}"),
                },
                other => panic!("unexpected general name {other:?}"),
            }
        }
        (dns, ips)
    }

    fn common_name(info: &X509Certificate<'_>) -> Option<String> {
        let cn = info.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }

    #[test]
    fn dns_host_gets_a_dns_san_and_cn() {
        let ca = test_ca();
        let der = leaf_der(ca, "API.OpenAI.com.");
        let info = parse(&der);
        assert_eq!(sans(&info), (vec!["api.openai.com".to_string()], vec![]));
        assert_eq!(common_name(&info).as_deref(), Some("api.openai.com"));
        assert!(!info.is_ca());
    }

    #[test]
    fn ip_hosts_get_ip_sans() {
        let ca = test_ca();
        for (host, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[2001:db8::5]", "2001:db8::5"),
        ] {
            let der = leaf_der(ca, host);
            let info = parse(&der);
            let want: IpAddr = ip.parse().expect("ip");
            assert_eq!(sans(&info), (vec![], vec![want]), "host {host}");
            assert_eq!(common_name(&info), Some(want.to_string()));
        }
    }

    #[test]
    fn long_host_has_san_but_no_cn() {
        let ca = test_ca();
        let host = format!("{}.example.com", "a".repeat(60));
        let der = leaf_der(ca, &host);
        let info = parse(&der);
        assert_eq!(sans(&info).0, vec![host]);
        assert_eq!(common_name(&info), None);
    }

    #[test]
    fn aki_eku_ku_and_issuer() {
        let ca = test_ca();
        let der = leaf_der(ca, "example.com");
        let info = parse(&der);
        let ca_info = parse(ca.cert_der());
        assert_eq!(info.issuer().as_raw(), ca_info.subject().as_raw());

        let aki = info
            .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .expect("unique")
            .expect("aki present");
        let ParsedExtension::AuthorityKeyIdentifier(aki) = aki.parsed_extension() else {
            panic!("aki does not parse: {aki:?}");
        };
        let key_id = aki.key_identifier.as_ref().expect("keyIdentifier").0;
        assert_eq!(key_id, ca.key_id());
        let ca_ski = ca_info
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
                _ => None,
            });
        assert_eq!(Some(key_id), ca_ski);

        let eku = info.extended_key_usage().expect("unique").expect("eku");
        assert!(eku.value.server_auth);
        let others = [
            eku.value.any,
            eku.value.client_auth,
            eku.value.code_signing,
            eku.value.email_protection,
            eku.value.time_stamping,
            eku.value.ocsp_signing,
        ];
        assert!(
            others.iter().all(|p| !p) && eku.value.other.is_empty(),
            "serverAuth only"
        );

        let ku = info.key_usage().expect("unique").expect("ku");
        assert!(ku.critical);
        assert_eq!(ku.value.flags, 1, "digitalSignature only");
    }

    #[test]
    fn validity_is_backdated_and_short() {
        let ca = test_ca();
        let before = OffsetDateTime::now_utc();
        let params = LeafParams {
            validity: Duration::from_secs(2 * 24 * 3600),
            backdate: Duration::from_secs(1800),
        };
        let leaf = mint_leaf_with(ca, "example.com", &params).expect("mint");
        let after = OffsetDateTime::now_utc();
        let info = parse(leaf.cert.first().expect("leaf"));
        let not_before = info.validity().not_before.to_datetime();
        let not_after = info.validity().not_after.to_datetime();
        // Times are encoded with one-second precision.
        let slack = Duration::from_secs(1);
        assert!(not_before >= before - params.backdate - slack);
        assert!(not_before <= after - params.backdate);
        assert!(not_after >= before + params.validity - slack);
        assert!(not_after <= after + params.validity);
        assert!(not_before < before, "backdated");
    }

    #[test]
    fn serials_and_keys_are_unique() {
        let ca = test_ca();
        let mut serials = HashSet::new();
        let mut keys = HashSet::new();
        for _ in 0..200 {
            let der = leaf_der(ca, "same.example.com");
            let info = parse(&der);
            let serial = info.raw_serial();
            assert_eq!(serial.len(), 16);
            assert!(serial[0] & 0x80 == 0, "positive");
            assert!(serials.insert(serial.to_vec()), "duplicate serial");
            assert!(keys.insert(info.public_key().raw.to_vec()), "duplicate key");
        }
    }

    #[test]
    fn invalid_hosts_are_errors() {
        let ca = test_ca();
        for bad in [
            "",
            "*.example.com",
            "a b",
            "[::1",
            "fe80::1%eth0",
            "x".repeat(300).as_str(),
        ] {
            let err = mint_leaf(ca, bad).expect_err(bad);
            assert!(err.is_client_error(), "{bad:?}: {err}");
        }
    }

    #[test]
    fn params_validation() {
        assert!(LeafParams::default().validate().is_ok());
        let short = LeafParams {
            validity: Duration::from_secs(10),
            ..LeafParams::default()
        };
        assert!(short.validate().is_err());
        let long = LeafParams {
            validity: Duration::from_secs(400 * 24 * 3600),
            ..LeafParams::default()
        };
        assert!(long.validate().is_err());
    }

    #[test]
    fn rustls_client_trusting_the_ca_accepts_the_leaf() {
        let ca = test_ca();
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        for (host, sni) in [
            ("api.openai.com", Some("api.openai.com")),
            ("127.0.0.1", None),
            ("[::1]", None),
        ] {
            let server = server_config_for(mint_leaf(ca, host).expect("mint"), &alpn)
                .expect("server config");
            let name = sni.unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
            let outcome = handshake(ca, server, name, &[b"h2", b"http/1.1"]);
            assert_eq!(outcome.expect("handshake"), Some(b"h2".to_vec()), "{host}");
        }
    }

    #[test]
    fn rustls_client_rejects_a_leaf_for_another_name_or_ca() {
        let ca = test_ca();
        let server = server_config_for(mint_leaf(ca, "a.example.com").expect("mint"), &[])
            .expect("server config");
        let err = handshake(ca, server, "b.example.com", &[]).expect_err("wrong name");
        assert!(err.contains("NotValidForName"), "{err}");

        let other = CertificateAuthority::generate("Other").expect("other");
        let server = server_config_for(mint_leaf(&other, "a.example.com").expect("mint"), &[])
            .expect("server config");
        let err = handshake(ca, server, "a.example.com", &[]).expect_err("untrusted");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
}
