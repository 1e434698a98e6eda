//! What the scripts are sent and what they answer: scopes as keys and arguments, replies as
//! refusals, rate headers and charges. Numbers are capped at 2^53 − 1, the largest integer
//! a script's numbers hold exactly.

use portcullis_limits::{
    keep_tightest, keep_worst, LimitKind, LimitScopes, LimitSettings, RateInfo, Refusal, ScopeKey,
    ScopeKind, UsageSnapshot, Usd,
};
use std::sync::Arc;

/// Values before the outcomes in the acquire script's reply.
const HEAD: usize = 7;

/// Largest value a script computes with exactly (Lua numbers are doubles).
pub(crate) const MAX_EXACT: u64 = (1 << 53) - 1;

/// Which part of a request a call checks and charges (see the memory limiter's stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Slot = 0,
    Charge = 1,
    Both = 2,
}

impl Stage {
    pub(crate) fn takes_slot(self) -> bool {
        self != Stage::Charge
    }

    pub(crate) fn charges(self) -> bool {
        self != Stage::Slot
    }
}

/// One scope of a call, owned (the call outlives its borrowed arguments).
#[derive(Debug, Clone)]
pub(crate) struct OwnedScope {
    pub(crate) key: ScopeKey,
    pub(crate) settings: LimitSettings,
    pub(crate) kind: ScopeKind,
}

/// The scopes of one request: distinct keys in the order tenant, agent, sub-agent (a key given
/// twice is checked once, with its first settings, as in memory).
#[derive(Debug, Clone)]
pub(crate) struct OwnedScopes {
    pub(crate) scopes: Vec<OwnedScope>,
    /// Index of the agent scope in `scopes`.
    pub(crate) agent: usize,
}

impl OwnedScopes {
    pub(crate) fn from(scopes: &LimitScopes<'_>) -> Self {
        const KINDS: [ScopeKind; 3] = [ScopeKind::Tenant, ScopeKind::Agent, ScopeKind::Subagent];
        let mut out: Vec<OwnedScope> = Vec::with_capacity(3);
        let mut agent = 0;
        for (scope, kind) in scopes.as_array().into_iter().zip(KINDS) {
            let Some(scope) = scope else { continue };
            match out.iter().position(|s| &s.key == scope.key) {
                Some(i) => {
                    if kind == ScopeKind::Agent {
                        agent = i;
                    }
                }
                None => {
                    if kind == ScopeKind::Agent {
                        agent = out.len();
                    }
                    out.push(OwnedScope {
                        key: scope.key.clone(),
                        settings: scope.settings.clone(),
                        kind,
                    });
                }
            }
        }
        Self { scopes: out, agent }
    }

    /// The borrowed form, for the in-memory fallback.
    pub(crate) fn borrowed(&self) -> Option<LimitScopes<'_>> {
        let by_kind = |k: ScopeKind| self.scopes.iter().find(|s| s.kind == k);
        let agent = self.scopes.get(self.agent)?;
        let mut scopes = LimitScopes::agent(&agent.key, &agent.settings);
        if let Some(t) = by_kind(ScopeKind::Tenant) {
            scopes = scopes.with_tenant(&t.key, &t.settings);
        }
        if let Some(s) = by_kind(ScopeKind::Subagent) {
            scopes = scopes.with_subagent(&s.key, &s.settings);
        }
        Some(scopes)
    }

    /// The three keys of every scope: state, window, leases.
    pub(crate) fn keys(&self, prefix: &str) -> Arc<[String]> {
        let mut keys = Vec::with_capacity(self.scopes.len() * 3);
        for s in &self.scopes {
            let base = format!("{prefix}{}", s.key.as_str());
            keys.push(format!("{base}:w"));
            keys.push(format!("{base}:c"));
            keys.insert(keys.len() - 2, base);
        }
        keys.into()
    }
}

/// A limit for a script: the value capped, or −1 when unset.
pub(crate) fn limit_arg(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| cap(v) as i64)
}

/// A number for a script, capped at [`MAX_EXACT`].
pub(crate) fn cap(v: u64) -> u64 {
    v.min(MAX_EXACT)
}

pub(crate) fn kind_code(k: ScopeKind) -> i64 {
    match k {
        ScopeKind::Tenant => 0,
        ScopeKind::Agent => 1,
        ScopeKind::Subagent => 2,
    }
}

fn kind_of(code: i64) -> Option<ScopeKind> {
    match code {
        0 => Some(ScopeKind::Tenant),
        1 => Some(ScopeKind::Agent),
        2 => Some(ScopeKind::Subagent),
        _ => None,
    }
}

