//! RFC 3339 timestamps with millisecond precision, always in UTC.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: RFC 3339 with exactly three fractional digits (the
/// well-known `Rfc3339` format of `time` drops trailing zeros).
const FORMAT: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

const EPOCH: &str = "1970-01-01T00:00:00.000Z";

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Values outside the years
/// 0000–9999 are clamped to that range's ends, so the output is always valid RFC 3339.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = unix_ms.clamp(MIN_MS, MAX_MS);
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| EPOCH.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_007),
            "2023-11-14T22:13:20.007Z"
        );
    }

    /// The output parses back as RFC 3339 to the same instant.
    #[test]
    fn round_trips_through_the_rfc3339_parser() {
        use time::format_description::well_known::Rfc3339;
        for ms in [0, 1, 999, 1_700_000_000_123, -86_400_001] {
            let back = OffsetDateTime::parse(&format_rfc3339_ms(ms), &Rfc3339).expect("parses");
            assert_eq!(
                back.unix_timestamp_nanos(),
                i128::from(ms) * 1_000_000,
                "{ms}"
            );
        }
    }
}
