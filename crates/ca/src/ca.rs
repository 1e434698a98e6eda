//! The gateway certificate authority: generate, write, load.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_tls::rustls::pki_types::pem::PemObject;
use portcullis_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use portcullis_tls::{encode_pem, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::generation;

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) inside a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the bundle "public roots + gateway CA" inside a CA directory.
pub const CA_BUNDLE_FILE: &str = "ca-bundle.pem";
/// Common name of a CA made by [`CertificateAuthority::load_or_generate`].
pub const DEFAULT_CA_COMMON_NAME: &str = "Portcullis Gateway CA";
/// Validity of a generated CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far a generated CA's `notBefore` lies in the past (tolerates clock skew).
pub const CA_BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// Where the CA files of a directory live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// The CA certificate (`ca.pem`).
    pub cert: PathBuf,
    /// The CA private key (`ca.key`).
    pub key: PathBuf,
    /// Public roots plus the gateway CA (`ca-bundle.pem`), for clients whose CA setting
    /// replaces the public roots (`REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`).
    pub bundle: PathBuf,
}

impl CaPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
            bundle: dir.join(CA_BUNDLE_FILE),
        }
    }
}

/// The CA that signs minted leaf certificates.
///
/// Cheap to share behind an `Arc`; signing takes `&self`.
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_id: Vec<u8>,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("key_id", &self.key_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a fresh CA: ECDSA P-256, `CA:TRUE, pathlen:0`, keyCertSign + cRLSign,
    /// valid for 10 years from one day ago, random serial.
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        if common_name.is_empty() || common_name.chars().count() > 64 {
            return Err(TlsError::InvalidConfig {
                key: "ca.common_name",
                reason: "must be 1 to 64 characters",
            });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Portcullis");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CA_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(crate::leaf::random_serial()?);
        let cert = params.self_signed(&key).map_err(generation)?;
        let key_id = params.key_identifier(&key);
        let not_after = params.not_after;
        let cert_der = cert.der().clone();
        let cert_pem = encode_pem("CERTIFICATE", &cert_der);
        Ok(Self {
            cert_der,
            cert_pem,
            issuer: Issuer::new(params, key),
            key_id,
            not_after,
        })
    }

    /// Loads a CA from a PEM certificate and a PKCS#8 PEM private key.
    ///
    /// Checks that the certificate is a CA, is not expired, that the key matches it, and
    /// that leaves signed with it name the CA's subject byte for byte (so clients can build
    /// the chain). The certificate is parsed by `x509-parser`; the issuer leaves are signed
    /// with (subject name, key identifier) is built by rcgen from the same certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_err = |reason: String| TlsError::CaCertificate {
            path: cert_path.to_path_buf(),
            reason,
        };
        let key_err = |reason: String| TlsError::CaKey {
            path: key_path.to_path_buf(),
            reason,
        };
        let cert_pem = read_file(cert_path)?;
        let cert_der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| cert_err(format!("no PEM certificate found ({e})")))?;
        let (rest, info) = X509Certificate::from_der(&cert_der)
            .map_err(|_| cert_err("malformed X.509 certificate".into()))?;
        if !rest.is_empty() {
            return Err(cert_err("malformed X.509 certificate".into()));
        }
        if !info.is_ca() {
            return Err(cert_err(
                "not a CA certificate (basicConstraints cA is not TRUE)".into(),
            ));
        }
        let not_after = info.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(cert_err(format!("expired on {not_after}")));
        }

        let key_pem = read_file(key_path)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| key_err(format!("no PEM private key found ({e})")))?;
        if !matches!(key_der, PrivateKeyDer::Pkcs8(_)) {
            return Err(key_err(
                "key must be PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with \
                 `openssl pkcs8 -topk8 -nocrypt -in KEY -out ca.key`"
                    .into(),
            ));
        }
        let key = KeyPair::try_from(&key_der)
            .map_err(|e| key_err(format!("unsupported or malformed key ({e})")))?;
        if key.subject_public_key_info() != info.public_key().raw {
            return Err(TlsError::CaKeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }

        let key_id = match subject_key_id(&info) {
            Some(id) => id.to_vec(),
            None => CertificateParams::default().key_identifier(&key),
        };
        let subject_raw = info.subject().as_raw().to_vec();
        let unreproducible =
            || cert_err("subject name uses a form that cannot be reproduced in leaves".into());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|_| unreproducible())?;
        let ca = Self {
            cert_pem: encode_pem("CERTIFICATE", &cert_der),
            cert_der,
            issuer,
            key_id,
            not_after,
        };

        // A leaf's issuer field must equal the CA subject byte for byte (rcgen keeps one
        // attribute per type, so a repeated type would not come out the same).
        let probe = crate::leaf::mint_leaf(&ca, "probe.invalid")?;
        let probe_issuer = probe.cert.first().and_then(|c| {
            X509Certificate::from_der(c)
                .ok()
                .map(|(_, leaf)| leaf.issuer().as_raw().to_vec())
        });
        if probe_issuer.as_deref() != Some(subject_raw.as_slice()) {
            return Err(unreproducible());
        }
        Ok(ca)
    }

    /// Loads the CA of `dir` (`ca.pem`, `ca.key`), or generates and writes one when neither
    /// file exists. Returns the CA and whether it was generated. A directory with only one
    /// of the two files is an error (nothing is overwritten). A missing bundle is rewritten.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), TlsError> {
        let paths = CaPaths::in_dir(dir);
        match (paths.cert.exists(), paths.key.exists()) {
            (true, true) => {
                let ca = Self::load(&paths.cert, &paths.key)?;
                if !paths.bundle.exists() {
                    write_public(&paths.bundle, ca.bundle_pem().as_bytes())?;
                }
                Ok((ca, false))
            }
            (false, false) => {
                let ca = Self::generate(DEFAULT_CA_COMMON_NAME)?;
                ca.write(dir)?;
                Ok((ca, true))
            }
            (true, false) => Err(TlsError::PartialCa {
                present: paths.cert,
                missing: paths.key,
            }),
            (false, true) => Err(TlsError::PartialCa {
                present: paths.key,
                missing: paths.cert,
            }),
        }
    }

    /// Writes `ca.pem`, `ca.key` (mode 0600) and `ca-bundle.pem` into `dir` (created if
    /// needed), replacing existing files, and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<CaPaths, TlsError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let paths = CaPaths::in_dir(dir);
        write_private(&paths.key, self.key_pem().as_bytes())?;
        write_public(&paths.cert, self.cert_pem.as_bytes())?;
        write_public(&paths.bundle, self.bundle_pem().as_bytes())?;
        Ok(paths)
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key identifier (its subjectKeyIdentifier; leaves carry it as AKI).
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The public roots (Mozilla's set, as shipped by `webpki-root-certs`) followed by the
    /// gateway CA, PEM.
    pub fn bundle_pem(&self) -> String {
        let mut out = String::with_capacity(256 * 1024);
        out.push_str("# Portcullis gateway CA\n");
        out.push_str(&self.cert_pem);
        out.push_str("# Public roots (Mozilla, via webpki-root-certs)\n");
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            out.push_str(&encode_pem("CERTIFICATE", root));
        }
        out
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

/// How to make clients trust the gateway CA, for `portcullis ca init` and the serve banner.
pub fn trust_instructions(paths: &CaPaths) -> String {
    let cert = paths.cert.display();
    let bundle = paths.bundle.display();
    format!(
        "Trust the Portcullis gateway CA ({cert}):\n\
         \x20 curl, OpenSSL, httpx:  export SSL_CERT_FILE={bundle}\n\
         \x20 Python requests:       export REQUESTS_CA_BUNDLE={bundle}\n\
         \x20                        (these replace the public roots; the bundle holds them plus the gateway CA)\n\
         \x20 Node.js:               export NODE_EXTRA_CA_CERTS={cert}\n\
         \x20 one curl call:         curl --cacert {cert} ...\n\
         \x20 system store (Debian/Ubuntu):\n\
         \x20   sudo cp {cert} /usr/local/share/ca-certificates/portcullis.crt && sudo update-ca-certificates\n\
         \x20 system store (RHEL/Fedora):\n\
         \x20   sudo cp {cert} /etc/pki/ca-trust/source/anchors/portcullis.pem && sudo update-ca-trust\n\
         The private key ({key}) signs certificates for any host: keep it secret, never commit it.\n",
        key = paths.key.display(),
    )
}

/// The subjectKeyIdentifier extension's value, if the certificate has one.
fn subject_key_id<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

fn io(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|e| io(path, e))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    fs::write(path, bytes).map_err(|e| io(path, e))
}

