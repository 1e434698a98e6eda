//! Client secrets: generation, hashing (what the store and config keep) and
//! constant-time verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random bytes in a client secret.
pub const SECRET_BYTES: usize = 32;

/// A new client secret: 32 random bytes, URL-safe base64 without padding (43 characters).
///
/// The secret is shown to the operator once; only [`hash_secret`] of it is stored.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of the secret's UTF-8 bytes, exactly as config `secret_sha256` holds it.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

/// Whether `secret` hashes to `sha256_hex`, compared in constant time.
///
/// A malformed digest (not 64 hex digits) never matches.
pub fn verify_secret(secret: &str, sha256_hex: &str) -> bool {
    match parse_sha256_hex(sha256_hex) {
        Some(expected) => verify_secret_digest(secret, &expected),
        None => false,
    }
}

/// Whether `secret` hashes to the raw digest `expected`, compared in constant time.
pub(crate) fn verify_secret_digest(secret: &str, expected: &[u8; 32]) -> bool {
    let actual = Sha256::digest(secret.as_bytes());
    bool::from(actual[..].ct_eq(&expected[..]))
}

/// Decodes a 64-digit hex SHA-256 (either case); `None` when malformed.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0x0f)])
}

pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // sha256("abc")
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_secret(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn generated_secrets_are_43_url_safe_chars_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).map(|v| v.len()).ok(), Some(32));
    }

    #[test]
    fn verify_round_trip_and_mismatch() {
        let s = generate_secret();
        let h = hash_secret(&s);
        assert!(verify_secret(&s, &h));
        assert!(verify_secret(&s, &h.to_uppercase()));
        assert!(!verify_secret(&format!("{s}x"), &h));
        assert!(!verify_secret("", &h));
        // Utf-8 is hashed as is, no normalisation.
        assert!(verify_secret("é", &hash_secret("é")));
        assert!(!verify_secret("e\u{301}", &hash_secret("é")));
    }

    #[test]
    fn malformed_digest_never_matches() {
        let s = "secret";
        let h = hash_secret(s);
        for bad in [
            String::new(),
            h[..63].to_owned(),
            format!("{h}0"),
            format!("{}g", &h[..63]),
            format!(" {}", &h[..63]),
            "é".repeat(32),
        ] {
            assert!(!verify_secret(s, &bad), "{bad:?}");
        }
    }
}
