//! Bounds, test data and small helpers every part of the harness uses.

use bytes::Bytes;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Upper bound for any single wait (process start, a response, an exit).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Size of the large download/upload bodies.
pub const BIG_LEN: usize = 10 * 1024 * 1024;

/// Proxy-related environment variables cleared for every child process so the
/// host environment cannot redirect or bypass the proxy under test (nor point it at
/// another store).
pub(super) const PROXY_ENV: [&str; 11] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "PORTCULLIS_CONFIG",
    "PORTCULLIS_LOG",
    "PORTCULLIS_STORE_URL",
];

/// A deterministic pseudo-random body of `BIG_LEN` bytes (xorshift64).
pub fn big_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(BIG_LEN);
        while v.len() < BIG_LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(BIG_LEN);
        Bytes::from(v)
    })
    .clone()
}

/// Polls `pred` (bounded by [`TIMEOUT`]) until it holds.
pub fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    let d = sha2::Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `data` into a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write file");
    p
}

/// The log without ANSI colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
