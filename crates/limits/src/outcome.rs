//! What a limit check answers: a refusal, the rate headers of an admitted request, usage figures.

use portcullis_core::Usd;
use serde::Serialize;
use std::fmt;

use crate::estimate::TokenReservation;
use crate::scope::{LimitScopes, ScopeKind};

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Requests per minute.
    Rpm,
    /// Concurrent in-flight requests.
    Concurrent,
    /// LLM tokens per minute.
    Tpm,
    /// LLM tokens per day.
    TokensPerDay,
    /// MCP tool calls per minute.
    McpCallsPerMinute,
    /// LLM spend per day (values in micro-dollars).
    UsdPerDay,
    /// LLM spend per calendar month (values in micro-dollars).
    UsdPerMonth,
}

impl LimitKind {
    /// The metric label and JSON `limit` value: `rpm`, `concurrent`, `tpm`, `tokens_per_day`,
    /// `mcp_calls_per_minute`, `usd_per_day`, `usd_per_month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Concurrent => "concurrent",
            Self::Tpm => "tpm",
            Self::TokensPerDay => "tokens_per_day",
            Self::McpCallsPerMinute => "mcp_calls_per_minute",
            Self::UsdPerDay => "usd_per_day",
            Self::UsdPerMonth => "usd_per_month",
        }
    }

    /// Whether the limit counts micro-dollars (its values print as dollars).
    pub fn is_usd(self) -> bool {
        matches!(self, Self::UsdPerDay | Self::UsdPerMonth)
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Rpm => "request rate limit (requests per minute)",
            Self::Concurrent => "concurrent request limit",
            Self::Tpm => "token budget per minute",
            Self::TokensPerDay => "daily token budget",
            Self::McpCallsPerMinute => "MCP tool calls per minute",
            Self::UsdPerDay => "daily dollar budget",
            Self::UsdPerMonth => "monthly dollar budget",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request. Nothing was charged to any limit.
///
/// Maps to 429 with `Retry-After: retry_after_secs`, `X-RateLimit-Limit: limit_value`,
/// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset: reset_unix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The limit that refused (when several do, the one that clears last).
    pub limit: LimitKind,
    /// The scope whose limit refused.
    pub scope: ScopeKind,
    /// The configured value of that limit (micro-dollars for the dollar budgets).
    pub limit_value: u64,
    /// Always 0.
    pub remaining: u64,
    /// What the request needed: its token reservation for token limits, 1 otherwise.
    pub requested: u64,
    /// Seconds until this request would be admitted by this limit (at least 1).
    pub retry_after_secs: u64,
    /// Unix second at which this limit is fully replenished.
    pub reset_unix: u64,
    /// The request can never be admitted: it needs more than the whole limit (e.g. a
    /// reservation larger than the per-minute budget). Retrying cannot help.
    pub never_fits: bool,
    /// A dollar budget applies but the model has no known price, so the request cannot be
    /// sized against it (refused: add the model to `[[llm.prices]]`). Implies `never_fits`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unpriced: bool,
}

impl Refusal {
    /// A human-readable reason, e.g. for the 429 body's `detail`.
    pub fn detail(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = self.scope.as_str();
        let what = self.limit.describe();
        let amount = |v: u64| {
            if self.limit.is_usd() {
                Usd::from_micros(v).to_string()
            } else {
                v.to_string()
            }
        };
        if self.unpriced {
            return write!(
                f,
                "{scope} {what} of {} applies but the model has no known price, so the request \
                 cannot be checked against it: add the model to [[llm.prices]]",
                amount(self.limit_value)
            );
        }
        if self.never_fits {
            write!(
                f,
                "{scope} {what} is {} but this request needs {}: it can never be admitted",
                amount(self.limit_value),
                amount(self.requested)
            )?;
            if matches!(
                self.limit,
                LimitKind::Tpm
                    | LimitKind::TokensPerDay
                    | LimitKind::UsdPerDay
                    | LimitKind::UsdPerMonth
            ) {
                f.write_str(" (lower max_tokens or the prompt size)")?;
            }
            Ok(())
        } else {
            write!(
                f,
                "{scope} {what} of {} exceeded; retry in {} s",
                amount(self.limit_value),
                self.retry_after_secs
            )
        }
    }
}

impl std::error::Error for Refusal {}

/// Why a limiter did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// A limit refused it; nothing was charged.
    Limited(Refusal),
    /// The limits backend cannot be asked and is configured to refuse then
    /// (`limits.on_redis_error = "deny"`); the string says why, without secrets.
    Unavailable(String),
}

