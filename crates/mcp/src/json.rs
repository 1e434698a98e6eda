//! Strict JSON: a parse that refuses what different JSON parsers read differently.
//!
//! A gateway and an MCP server must read one body the same way, or a decision can be made on
//! one reading while the server acts on another. `serde_json::Value` keeps the last of two
//! equal keys; other parsers keep the first. So a duplicated key anywhere is refused, and
//! nesting is bounded (a deep document costs stack in every parser on the way).

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Why a body is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (or trailing bytes).
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// An object names one key twice.
    #[error("duplicate key {0:?}: ambiguous JSON is refused")]
    DuplicateKey(String),
    /// Nested deeper than the limit.
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Parses `bytes` as one JSON value, refusing duplicated keys and nesting deeper than
/// `max_depth` (the top-level value is depth 1).
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Seed {
        depth: 1,
        max: max_depth,
    }
    .deserialize(&mut de)
    .map_err(|e| classify(&e))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(v)
}

fn classify(e: &serde_json::Error) -> JsonError {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUP) {
        let key = rest.split('\u{0}').next().unwrap_or_default();
        return JsonError::DuplicateKey(key.to_owned());
    }
    if let Some(rest) = text.strip_prefix(DEEP) {
        let n = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        return JsonError::TooDeep(n);
    }
    JsonError::Syntax(text)
}

const DUP: &str = "\u{0}dup:";
const DEEP: &str = "\u{0}deep:";

#[derive(Clone, Copy)]
struct Seed {
    depth: usize,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed {
    fn nested<E: serde::de::Error>(self) -> Result<Seed, E> {
        if self.depth > self.max {
            return Err(E::custom(format!("{DEEP}{}", self.max)));
        }
        Ok(Seed {
            depth: self.depth + 1,
            max: self.max,
        })
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(A::Error::custom(format!("{DUP}{k}\u{0}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_plain_json() {
        let v = parse_strict(br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#, 8).unwrap();
        assert_eq!(v, json!({"a":[1,-2,3.5,"x",null,true,{"b":{}}]}));
        assert_eq!(parse_strict(b" 7 ", 1).unwrap(), json!(7));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert_eq!(
            parse_strict(br#"{"method":"a","method":"b"}"#, 8),
            Err(JsonError::DuplicateKey("method".into()))
        );
        assert_eq!(
            parse_strict(br#"{"p":{"x":{"path":"/ok","path":"/etc"}}}"#, 8),
            Err(JsonError::DuplicateKey("path".into()))
        );
        // Escaped spellings of one key are the same key.
        assert_eq!(
            parse_strict(br#"{"name":1,"n\u0061me":2}"#, 8),
            Err(JsonError::DuplicateKey("name".into()))
        );
    }

    #[test]
    fn bounds_nesting() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_strict(deep(5).as_bytes(), 5).is_ok());
        assert_eq!(
            parse_strict(deep(6).as_bytes(), 5),
            Err(JsonError::TooDeep(5))
        );
        // Far beyond any parser's stack: refused, no crash.
        let huge = deep(100_000);
        assert_eq!(
            parse_strict(huge.as_bytes(), 64),
            Err(JsonError::TooDeep(64))
        );
        let objs = format!("{}1{}", "{\"a\":".repeat(70), "}".repeat(70));
        assert_eq!(
            parse_strict(objs.as_bytes(), 64),
            Err(JsonError::TooDeep(64))
        );
    }

    #[test]
    fn refuses_garbage_and_trailing_bytes() {
        for bad in [&b""[..], b"{", b"{} {}", b"{\"a\":1,}", b"\xff", b"NaN"] {
            assert!(
                matches!(parse_strict(bad, 8), Err(JsonError::Syntax(_))),
                "{bad:?}"
            );
        }
    }
}
