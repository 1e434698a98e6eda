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

    /// Unix seconds `(start, end)` of the calendar month (in this offset) containing
    /// `unix_secs`: from midnight of its first day to midnight of the next month's first day.
    /// The shared limiter's script computes the same bounds with the same arithmetic.
    pub fn month_bounds(self, unix_secs: i64) -> (i64, i64) {
        let local = unix_secs.saturating_add(i64::from(self.secs));
        let days = local.div_euclid(DAY_SECS);
        let (year, month, day) = civil_from_days(days);
        let first = days - (day - 1);
        let start = first
            .saturating_mul(DAY_SECS)
            .saturating_sub(i64::from(self.secs));
        let len = days_in_month(year, month);
        (start, start.saturating_add(len * DAY_SECS))
    }
}

/// `(year, month 1–12, day 1–31)` of a day counted from 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
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
    fn month_bounds_follow_the_calendar_and_the_offset() {
        use time::macros::datetime;
        let at = |d: time::OffsetDateTime| d.unix_timestamp();
        // 2026-11-24T21:38:00Z: November 2026 in UTC.
        let t = at(datetime!(2026-11-24 21:38 UTC));
        assert_eq!(
            UtcOffset::UTC.month_bounds(t),
            (
                at(datetime!(2026-11-01 0:00 UTC)),
                at(datetime!(2026-12-01 0:00 UTC))
            )
        );
        // 2026-11-30T22:30Z is already December 1st at +03:00.
        let plus3: UtcOffset = "+03:00".parse().unwrap();
        let t = at(datetime!(2026-11-30 22:30 UTC));
        assert_eq!(
            plus3.month_bounds(t),
            (
                at(datetime!(2026-11-30 21:00 UTC)),
                at(datetime!(2026-12-31 21:00 UTC))
            )
        );
        // ... and still November at -05:00 on 2026-12-01T03:00Z.
        let minus5: UtcOffset = "-05:00".parse().unwrap();
        let t = at(datetime!(2026-12-01 03:00 UTC));
        assert_eq!(
            minus5.month_bounds(t),
            (
                at(datetime!(2026-11-01 05:00 UTC)),
                at(datetime!(2026-12-01 05:00 UTC))
            )
        );
        // Leap and common Februaries, the exact boundary, the epoch and before it.
        let feb = |y: i32| {
            let s = time::Date::from_calendar_date(y, time::Month::February, 10).unwrap();
            let (a, b) = UtcOffset::UTC.month_bounds(s.midnight().assume_utc().unix_timestamp());
            (b - a) / DAY_SECS
        };
        assert_eq!(
            (feb(2024), feb(2026), feb(2000), feb(2100)),
            (29, 28, 29, 28)
        );
        let start = at(datetime!(2027-01-01 0:00 UTC));
        assert_eq!(UtcOffset::UTC.month_bounds(start).0, start);
        assert_eq!(UtcOffset::UTC.month_bounds(start - 1).1, start);
        assert_eq!(UtcOffset::UTC.month_bounds(0), (0, 31 * DAY_SECS));
        assert_eq!(
            UtcOffset::UTC.month_bounds(-1),
            (at(datetime!(1969-12-01 0:00 UTC)), 0)
        );
        // Every day of four years agrees with the calendar.
        for d in 0..(4 * 366) {
            let t = at(datetime!(2027-01-01 12:00 UTC)) + d * DAY_SECS;
            let date = time::OffsetDateTime::from_unix_timestamp(t).unwrap().date();
            let first = date
                .replace_day(1)
                .unwrap()
                .midnight()
                .assume_utc()
                .unix_timestamp();
            assert_eq!(UtcOffset::UTC.month_bounds(t).0, first, "{date}");
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