impl From<Refusal> for LimitError {
    fn from(r: Refusal) -> Self {
        Self::Limited(r)
    }
}

impl LimitError {
    /// The refusal, when a limit refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Limited(r) => Some(r),
            Self::Unavailable(_) => None,
        }
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limited(r) => r.fmt(f),
            Self::Unavailable(why) => write!(f, "the limits backend is unavailable: {why}"),
        }
    }
}

impl std::error::Error for LimitError {}

/// Keeps the refusal that matters most: one that can never fit, else the one that clears
/// last; among equals the first seen. Every backend reports the same refusal this way.
pub fn keep_worst(worst: &mut Option<Refusal>, candidate: Refusal) {
    let replace = match worst {
        None => true,
        Some(w) => {
            (candidate.never_fits, candidate.retry_after_secs) > (w.never_fits, w.retry_after_secs)
        }
    };
    if replace {
        *worst = Some(candidate);
    }
}

/// Keeps the rate info with the smallest fraction remaining; among equals the first seen.
pub fn keep_tightest(tightest: &mut Option<RateInfo>, candidate: RateInfo) {
    if tightest.as_ref().is_none_or(|t| candidate.tighter_than(t)) {
        *tightest = Some(candidate);
    }
}

/// The state of the tightest limit after admitting a request, for the `X-RateLimit-*` headers
/// of a successful response.
///
/// "Tightest" is the rate limit (rpm, tpm, tokens per day, across all scopes) with the smallest
/// fraction remaining; the concurrency limit is not a rate and is not reported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateInfo {
    /// Which limit.
    pub limit: LimitKind,
    /// Its scope.
    pub scope: ScopeKind,
    /// `X-RateLimit-Limit`.
    pub limit_value: u64,
    /// `X-RateLimit-Remaining` (requests for rpm, tokens for token limits).
    pub remaining: u64,
    /// `X-RateLimit-Reset`: Unix second at which the limit is fully replenished.
    pub reset_unix: u64,
}

impl RateInfo {
    /// `true` when `self` has a smaller fraction left than `other`.
    pub fn tighter_than(&self, other: &Self) -> bool {
        // remaining/limit < other.remaining/other.limit, without division.
        u128::from(self.remaining) * u128::from(other.limit_value)
            < u128::from(other.remaining) * u128::from(self.limit_value)
    }
}

/// Usage figures of one scope: the policy input's `usage`, and what budget alerts compare
/// with the budgets. Fields are only ever added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageSnapshot {
    /// Requests admitted in the last 60–61 seconds (one-second buckets).
    pub requests_last_minute: u64,
    /// Tokens charged since the last daily reset: settled usage plus reservations still open.
    pub tokens_today: u64,
    /// Dollars charged since the last daily reset (same day as `tokens_today`): the settled
    /// cost of priced LLM calls plus the worst-case cost of those still open. Serialised in
    /// dollars.
    pub usd_today: Usd,
    /// Dollars charged since the first of the month (at `day_reset_offset`), counted like
    /// `usd_today`.
    pub usd_month: Usd,
}

