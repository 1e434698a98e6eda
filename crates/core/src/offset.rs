//! Fixed offsets from UTC, e.g. the one whose midnight resets daily token budgets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

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
    type Err = InvalidOffset;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || InvalidOffset {
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

/// An unparseable UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOffset {
    /// The rejected text.
    pub value: String,
}

impl fmt::Display for InvalidOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid day_reset_offset {:?}: expected a fixed UTC offset such as \"+02:00\", \
             \"-05:30\" or \"Z\" (IANA zone names are not supported)",
            self.value
        )
    }
}

impl std::error::Error for InvalidOffset {}

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
            assert!(matches!(err, InvalidOffset { .. }), "{text}");
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
    fn the_error_names_the_value_and_the_forms() {
        let err = "Europe/Paris".parse::<UtcOffset>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid day_reset_offset \"Europe/Paris\": expected a fixed UTC offset such as \
             \"+02:00\", \"-05:30\" or \"Z\" (IANA zone names are not supported)"
        );
    }
}
