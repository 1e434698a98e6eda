//! What the audit trail keeps of a call: its arguments per `audit.mcp_arguments` (`none`,
//! `hash` — the default, since arguments may hold secrets — or `full`), and a session id only
//! as a hash (a session id is a bearer credential for some servers).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How arguments are recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ArgumentsAudit {
    /// Not recorded.
    None,
    /// SHA-256 of the canonical JSON (equal arguments hash equal, whatever their key order).
    #[default]
    Hash,
    /// Recorded as sent.
    Full,
}

/// The arguments as recorded: `(full value, sha256 hex)`, per `mode`.
pub fn arguments_record(
    mode: ArgumentsAudit,
    args: Option<&Value>,
) -> (Option<Value>, Option<String>) {
    let Some(a) = args else {
        return (None, None);
    };
    match mode {
        ArgumentsAudit::None => (None, None),
        ArgumentsAudit::Hash => (None, Some(hex_sha256(canonical_json(a).as_bytes()))),
        ArgumentsAudit::Full => (Some(a.clone()), None),
    }
}

/// A session id as recorded: the first 16 hex digits of its SHA-256.
pub fn session_hash(session_id: &str) -> String {
    let mut h = hex_sha256(session_id.as_bytes());
    h.truncate(16);
    h
}

/// JSON with object keys sorted (by their UTF-8 bytes) and no insignificant whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": [{"z": 1, "a": "x"}], "a": null, "\u{e9}": 1.5});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":null,"b":[{"a":"x","z":1}],"é":1.5}"#
        );
    }

    #[test]
    fn modes() {
        let args = json!({"path": "/srv/x", "token": "sk-secret"});
        let reordered: Value =
            serde_json::from_str(r#"{"token":"sk-secret","path":"/srv/x"}"#).unwrap();
        let (full, hash) = arguments_record(ArgumentsAudit::Hash, Some(&args));
        assert_eq!(full, None);
        let hash = hash.unwrap();
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("secret"));
        assert_eq!(
            arguments_record(ArgumentsAudit::Hash, Some(&reordered))
                .1
                .unwrap(),
            hash
        );
        // sha256 of the canonical text, checkable with any tool.
        assert_eq!(
            hash,
            hex_sha256(br#"{"path":"/srv/x","token":"sk-secret"}"#)
        );
        assert_eq!(
            arguments_record(ArgumentsAudit::Full, Some(&args)),
            (Some(args.clone()), None)
        );
        assert_eq!(
            arguments_record(ArgumentsAudit::None, Some(&args)),
            (None, None)
        );
        assert_eq!(arguments_record(ArgumentsAudit::Hash, None), (None, None));
    }

    #[test]
    fn sessions_are_hashed() {
        let h = session_hash("4f1c-secret-session");
        assert_eq!(h.len(), 16);
        assert_eq!(h, &hex_sha256(b"4f1c-secret-session")[..16]);
    }
}