impl LimitScopes<'_> {
    /// The refusal of an LLM request whose model has no known price when a dollar budget
    /// applies to one of its scopes: it cannot be sized against the budget, so it is refused
    /// (`unpriced`, never fits) rather than let through uncounted. Every backend asks this
    /// first; `None` when the request is priced, not an LLM request, or no dollar budget
    /// applies.
    pub fn unpriced_refusal(
        &self,
        reservation: Option<TokenReservation>,
        now_secs: u64,
    ) -> Option<Refusal> {
        let r = reservation?;
        if r.price().is_some() {
            return None;
        }
        const KINDS: [ScopeKind; 3] = [ScopeKind::Tenant, ScopeKind::Agent, ScopeKind::Subagent];
        self.as_array()
            .into_iter()
            .zip(KINDS)
            .find_map(|(scope, kind)| {
                let s = scope?.settings;
                let (limit, value) = match (s.usd_per_day, s.usd_per_month) {
                    (Some(d), _) => (LimitKind::UsdPerDay, d),
                    (None, Some(m)) => (LimitKind::UsdPerMonth, m),
                    (None, None) => return None,
                };
                Some(Refusal {
                    limit,
                    scope: kind,
                    limit_value: value.micros(),
                    remaining: 0,
                    requested: 0,
                    retry_after_secs: 60,
                    reset_unix: now_secs.saturating_add(60),
                    never_fits: true,
                    unpriced: true,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(limit: LimitKind, never_fits: bool) -> Refusal {
        Refusal {
            limit,
            scope: ScopeKind::Agent,
            limit_value: 1000,
            remaining: 0,
            requested: 5000,
            retry_after_secs: 12,
            reset_unix: 1_000,
            never_fits,
            unpriced: false,
        }
    }

    #[test]
    fn details_are_readable() {
        assert_eq!(
            refusal(LimitKind::Tpm, false).detail(),
            "agent token budget per minute of 1000 exceeded; retry in 12 s"
        );
        let never = refusal(LimitKind::Tpm, true).detail();
        assert!(never.contains("can never be admitted"), "{never}");
        assert!(never.contains("5000"), "{never}");
        assert!(never.contains("max_tokens"), "{never}");
        let usd = Refusal {
            limit_value: 2_500_000,
            requested: 3_000_001,
            ..refusal(LimitKind::UsdPerDay, true)
        };
        assert_eq!(
            usd.detail(),
            "agent daily dollar budget is $2.5 but this request needs $3.000001: it can never \
             be admitted (lower max_tokens or the prompt size)"
        );
        let month = Refusal {
            limit_value: 100_000_000,
            ..refusal(LimitKind::UsdPerMonth, false)
        };
        assert_eq!(
            month.detail(),
            "agent monthly dollar budget of $100 exceeded; retry in 12 s"
        );
        let unpriced = Refusal {
            unpriced: true,
            limit_value: 1_000_000,
            ..refusal(LimitKind::UsdPerDay, true)
        };
        assert!(
            unpriced.detail().contains("no known price"),
            "{}",
            unpriced.detail()
        );
        assert!(unpriced.detail().contains("$1 "), "{}", unpriced.detail());
        assert_eq!(serde_json::to_value(&unpriced).unwrap()["unpriced"], true);
        assert!(serde_json::to_value(&month)
            .unwrap()
            .get("unpriced")
            .is_none());
    }

    #[test]
    fn serialises_with_contract_names() {
        let json = serde_json::to_value(refusal(LimitKind::TokensPerDay, false)).unwrap();
        assert_eq!(json["limit"], "tokens_per_day");
        assert_eq!(json["scope"], "agent");
        assert_eq!(json["remaining"], 0);
        for (kind, name) in [
            (LimitKind::Rpm, "rpm"),
            (LimitKind::Concurrent, "concurrent"),
            (LimitKind::Tpm, "tpm"),
            (LimitKind::TokensPerDay, "tokens_per_day"),
            (LimitKind::UsdPerDay, "usd_per_day"),
            (LimitKind::UsdPerMonth, "usd_per_month"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn tightest_compares_fractions() {
        let a = RateInfo {
            limit: LimitKind::Rpm,
            scope: ScopeKind::Agent,
            limit_value: 10,
            remaining: 5,
            reset_unix: 0,
        };
        let b = RateInfo {
            limit: LimitKind::Tpm,
            limit_value: 1000,
            remaining: 400,
            ..a
        };
        assert!(b.tighter_than(&a));
        assert!(!a.tighter_than(&b));
        assert!(!a.tighter_than(&a));
    }

    #[test]
    fn unpriced_llm_requests_are_refused_only_under_a_dollar_budget() {
        use crate::scope::ScopeKey;
        use crate::settings::LimitSettings;
        use portcullis_core::{TokenPrice, Usd};
        let (a, t) = (ScopeKey::agent("bot"), ScopeKey::tenant("acme"));
        let free = LimitSettings::default();
        let budget = LimitSettings {
            usd_per_month: Some(Usd::from_micros(9_000_000)),
            ..LimitSettings::default()
        };
        let unpriced = Some(TokenReservation::tokens(10));
        let priced = unpriced.map(|r| r.with_price(Some(TokenPrice::default())));
        let plain = LimitScopes::agent(&a, &free);
        assert!(plain.unpriced_refusal(unpriced, 0).is_none(), "no budget");
        let tenant = plain.with_tenant(&t, &budget);
        let r = tenant.unpriced_refusal(unpriced, 100).unwrap();
        assert_eq!(
            (r.limit, r.scope, r.limit_value, r.never_fits, r.unpriced),
            (
                LimitKind::UsdPerMonth,
                ScopeKind::Tenant,
                9_000_000,
                true,
                true
            )
        );
        assert!(tenant.unpriced_refusal(priced, 0).is_none(), "priced");
        assert!(
            tenant.unpriced_refusal(None, 0).is_none(),
            "not an LLM call"
        );
    }
}
