//! Durations written as `"600s"`, `"10m"`, `"1h"`, `"250ms"` or integer seconds.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;
use std::time::Duration;

/// Parses `"250ms"`, `"30s"`, `"10m"`, `"2h"`, `"1d"` (any form `humantime` reads, e.g.
/// `"1h 30m"`) or a bare number of seconds. Fractions (`"1.5s"`), which `humantime` reads,
/// are refused as before: a config states whole units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.contains('.') {
        return Err(format!(
            "`{s}`: fractions are not accepted (use a smaller unit, e.g. \"1500ms\")"
        ));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{s}`: number out of range"));
    }
    humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => format!("`{s}`: duration out of range"),
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)")
        }
        _ => format!("`{s}` is not a duration (expected e.g. \"30s\", \"10m\")"),
    })
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like \"30s\", \"10m\" or integer seconds")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("duration must not be negative"))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_millis() == 0 {
        s.serialize_str(&format!("{}s", d.as_secs()))
    } else {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

/// An optional duration (`token_ttl` of an agent): the same forms, serialised as seconds.
pub(crate) mod option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    struct Wrap(#[serde(with = "super")] Duration);

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<Wrap>::deserialize(d).map(|o| o.map(|w| w.0))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs()).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_duration("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "s",
            "10x",
            "-1s",
            "1.5s",
            "99999999999999999999s",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            parse_duration("10x").unwrap_err(),
            "`10x`: unknown unit `x` (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("18446744073709551615d").unwrap_err(),
            "`18446744073709551615d`: duration out of range"
        );
        assert_eq!(
            parse_duration("99999999999999999999").unwrap_err(),
            "`99999999999999999999`: number out of range"
        );
        assert_eq!(
            parse_duration("1.5s").unwrap_err(),
            "`1.5s`: fractions are not accepted (use a smaller unit, e.g. \"1500ms\")"
        );
        assert_eq!(
            parse_duration("s").unwrap_err(),
            "`s` is not a duration (expected e.g. \"30s\", \"10m\")"
        );
    }
}
