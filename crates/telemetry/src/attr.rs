//! OTLP attribute helpers.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// A string attribute.
pub(crate) fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// An integer attribute (clamped to `i64::MAX`).
pub(crate) fn int(key: &str, value: u64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(i64::try_from(value).unwrap_or(i64::MAX))),
        }),
        ..KeyValue::default()
    }
}

/// A floating-point attribute.
pub(crate) fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// A list of attributes being built.
pub(crate) struct Attrs(Vec<KeyValue>);

impl Attrs {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub(crate) fn push(&mut self, kv: KeyValue) {
        self.0.push(kv);
    }

    /// A string attribute when the value is known.
    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.0.push(string(key, v));
        }
    }

    pub(crate) fn into_vec(self) -> Vec<KeyValue> {
        self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Attributes as `key → value text`; panics on a duplicate key (a span must not carry one).
    pub(crate) fn as_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for kv in attrs {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            assert!(
                m.insert(kv.key.clone(), v).is_none(),
                "duplicate {}",
                kv.key
            );
        }
        m
    }
}
