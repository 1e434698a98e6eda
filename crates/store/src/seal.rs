//! Encryption at rest of stored credential secrets: ChaCha20-Poly1305 (`ring`) under a
//! 32-byte key that never enters the database, with the credential's name as associated
//! data (a sealed secret copied onto another credential's row does not open).

use crate::error::{Result, StoreError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use std::path::Path;

/// Bytes in a sealing key.
pub const SEAL_KEY_LEN: usize = 32;

/// The key that seals credential secrets in the store.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SEAL_KEY_LEN {
            return Err(StoreError::invalid(
                "credentials key",
                format!("must be {SEAL_KEY_LEN} bytes, got {}", bytes.len()),
            ));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| StoreError::invalid("credentials key", "rejected by the cipher"))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// A key from its standard base64 text (e.g. an environment variable).
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| StoreError::invalid("credentials key", "is not base64"))?;
        Self::from_bytes(&bytes)
    }

    /// Loads the key from `path` (base64 text), or generates one there (mode 0600) when the
    /// file does not exist. Returns the key and whether it was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_base64(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; SEAL_KEY_LEN];
                rand::rng().fill_bytes(&mut bytes);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::invalid("credentials key", format!("{}: {e}", dir.display()))
                    })?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| {
                    StoreError::invalid("credentials key", format!("{}: {e}", path.display()))
                })?;
                std::io::Write::write_all(&mut file, STANDARD.encode(bytes).as_bytes()).map_err(
                    |e| StoreError::invalid("credentials key", format!("{}: {e}", path.display())),
                )?;
                Ok((Self::from_bytes(&bytes)?, true))
            }
            Err(e) => Err(StoreError::invalid(
                "credentials key",
                format!("{}: {e}", path.display()),
            )),
        }
    }

    /// Seals `secret` for the credential `name`: base64 of nonce ‖ ciphertext ‖ tag.
    pub(crate) fn seal(&self, name: &str, secret: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StoreError::invalid("credential secret", "cannot be sealed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`SealKey::seal`] produced for `name`. Fails on another key, another name
    /// or any altered byte.
    pub(crate) fn open(&self, name: &str, sealed: &str) -> Result<String> {
        let fail = || {
            StoreError::corrupt(
                "credential secret",
                "does not open with this credentials key (another key, or altered)",
            )
        };
        let mut bytes = STANDARD.decode(sealed).map_err(|_| fail())?;
        if bytes.len() < NONCE_LEN {
            return Err(fail());
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).map_err(|_| fail())?;
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut bytes[NONCE_LEN..])
            .map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealKey {
        SealKey::from_bytes(&[b; SEAL_KEY_LEN]).unwrap()
    }

    #[test]
    fn round_trip_and_every_tamper_fails() {
        let k = key(7);
        let sealed = k.seal("openai_prod", "sk-real-secret").unwrap();
        assert!(!sealed.contains("sk-real"));
        assert_eq!(k.open("openai_prod", &sealed).unwrap(), "sk-real-secret");
        // Fresh nonce each time.
        assert_ne!(sealed, k.seal("openai_prod", "sk-real-secret").unwrap());
        // Another key, another credential's name, a flipped byte, truncation, garbage.
        assert!(key(8).open("openai_prod", &sealed).is_err());
        assert!(k.open("anthropic_prod", &sealed).is_err());
        let mut raw = STANDARD.decode(&sealed).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            assert!(
                k.open("openai_prod", &STANDARD.encode(&raw)).is_err(),
                "{i}"
            );
            raw[i] ^= 1;
        }
        assert!(k.open("openai_prod", &STANDARD.encode(&raw[..10])).is_err());
        assert!(k.open("openai_prod", "not base64!").is_err());
        assert!(k.open("openai_prod", "").is_err());
    }

    #[test]
    fn keys_load_generate_and_reject_bad_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/credentials.key");
        let (a, generated) = SealKey::load_or_generate(&path).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (b, generated) = SealKey::load_or_generate(&path).unwrap();
        assert!(!generated);
        let sealed = a.seal("x1", "s").unwrap();
        assert_eq!(b.open("x1", &sealed).unwrap(), "s");
        assert!(SealKey::from_base64("c2hvcnQ=").is_err());
        assert!(SealKey::from_base64("%%%").is_err());
        std::fs::write(&path, "garbage").unwrap();
        assert!(SealKey::load_or_generate(&path).is_err());
    }
}
