//! Limit settings: the `[limits]` defaults, per-agent overrides and the day-reset offset.

use portcullis_core::AgentLimits;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use crate::estimate::DEFAULT_CHARS_PER_TOKEN;

/// Output tokens reserved for an LLM request that does not state `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Seconds in a day.
pub(crate) const DAY_SECS: i64 = 86_400;

/// Limits for one scope (tenant, agent or sub-agent).
///
/// `None` means unlimited. Embedded by the config crate as `[limits]` (defaults) and resolved per
/// agent with [`LimitSettings::with_overrides`]. Settings are passed to every
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
    }
}

/// Invalid limit settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A limit of zero.
    #[error("limits.{key} must be at least 1 (remove the key for unlimited)")]
    Zero {
        /// The offending key.
        key: &'static str,
    },
    /// An unparseable day-reset offset.
    #[error(
        "invalid day_reset_offset {value:?}: expected a fixed UTC offset such as \"+02:00\", \
         \"-05:30\" or \"Z\" (IANA zone names are not supported)"
    )]
    Offset {
        /// The rejected text.
        value: String,
    },
}

/// A fixed offset from UTC, in seconds east of Greenwich (−23:59 … +23:59).
///
/// Only fixed offsets are supported: IANA names (`Europe/Paris`) would need the tz database and
/// its daylight-saving rules, a heavy dependency for one daily boundary. An operator in a DST zone
/// picks one offset; the daily reset then drifts by an hour half of the year.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    secs: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: Self = Self { secs: 0 };

    /// An offset of `secs` seconds east of UTC; `None` outside ±24 h.
    pub fn from_secs(secs: i32) -> Option<Self> {
        (secs.unsigned_abs() < DAY_SECS as u32).then_some(Self { secs })
    }

    /// Seconds east of UTC.
    pub fn secs(self) -> i32 {
        self.secs
    }

    /// Unix second of the midnight (in this offset) that starts the day containing `unix_secs`.
    pub fn day_start(self, unix_secs: i64) -> i64 {
        let local = unix_secs.saturating_add(i64::from(self.secs));
        unix_secs.saturating_sub(local.rem_euclid(DAY_SECS))
    }
}

impl FromStr for UtcOffset {
    type Err = SettingsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || SettingsError::Offset {
            value: text.to_owned(),
        };
        let trimmed = text.trim();
        if matches!(trimmed, "Z" | "z" | "UTC" | "utc") {
            return Ok(Self::UTC);
        }
        let (sign, rest) = match trimmed.as_bytes().first() {
            Some(b'+') => (1, &trimmed[1..]),
            Some(b'-') => (-1, &trimmed[1..]),
            _ => return Err(err()),
        };
        let (hours, minutes) = match rest.split_once(':') {
            Some((h, m)) => (h, m),
            None if rest.len() == 4 && rest.is_ascii() => rest.split_at(2),
            None => (rest, "00"),
        };
        let digits = |s: &str| {
            (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i32>().ok())
                .flatten()
        };
        let (Some(h), Some(m)) = (digits(hours), digits(minutes)) else {
            return Err(err());
        };
        if h > 23 || m > 59 {
            return Err(err());
        }
        Self::from_secs(sign * (h * 3600 + m * 60)).ok_or_else(err)
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.secs < 0 { '-' } else { '+' };
        let abs = self.secs.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
    }
}

impl Serialize for UtcOffset {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcOffset {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_and_print() {
        for (text, secs, shown) in [
            ("+02:00", 7200, "+02:00"),
            ("-05:30", -19800, "-05:30"),
            ("Z", 0, "+00:00"),
            ("UTC", 0, "+00:00"),
            ("+0530", 19800, "+05:30"),
            ("+9", 32400, "+09:00"),
            ("-00:00", 0, "+00:00"),
            ("+23:59", 86340, "+23:59"),
        ] {
            let off: UtcOffset = text.parse().unwrap();
            assert_eq!(off.secs(), secs, "{text}");
            assert_eq!(off.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn bad_offsets_are_rejected() {
        for text in [
            "",
            "02:00",
            "+24:00",
            "+02:60",
            "Europe/Paris",
            "+2:0:0",
            "++02",
            "+",
            "+-1",
            "+1a",
            "+123:00",
            "+é",
            "+aéb",
            "+ééé",
        ] {
            let err = text.parse::<UtcOffset>().unwrap_err();
            assert!(matches!(err, SettingsError::Offset { .. }), "{text}");
        }
    }

    #[test]
    fn day_start_respects_offset() {
        // 2026-11-24T21:38:00Z
        let t = 1_795_556_280_i64;
        let utc_midnight = t - t.rem_euclid(86_400);
        assert_eq!(UtcOffset::UTC.day_start(t), utc_midnight);
        // At +03:00 it is already 00:38 on the 25th: the day started 38 minutes ago.
        let plus3: UtcOffset = "+03:00".parse().unwrap();
        assert_eq!(plus3.day_start(t), t - 38 * 60);
        // At -05:00 it is 16:38 on the 24th: the day started at 05:00Z.
        let minus5: UtcOffset = "-05:00".parse().unwrap();
        assert_eq!(minus5.day_start(t), utc_midnight + 5 * 3600);
    }

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
    }
}