fn limit_of(code: i64) -> Option<LimitKind> {
    match code {
        0 => Some(LimitKind::Rpm),
        1 => Some(LimitKind::Concurrent),
        2 => Some(LimitKind::Tpm),
        3 => Some(LimitKind::TokensPerDay),
        4 => Some(LimitKind::UsdPerDay),
        5 => Some(LimitKind::UsdPerMonth),
        _ => None,
    }
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Where an admitted request was charged, per scope: (window second, day start, month start).
pub(crate) type Charged = Vec<(i64, i64, i64)>;

/// What the acquire script answered.
#[derive(Debug)]
pub(crate) enum Answer {
    Admitted {
        rate: Option<RateInfo>,
        usage: UsageSnapshot,
        charged: Charged,
    },
    Refused(Refusal),
}

/// Reads the acquire script's reply (see `lua/acquire.lua`). `Err` names what was wrong with
/// it: a reply that does not parse is a backend error, never a decision.
pub(crate) fn parse_acquire(reply: &[i64], scopes: usize) -> Result<Answer, String> {
    let bad = || {
        format!(
            "unexpected reply from the acquire script ({} values)",
            reply.len()
        )
    };
    let head = reply.get(..HEAD).ok_or_else(bad)?;
    let (admitted, outcomes) = (head[0] == 1, unsigned(head[6]) as usize);
    let usage = UsageSnapshot {
        requests_last_minute: unsigned(head[2]),
        tokens_today: unsigned(head[3]),
        usd_today: Usd::from_micros(unsigned(head[4])),
        usd_month: Usd::from_micros(unsigned(head[5])),
    };
    let lines = reply
        .get(HEAD..HEAD + outcomes.saturating_mul(9))
        .ok_or_else(bad)?;
    let mut worst = None;
    let mut tightest = None;
    for line in lines.chunks_exact(9) {
        let scope = kind_of(line[1]).ok_or_else(bad)?;
        let limit = limit_of(line[2]).ok_or_else(bad)?;
        if line[0] == 1 {
            let info = RateInfo {
                limit,
                scope,
                limit_value: unsigned(line[3]),
                remaining: unsigned(line[4]),
                reset_unix: unsigned(line[7]),
            };
            keep_tightest(&mut tightest, info);
        } else {
            let refusal = Refusal {
                limit,
                scope,
                limit_value: unsigned(line[3]),
                remaining: 0,
                requested: unsigned(line[5]),
                retry_after_secs: unsigned(line[6]).max(1),
                reset_unix: unsigned(line[7]),
                never_fits: line[8] == 1,
                unpriced: false,
            };
            keep_worst(&mut worst, refusal);
        }
    }
    if !admitted {
        return worst.map(Answer::Refused).ok_or_else(bad);
    }
    let rest = &reply[HEAD + outcomes * 9..];
    if rest.len() != scopes * 3 {
        return Err(bad());
    }
    let charged = rest.chunks_exact(3).map(|c| (c[0], c[1], c[2])).collect();
    Ok(Answer::Admitted {
        rate: tightest,
        usage,
        charged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_deduplicated_and_keys_ordered() {
        let (a, t) = (ScopeKey::agent("bot"), ScopeKey::tenant("acme"));
        let s = LimitSettings::default();
        let owned = OwnedScopes::from(&LimitScopes::agent(&a, &s).with_tenant(&t, &s));
        assert_eq!(owned.scopes.len(), 2);
        assert_eq!(owned.agent, 1);
        let keys = owned.keys("p:");
        assert_eq!(
            &keys[..],
            [
                "p:t:acme",
                "p:t:acme:w",
                "p:t:acme:c",
                "p:a:bot",
                "p:a:bot:w",
                "p:a:bot:c"
            ]
        );
        let twice = OwnedScopes::from(&LimitScopes::agent(&a, &s).with_subagent(&a, &s));
        assert_eq!((twice.scopes.len(), twice.agent), (1, 0));
        let back = owned.borrowed().unwrap();
        assert_eq!(back.agent.key, &a);
        assert_eq!(back.tenant.map(|t| t.key), Some(&t));
    }

    #[test]
    fn replies_become_refusals_and_rate_info() {
        // Refused by rpm (retry 20) and tpm (retry 30): the later one is reported.
        let reply = [
            0, 5, 0, 0, 0, 0, 2, 0, 1, 0, 3, 0, 1, 20, 100, 0, 0, 1, 2, 50, 0, 60, 30, 90, 0,
        ];
        let Ok(Answer::Refused(r)) = parse_acquire(&reply, 1) else {
            panic!("refusal expected")
        };
        assert_eq!(
            (r.limit, r.retry_after_secs, r.requested),
            (LimitKind::Tpm, 30, 60)
        );
        // Admitted: the smallest fraction left wins.
        let reply = [
            1, 5, 7, 8, 9, 10, 2, 1, 1, 0, 10, 5, 0, 0, 100, 0, 1, 1, 2, 1000, 100, 0, 0, 161, 0,
            100, 0, 50,
        ];
        let Ok(Answer::Admitted {
            rate,
            usage,
            charged,
        }) = parse_acquire(&reply, 1)
        else {
            panic!("admission expected")
        };
        assert_eq!(
            rate.map(|r| (r.limit, r.remaining)),
            Some((LimitKind::Tpm, 100))
        );
        assert_eq!((usage.requests_last_minute, usage.tokens_today), (7, 8));
        assert_eq!(
            (usage.usd_today.micros(), usage.usd_month.micros()),
            (9, 10)
        );
        assert_eq!(charged, vec![(100, 0, 50)]);
        // A dollar budget's refusal.
        let reply = [0, 5, 0, 0, 0, 0, 1, 0, 0, 4, 500, 0, 600, 40, 86_400, 0];
        let Ok(Answer::Refused(r)) = parse_acquire(&reply, 1) else {
            panic!("refusal expected")
        };
        assert_eq!(
            (r.limit, r.scope, r.limit_value, r.requested),
            (LimitKind::UsdPerDay, ScopeKind::Tenant, 500, 600)
        );
        // Truncated or garbled replies are errors, not decisions.
        assert!(parse_acquire(&[1, 5], 1).is_err());
        assert!(
            parse_acquire(&[0, 5, 0, 0, 0, 0, 0], 1).is_err(),
            "refused without a reason"
        );
        assert!(parse_acquire(
            &[1, 5, 0, 0, 0, 0, 1, 1, 9, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0],
            1
        )
        .is_err());
        assert!(
            parse_acquire(&[1, 5, 0, 0, 0, 0, 0], 1).is_err(),
            "charge info missing"
        );
    }
}
