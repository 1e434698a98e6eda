//! Decision ids: unique and time-ordered (48-bit milliseconds, then a per-process
//! sequence started at a random point), 28 lower-case hex characters.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Generates decision ids.
#[derive(Debug)]
pub struct DecisionIds {
    seq: AtomicU64,
}

impl Default for DecisionIds {
    fn default() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x706f_7274_6375_6c6c);
        // Leave headroom so the sequence does not wrap in practice.
        Self {
            seq: AtomicU64::new(h.finish() >> 8),
        }
    }
}

impl DecisionIds {
    /// The next id for a decision made at `now`.
    pub fn next(&self, now: SystemTime) -> String {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            & 0xffff_ffff_ffff;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{ms:012x}{seq:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unique_and_time_ordered() {
        let ids = DecisionIds::default();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = ids.next(t);
        let b = ids.next(t);
        let c = ids.next(t + Duration::from_millis(1));
        assert_ne!(a, b);
        assert_eq!(a.len(), 28);
        assert!(c > b && c > a);
        assert!(a.bytes().all(|x| x.is_ascii_hexdigit()));
    }
}
