//! Small formatting helpers the pages share: times, numbers, verdict styles, and reading
//! fields out of a JSON record. Everything returns plain text; templates escape it.

use serde_json::Value;
use time::OffsetDateTime;

/// `2026-01-02 15:04:05` (UTC) for Unix milliseconds.
pub(crate) fn time_ms(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::from("?");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `15:04:05` (UTC) for Unix milliseconds.
pub(crate) fn clock_ms(ms: i64) -> String {
    time_ms(ms).get(11..).unwrap_or("?").to_owned()
}

/// Unix seconds as [`time_ms`].
pub(crate) fn time_secs(secs: u64) -> String {
    time_ms(
        i64::try_from(secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    )
}

/// `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.2k`, `3.4M`: short counts for chart axes.
pub(crate) fn short(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The CSS class of a verdict (`v-allow`, ...); unknown values get `v-other`.
pub(crate) fn verdict_class(v: &str) -> &'static str {
    match v {
        "allow" => "v-allow",
        "deny" => "v-deny",
        "would_deny" => "v-would",
        "rate_limited" => "v-rate",
        "error" => "v-error",
        _ => "v-other",
    }
}

/// The verdicts, in display order.
pub(crate) const VERDICTS: [&str; 5] = ["allow", "deny", "would_deny", "rate_limited", "error"];

/// A string field of a record (`""` when absent or not a string).
pub(crate) fn s<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An integer field of a record.
pub(crate) fn n(r: &Value, key: &str) -> Option<u64> {
    r.get(key).and_then(Value::as_u64)
}

/// A field of a record as display text: strings as they are, `null` as empty, anything
/// else as compact JSON.
pub(crate) fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A list of strings in a record.
pub(crate) fn strings(r: &Value, key: &str) -> Vec<String> {
    r.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Total tokens of a record's usage, when reported.
pub(crate) fn tokens(r: &Value) -> Option<u64> {
    r.get("usage")
        .and_then(|u| u.get("total_tokens"))
        .and_then(Value::as_u64)
}

/// A percent-encoded path segment (for ids in links).
pub(crate) fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A console URL `path?k=v&...` with every value percent-encoded; empty values dropped.
pub(crate) fn url(path: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in params {
        if !v.is_empty() {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path.to_owned()
    }
}

/// One `<option>` of a `<select>`.
pub(crate) struct Opt {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

/// Options for `values` (each its own label), `current` selected; with `any`, a first
/// option of empty value labelled `any`.
pub(crate) fn options(values: &[&str], current: &str, any: Option<&str>) -> Vec<Opt> {
    let mut out = Vec::with_capacity(values.len() + 1);
    if let Some(label) = any {
        out.push(Opt {
            value: String::new(),
            label: label.to_owned(),
            selected: current.is_empty(),
        });
    }
    out.extend(values.iter().map(|v| Opt {
        value: (*v).to_owned(),
        label: v.replace('_', " "),
        selected: *v == current,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        assert_eq!(time_ms(0), "1970-01-01 00:00:00");
        assert_eq!(clock_ms(1_700_000_000_000), "22:13:20");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(short(1500), "1.5k");
        assert_eq!(verdict_class("would_deny"), "v-would");
        assert_eq!(verdict_class("<x>"), "v-other");
    }

    #[test]
    fn urls_encode_every_value() {
        assert_eq!(
            url("/ui/", &[("host", "a&b=c"), ("x", ""), ("q", "<script>\"")]),
            "/ui/?host=a%26b%3Dc&q=%3Cscript%3E%22"
        );
        assert_eq!(url("/ui/", &[("x", "")]), "/ui/");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn record_fields() {
        let r = json!({"a": "x", "n": 3, "l": ["p", 1], "usage": {"total_tokens": 7}});
        assert_eq!(s(&r, "a"), "x");
        assert_eq!(s(&r, "n"), "");
        assert_eq!(n(&r, "n"), Some(3));
        assert_eq!(strings(&r, "l"), vec!["p".to_owned(), "1".to_owned()]);
        assert_eq!(tokens(&r), Some(7));
        assert_eq!(text(r.get("missing")), "");
        assert_eq!(text(r.get("n")), "3");
    }
}
