//! The gateway's Ed25519 token signing key: generation, PKCS#8 PEM storage, key id and JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Largest key file accepted; a PKCS#8 Ed25519 PEM is about 170 bytes.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// Why a signing key could not be loaded, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not a PKCS#8 Ed25519 private key.
    #[error("not a PKCS#8 Ed25519 private key in PEM form: {0}")]
    InvalidPem(String),
    /// The key file exists but cannot be used; it is never replaced automatically.
    #[error("signing key file {path} is unusable (fix or remove it): {reason}")]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the key failed (should not happen for a valid key).
    #[error("cannot encode signing key: {0}")]
    Encode(String),
}

/// An Ed25519 signing key with its precomputed JWT keys and key id.
///
/// `Debug` never prints private material.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    public: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let key = Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(&seed));
        seed.fill(0);
        key
    }

    /// Builds the key from a raw 32-byte Ed25519 seed (tests and fixtures).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) holding an Ed25519 key.
    ///
    /// Accepts both PKCS#8 v1 (as written by `openssl genpkey -algorithm ed25519`)
    /// and v2 with the public key (as written by [`Self::to_pkcs8_pem`]).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim())
            .map(Self::from_dalek)
            .map_err(|e| KeyError::InvalidPem(e.to_string()))
    }

    /// The key as PKCS#8 PEM text (with a trailing newline).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// Key id: the RFC 7638 JWK thumbprint (base64url SHA-256) of the public key.
    /// Stable for a given key, different for every key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public key as a JWK (`kty` OKP, `crv` Ed25519, `alg` EdDSA, `use` sig, `kid`).
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// The JWKS document served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    fn from_dalek(inner: ed25519_dalek::SigningKey) -> Self {
        let public = inner.verifying_key().to_bytes();
        // The PKCS#8 document of a valid in-memory key always encodes; the
        // signer in jsonwebtoken parses it back on every signature.
        let der = inner
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let encoding = EncodingKey::from_ed_der(&der);
        let decoding = DecodingKey::from_ed_der(&public);
        let kid = thumbprint(&public);
        Self {
            inner,
            public,
            encoding,
            decoding,
            kid,
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key.
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Loads the signing key at `path`, or generates one there on first run.
///
/// Returns the key and whether it was generated. A new key is written with
/// mode 0600 (Unix) to a temporary file in the same directory and linked into
/// place without replacing anything, so concurrent first starts agree on one key
/// and a crash never leaves a half-written key. An existing file that does not
/// parse is an error: a key is never silently replaced, because that would
/// invalidate every token in circulation.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, bool), KeyError> {
    match read_key(path) {
        Ok(key) => return Ok((key, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = SigningKey::generate();
    let pem = key.to_pkcs8_pem()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|source| KeyError::Io {
        path: dir.clone(),
        source,
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "signing-key.pem".to_owned());
    let tmp = dir.join(format!(".{file_name}.{:016x}.tmp", rand::rng().next_u64()));
    let linked = write_private(&tmp, pem.as_bytes()).and_then(|()| {
        std::fs::hard_link(&tmp, path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    let _ = std::fs::remove_file(&tmp);
    let generated = match linked {
        Ok(()) => true,
        // Another process created the key between our read and link: use theirs.
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            false
        }
        Err(e) => return Err(e),
    };
    // Read back what is on disk, so the key in use is exactly the persisted one.
    let loaded = read_key(path)?;
    Ok((loaded, generated))
}

fn read_key(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(KeyError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a regular file".to_owned(),
        });
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("file is {} bytes, too large for a key", meta.len()),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Corrupt {
        path: path.to_path_buf(),
        reason: "not UTF-8 PEM text".to_owned(),
    })?;
    SigningKey::from_pem(text).map_err(|e| KeyError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_key_and_kid() {
        let k = SigningKey::generate();
        let pem = k.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert_eq!(k.kid(), k2.kid());
        assert_ne!(k.kid(), SigningKey::generate().kid());
    }

    #[test]
    fn accepts_openssl_pkcs8_v1() {
        // RFC 8410 §10.3 example private key.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let k = SigningKey::from_pem(pem).unwrap();
        assert_eq!(k.jwk()["kty"], "OKP");
    }

    #[test]
    fn rejects_garbage_and_other_key_types() {
        for bad in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            // An EC P-256 PKCS#8 key.
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(
                matches!(SigningKey::from_pem(bad), Err(KeyError::InvalidPem(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kid_is_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: thumbprint of the A.2 public key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let public: [u8; 32] = x.try_into().unwrap();
        assert_eq!(
            thumbprint(&public),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn jwks_shape() {
        let k = SigningKey::generate();
        let jwks = k.jwks();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], k.kid());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
            k.public_key().to_vec()
        );
        assert!(jwk.get("d").is_none());
        assert!(!format!("{k:?}").contains(&k.to_pkcs8_pem().unwrap()[28..60]));
    }

    #[test]
    fn load_or_generate_creates_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/signing.pem");
        let (k1, generated) = load_or_generate(&path).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, generated) = load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(k1.kid(), k2.kid());
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = load_or_generate(&path).unwrap_err();
        assert!(matches!(err, KeyError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");

        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            load_or_generate(&path),
            Err(KeyError::Corrupt { .. })
        ));

        let as_dir = dir.path().join("a_dir.pem");
        std::fs::create_dir(&as_dir).unwrap();
        assert!(matches!(
            load_or_generate(&as_dir),
            Err(KeyError::Corrupt { .. })
        ));
    }
}
