//! Operator API key generation and hashing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every operator API key, so a leaked key is recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "pck_";

/// Random bytes in an API key.
const API_KEY_BYTES: usize = 32;

/// A fresh operator API key: `pck_` followed by 32 random bytes in unpadded base64url
/// (47 characters in all). Shown once; only its [`sha256_hex`] is stored.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; API_KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let mut key = String::with_capacity(API_KEY_PREFIX.len() + 43);
    key.push_str(API_KEY_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
    key
}

/// Lower-case hex SHA-256 of `data` (how keys and client secrets are stored).
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data.as_ref());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `s` looks like a stored hash: exactly 64 lower-case hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_prefix_length_and_charset_and_differ() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 47);
        assert!(a.starts_with("pck_"));
        assert!(a[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&a[4..]).map(|v| v.len()).ok(),
            Some(32)
        );
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha256_hex("x")));
    }

    #[test]
    fn hash_shape_check() {
        assert!(!is_sha256_hex(""));
        assert!(!is_sha256_hex(&"A".repeat(64)));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
        assert!(is_sha256_hex(&"0".repeat(64)));
    }
}