/// Writes a secret file readable by its owner only, also when it already existed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // Tighten an existing file before writing the secret into it.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| io(path, e))?;
        }
    }
    let mut file = options.open(path).map_err(|e| io(path, e))?;
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::DnValue;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("parse").1
    }

    #[test]
    fn generated_ca_is_a_constrained_ca() {
        let ca = CertificateAuthority::generate("Test CA").expect("generate");
        let info = parse(ca.cert_der());
        assert!(info.is_ca());
        assert_eq!(
            info.subject().as_raw(),
            info.issuer().as_raw(),
            "self-signed"
        );
        assert_eq!(subject_key_id(&info), Some(ca.key_id()));
        let now = OffsetDateTime::now_utc();
        let validity = info.validity();
        assert!(validity.not_before.to_datetime() < now - Duration::from_secs(23 * 3600));
        assert!(validity.not_after.to_datetime() > now + Duration::from_secs(9 * 365 * 24 * 3600));
        // basicConstraints: cA TRUE, pathLen 0.
        let bc = info.basic_constraints().expect("unique").expect("bc");
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        // keyUsage: keyCertSign (bit 5) and cRLSign (bit 6) only.
        let ku = info.key_usage().expect("unique").expect("ku");
        assert_eq!(ku.value.flags, (1 << 5) | (1 << 6));
        assert!(CertificateAuthority::generate("").is_err());
        assert!(CertificateAuthority::generate(&"x".repeat(65)).is_err());
    }

    #[test]
    fn serials_differ_between_cas() {
        let a = CertificateAuthority::generate("A").expect("a");
        let b = CertificateAuthority::generate("A").expect("b");
        let sa = parse(a.cert_der()).raw_serial().to_vec();
        let sb = parse(b.cert_der()).raw_serial().to_vec();
        assert_ne!(sa, sb);
        assert!(sa.len() >= 16);
    }

    #[test]
    fn write_then_load_round_trips() {
        let dir = tmp();
        let ca = CertificateAuthority::generate("Round Trip CA").expect("generate");
        let paths = ca.write(dir.path()).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&paths.key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = CertificateAuthority::load(&paths.cert, &paths.key).expect("load");
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert_eq!(loaded.key_id(), ca.key_id());
        assert_eq!(loaded.cert_pem(), ca.cert_pem());

        let bundle = fs::read(&paths.bundle).expect("bundle");
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bundle)
            .collect::<Result<_, _>>()
            .expect("bundle parses");
        assert_eq!(
            certs.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + 1
        );
        assert!(certs.contains(ca.cert_der()));
        assert!(certs.len() > 100, "public roots present");
    }

    #[test]
    fn existing_key_file_is_tightened() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = tmp();
            let key = dir.path().join(CA_KEY_FILE);
            fs::write(&key, b"old").expect("write");
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
            let ca = CertificateAuthority::generate("T").expect("generate");
            ca.write(dir.path()).expect("write");
            let mode = fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn load_or_generate_generates_once() {
        let dir = tmp();
        let sub = dir.path().join("certs");
        let (first, generated) = CertificateAuthority::load_or_generate(&sub).expect("first");
        assert!(generated);
        let (second, generated) = CertificateAuthority::load_or_generate(&sub).expect("second");
        assert!(!generated);
        assert_eq!(first.cert_der(), second.cert_der());
        fs::remove_file(sub.join(CA_BUNDLE_FILE)).expect("rm bundle");
        let (_, generated) = CertificateAuthority::load_or_generate(&sub).expect("third");
        assert!(!generated);
        assert!(sub.join(CA_BUNDLE_FILE).exists(), "bundle rewritten");
    }

    #[test]
    fn half_a_ca_is_refused_and_not_overwritten() {
        let dir = tmp();
        let ca = CertificateAuthority::generate("T").expect("generate");
        let paths = ca.write(dir.path()).expect("write");
        fs::remove_file(&paths.key).expect("rm key");
        let err = CertificateAuthority::load_or_generate(dir.path()).expect_err("partial");
        assert!(matches!(err, TlsError::PartialCa { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(&paths.cert).expect("cert"),
            ca.cert_pem()
        );
        assert!(!paths.key.exists());
    }

    #[test]
    fn load_reports_clear_errors() {
        let dir = tmp();
        let a = CertificateAuthority::generate("A").expect("a");
        let b = CertificateAuthority::generate("B").expect("b");
        let pa = a.write(&dir.path().join("a")).expect("write a");
        let pb = b.write(&dir.path().join("b")).expect("write b");

        let missing = dir.path().join("nope.pem");
        let err = CertificateAuthority::load(&missing, &pa.key).expect_err("missing");
        assert!(matches!(err, TlsError::Io { .. }));
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let err = CertificateAuthority::load(&pa.cert, &pb.key).expect_err("mismatch");
        assert!(matches!(err, TlsError::CaKeyMismatch { .. }), "{err}");

        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "not a pem").expect("write");
        let err = CertificateAuthority::load(&garbage, &pa.key).expect_err("garbage cert");
        assert!(matches!(err, TlsError::CaCertificate { .. }), "{err}");
        let err = CertificateAuthority::load(&pa.cert, &garbage).expect_err("garbage key");
        assert!(matches!(err, TlsError::CaKey { .. }), "{err}");

        // A leaf is not a CA.
        let leaf = crate::leaf::mint_leaf(&a, "example.com").expect("leaf");
        let leaf_pem = dir.path().join("leaf.pem");
        let leaf_der = leaf.cert.first().expect("leaf cert");
        fs::write(&leaf_pem, encode_pem("CERTIFICATE", leaf_der)).expect("write");
        let err = CertificateAuthority::load(&leaf_pem, &pa.key).expect_err("leaf");
        assert!(err.to_string().contains("not a CA"), "{err}");

        // SEC1 keys are explained.
        let sec1 = dir.path().join("sec1.key");
        fs::write(
            &sec1,
            encode_pem("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01]),
        )
        .expect("write");
        let err = CertificateAuthority::load(&pa.cert, &sec1).expect_err("sec1");
        assert!(err.to_string().contains("PKCS#8"), "{err}");
    }

    #[test]
    fn loads_a_ca_with_a_richer_subject() {
        // A CA made elsewhere with C/O/OU/CN and printable strings, without pathlen.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().expect("ps")),
        );
        dn.push(DnType::OrganizationName, "Acme GmbH");
        dn.push(DnType::OrganizationalUnitName, "Platform");
        dn.push(DnType::CommonName, "Acme Egress CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(3600);
        let cert = params.self_signed(&key).expect("self-signed");
        let dir = tmp();
        let cert_path = dir.path().join("ca.pem");
        let key_path = dir.path().join("ca.key");
        fs::write(&cert_path, cert.pem()).expect("cert");
        fs::write(&key_path, key.serialize_pem()).expect("key");
        let ca = CertificateAuthority::load(&cert_path, &key_path).expect("load");
        let leaf = crate::leaf::mint_leaf(&ca, "api.openai.com").expect("leaf");
        let leaf_der = leaf.cert.first().expect("cert");
        assert_eq!(
            parse(leaf_der).issuer().as_raw(),
            parse(ca.cert_der()).subject().as_raw()
        );
    }

    #[test]
    fn a_pem_that_is_not_a_certificate_is_refused() {
        let dir = tmp();
        let ca = CertificateAuthority::generate("T").expect("generate");
        let paths = ca.write(dir.path()).expect("write");
        let junk = dir.path().join("junk.pem");
        fs::write(
            &junk,
            encode_pem("CERTIFICATE", &[0x30, 0x03, 0x02, 0x01, 0x01]),
        )
        .expect("write");
        let err = CertificateAuthority::load(&junk, &paths.key).expect_err("junk");
        assert!(matches!(err, TlsError::CaCertificate { .. }), "{err}");
        assert!(
            err.to_string().contains("malformed X.509 certificate"),
            "{err}"
        );
    }

    #[test]
    fn expired_ca_is_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(7200);
        params.not_after = OffsetDateTime::now_utc() - Duration::from_secs(3600);
        let cert = params.self_signed(&key).expect("self-signed");
        let dir = tmp();
        let cert_path = dir.path().join("ca.pem");
        let key_path = dir.path().join("ca.key");
        fs::write(&cert_path, cert.pem()).expect("cert");
        fs::write(&key_path, key.serialize_pem()).expect("key");
        let err = CertificateAuthority::load(&cert_path, &key_path).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn trust_text_names_every_variable() {
        let text = trust_instructions(&CaPaths::in_dir("/srv/certs"));
        for needle in [
            "SSL_CERT_FILE=/srv/certs/ca-bundle.pem",
            "REQUESTS_CA_BUNDLE=/srv/certs/ca-bundle.pem",
            "NODE_EXTRA_CA_CERTS=/srv/certs/ca.pem",
            "update-ca-certificates",
            "--cacert /srv/certs/ca.pem",
        ] {
            assert!(text.contains(needle), "missing {needle}: {text}");
        }
    }
}
