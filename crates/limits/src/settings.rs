//! Limit settings: the `[limits]` defaults, per-agent overrides and the day-reset offset.

use portcullis_core::{AgentLimits, Usd, UtcOffset};
use serde::{Deserialize, Serialize};

/// Output tokens reserved for an LLM request that does not state `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Request-body bytes per prompt token assumed by
/// [`estimate_prompt_tokens`](crate::estimate_prompt_tokens).
pub const DEFAULT_CHARS_PER_TOKEN: u64 = 4;

/// Seconds in a day.
pub(crate) const DAY_SECS: i64 = 86_400;

/// Limits for one scope (tenant, agent or sub-agent).
///
/// `None` means unlimited. Built from the config's `[limits]` (defaults) by the binary and
/// resolved per agent with [`LimitSettings::with_overrides`]. Settings are passed to every
/// [`Limiter::acquire`](crate::Limiter::acquire) call, so a change applies to the next request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per minute (GCRA): a burst of `rpm` back to back, refilled at `rpm` per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// LLM tokens per minute: tokens charged in any 60-second interval never exceed this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// LLM tokens per day, reset at midnight of `day_reset_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Concurrent in-flight requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// LLM spend per day in US dollars, reset at midnight of `day_reset_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<Usd>,
    /// LLM spend per calendar month in US dollars, reset at midnight of the first day of the
    /// month in `day_reset_offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<Usd>,
    /// Output tokens reserved when an LLM request has no `max_tokens` / `max_output_tokens`.
    pub default_max_tokens: u64,
    /// Request-body bytes per prompt token used for the prompt estimate (see
    /// [`estimate_prompt_tokens_with`](crate::estimate_prompt_tokens_with)).
    pub chars_per_token: u64,
    /// Fixed UTC offset whose midnight resets `tokens_per_day` (`"+02:00"`, `"-05:30"`, `"Z"`).
    pub day_reset_offset: UtcOffset,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rpm: None,
            tpm: None,
            tokens_per_day: None,
            max_concurrent: None,
            usd_per_day: None,
            usd_per_month: None,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            chars_per_token: DEFAULT_CHARS_PER_TOKEN,
            day_reset_offset: UtcOffset::UTC,
        }
    }
}

impl LimitSettings {
    /// These settings with an agent's overrides applied on top (`None` keeps the default).
    #[must_use]
    pub fn with_overrides(&self, overrides: &AgentLimits) -> Self {
        Self {
            rpm: overrides.rpm.or(self.rpm),
            tpm: overrides.tpm.or(self.tpm),
            tokens_per_day: overrides.tokens_per_day.or(self.tokens_per_day),
            max_concurrent: overrides.max_concurrent.or(self.max_concurrent),
            usd_per_day: overrides.usd_per_day.or(self.usd_per_day),
            usd_per_month: overrides.usd_per_month.or(self.usd_per_month),
            ..self.clone()
        }
    }

    /// Checks values a limiter cannot use sensibly. The limiter never panics on invalid
    /// settings (a zero limit refuses everything, a zero `chars_per_token` counts as 1), but
    /// config loading should reject them with the key and the reason.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let limits = [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("tokens_per_day", self.tokens_per_day),
            ("max_concurrent", self.max_concurrent),
        ];
        for (key, value) in limits {
            if value == Some(0) {
                return Err(SettingsError::Zero { key });
            }
        }
        for (key, value) in [
            ("usd_per_day", self.usd_per_day),
            ("usd_per_month", self.usd_per_month),
        ] {
            if value == Some(Usd::ZERO) {
                return Err(SettingsError::Zero { key });
            }
        }
        if self.chars_per_token == 0 {
            return Err(SettingsError::Zero {
                key: "chars_per_token",
            });
        }
        Ok(())
    }

    /// `true` when no limit is configured.
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.tokens_per_day.is_none()
            && self.max_concurrent.is_none()
            && self.usd_per_day.is_none()
            && self.usd_per_month.is_none()
    }

    /// `true` when a dollar budget applies.
    pub fn has_usd_budget(&self) -> bool {
        self.usd_per_day.is_some() || self.usd_per_month.is_some()
    }
}

/// Invalid limit settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A limit of zero.
    #[error("limits.{key} must be more than zero (remove the key for unlimited)")]
    Zero {
        /// The offending key.
        key: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_and_unknown_fields() {
        let s: LimitSettings = toml::from_str("rpm = 60\nday_reset_offset = \"+02:00\"").unwrap();
        assert_eq!(s.rpm, Some(60));
        assert_eq!(s.tpm, None);
        assert_eq!(s.default_max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(s.chars_per_token, DEFAULT_CHARS_PER_TOKEN);
        assert_eq!(s.day_reset_offset.secs(), 7200);
        assert!(toml::from_str::<LimitSettings>("rpn = 60").is_err());
        assert!(toml::from_str::<LimitSettings>("day_reset_offset = \"Europe/Paris\"").is_err());
        let back: LimitSettings = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn overrides_merge_on_top() {
        let defaults = LimitSettings {
            rpm: Some(60),
            tpm: Some(10_000),
            ..LimitSettings::default()
        };
        let merged = defaults.with_overrides(&AgentLimits {
            rpm: Some(5),
            tokens_per_day: Some(1_000),
            ..AgentLimits::default()
        });
        assert_eq!(merged.rpm, Some(5));
        assert_eq!(merged.tpm, Some(10_000));
        assert_eq!(merged.tokens_per_day, Some(1_000));
        assert_eq!(merged.max_concurrent, None);
        let usd = defaults.with_overrides(&AgentLimits {
            usd_per_month: Some(Usd::from_micros(5_000_000)),
            ..AgentLimits::default()
        });
        assert_eq!(usd.usd_per_month, Some(Usd::from_micros(5_000_000)));
        assert_eq!(usd.usd_per_day, None);
        let s: LimitSettings = toml::from_str("usd_per_day = 2.5").unwrap();
        assert_eq!(s.usd_per_day, Some(Usd::from_micros(2_500_000)));
        assert!(s.has_usd_budget());
        assert!(toml::from_str::<LimitSettings>("usd_per_day = -1.0").is_err());
        assert_eq!(
            defaults.with_overrides(&AgentLimits::default()),
            defaults,
            "no override keeps the defaults"
        );
    }

    #[test]
    fn validate_rejects_zero() {
        assert!(LimitSettings::default().validate().is_ok());
        let zero_rpm = LimitSettings {
            rpm: Some(0),
            ..LimitSettings::default()
        };
        assert_eq!(zero_rpm.validate(), Err(SettingsError::Zero { key: "rpm" }));
        let zero_cpt = LimitSettings {
            chars_per_token: 0,
            ..LimitSettings::default()
        };
        assert!(zero_cpt.validate().is_err());
        let zero_usd = LimitSettings {
            usd_per_month: Some(Usd::ZERO),
            ..LimitSettings::default()
        };
        assert_eq!(
            zero_usd.validate(),
            Err(SettingsError::Zero {
                key: "usd_per_month"
            })
        );
    }
}
