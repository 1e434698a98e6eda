//! MCP tool calls per minute per agent (`mcp.calls_per_minute`), kept apart from the request
//! limiter: a sliding one-minute window of calls per agent, in memory. A body with several
//! tool calls (a batch) is admitted whole or refused whole, and a refusal counts nothing.

use crate::memory::window::Window;
use crate::outcome::{LimitKind, Refusal};
use crate::scope::ScopeKind;
use dashmap::DashMap;
use portcullis_core::Clock;
use std::sync::Arc;

/// Per-agent tool-call counters.
pub struct McpCallCounter {
    clock: Arc<dyn Clock>,
    windows: DashMap<String, Window>,
}

impl std::fmt::Debug for McpCallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpCallCounter")
            .field("agents", &self.windows.len())
            .finish()
    }
}

impl McpCallCounter {
    /// Counters on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            windows: DashMap::new(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.unix_secs()
    }

    /// Tool calls `agent` made in the last minute (`input.usage.mcp_calls_last_minute`).
    pub fn last_minute(&self, agent: &str) -> u64 {
        let now = self.now();
        self.windows.get_mut(agent).map_or(0, |mut w| {
            w.advance(now);
            w.tokens()
        })
    }

    /// Counts `calls` tool calls for `agent`, or refuses them all when `limit` (per minute)
    /// would be exceeded.
    pub fn admit(&self, agent: &str, calls: u64, limit: Option<u64>) -> Result<(), Refusal> {
        if calls == 0 {
            return Ok(());
        }
        let now = self.now();
        let mut w = self
            .windows
            .entry(agent.to_owned())
            .or_insert_with(|| Window::new(now));
        w.advance(now);
        if let Some(max) = limit {
            let used = w.tokens();
            if used.saturating_add(calls) > max {
                let never_fits = calls > max;
                let reset = w
                    .freed_at(used.saturating_add(calls) - max)
                    .unwrap_or(now + 61);
                return Err(Refusal {
                    limit: LimitKind::McpCallsPerMinute,
                    scope: ScopeKind::Agent,
                    limit_value: max,
                    remaining: max.saturating_sub(used),
                    requested: calls,
                    retry_after_secs: reset.saturating_sub(now).max(1),
                    reset_unix: reset,
                    never_fits,
                    unpriced: false,
                });
            }
        }
        w.charge(calls, 0);
        Ok(())
    }

    /// Drops agents with nothing counted in the last minute.
    pub fn sweep(&self) {
        let now = self.now();
        self.windows.retain(|_, w| {
            w.advance(now);
            !w.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::ManualClock;

    #[test]
    fn counts_per_agent_and_refuses_whole_batches() {
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let c = McpCallCounter::new(clock.clone());
        assert_eq!(c.last_minute("a"), 0);
        c.admit("a", 2, Some(3)).unwrap();
        assert_eq!(c.last_minute("a"), 2);
        let r = c.admit("a", 2, Some(3)).unwrap_err();
        assert_eq!(
            (r.limit, r.remaining, r.requested),
            (LimitKind::McpCallsPerMinute, 1, 2)
        );
        assert!(r.retry_after_secs >= 1);
        assert_eq!(c.last_minute("a"), 2, "a refusal counts nothing");
        c.admit("a", 1, Some(3)).unwrap();
        assert_eq!(c.last_minute("b"), 0, "per agent");
        assert!(c.admit("b", 4, Some(3)).unwrap_err().never_fits);
        clock.advance(std::time::Duration::from_secs(61));
        assert_eq!(c.last_minute("a"), 0);
        c.admit("a", 3, Some(3)).unwrap();
        c.admit("a", 100, None).unwrap();
        assert_eq!(c.last_minute("a"), 103);
        clock.advance(std::time::Duration::from_secs(120));
        c.sweep();
        assert_eq!(c.windows.len(), 0);
    }
}
