//! Decision cache: bounded, TTL-based, keyed by policy-set version and a 128-bit hash of
//! the decision-relevant input.

use crate::binding::OnBlock;
use dashmap::DashMap;
use portcullis_core::Decision;

#[derive(Debug, Clone)]
struct Entry {
    version: u64,
    expires_at_ns: u64,
    decision: Decision,
    on_block: OnBlock,
}

/// The cache. A TTL of zero disables it.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    map: DashMap<u128, Entry>,
    ttl_ns: u64,
    capacity: usize,
}

impl DecisionCache {
    pub(crate) fn new(ttl_ns: u64, capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            ttl_ns,
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.ttl_ns > 0
    }

    pub(crate) fn get(&self, key: u128, version: u64, now_ns: u64) -> Option<(Decision, OnBlock)> {
        let e = self.map.get(&key)?;
        if e.version == version && now_ns < e.expires_at_ns {
            return Some((e.decision.clone(), e.on_block));
        }
        drop(e);
        self.map.remove(&key);
        None
    }

    pub(crate) fn insert(
        &self,
        key: u128,
        version: u64,
        now_ns: u64,
        decision: Decision,
        on_block: OnBlock,
    ) {
        if !self.enabled() {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map
                .retain(|_, e| e.version == version && now_ns < e.expires_at_ns);
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
        }
        self.map.insert(
            key,
            Entry {
                version,
                expires_at_ns: now_ns.saturating_add(self.ttl_ns),
                decision,
                on_block,
            },
        );
    }

    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_version_and_capacity() {
        let c = DecisionCache::new(10, 2);
        let d = Decision::allow_unconditionally(String::new());
        c.insert(1, 7, 100, d.clone(), OnBlock::Json);
        assert!(c.get(1, 7, 105).is_some());
        assert!(c.get(1, 8, 105).is_none(), "other version");
        c.insert(1, 7, 100, d.clone(), OnBlock::Json);
        assert!(c.get(1, 7, 110).is_none(), "expired");
        c.insert(1, 7, 0, d.clone(), OnBlock::Json);
        c.insert(2, 7, 0, d.clone(), OnBlock::Json);
        c.insert(3, 7, 0, d.clone(), OnBlock::Json);
        assert!(c.len() <= 2);
        assert!(c.get(3, 7, 1).is_some());
        let off = DecisionCache::new(0, 10);
        off.insert(1, 1, 0, d, OnBlock::Json);
        assert_eq!(off.len(), 0);
    }
}
