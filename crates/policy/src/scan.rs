//! A small lexical scan of Rego sources for static facts regorus does not expose:
//! which `data.*` packages a module references, which `input` fields it reads,
//! whether it calls non-deterministic builtins, and which `test_*` rules it defines.
//!
//! The scan is conservative: anything it cannot attribute precisely (a bare `input`,
//! `input[...]`, a bare `data`) widens the result rather than narrowing it.

use std::collections::BTreeSet;

/// Builtins whose result changes between identical evaluations.
const NON_DETERMINISTIC: &[&str] = &["time.now_ns"];
/// Builtin namespaces that are non-deterministic as a whole.
const NON_DETERMINISTIC_PREFIXES: &[&str] = &["rand.", "uuid."];

/// Static facts about one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModuleFacts {
    /// `data.a.b.c` references (without the `data.` prefix), dotted.
    pub(crate) data_refs: BTreeSet<String>,
    /// A bare `data` or `data[...]`: may read any package.
    pub(crate) data_dynamic: bool,
    /// Top-level `input` fields read, with the second-level field for `input.request.*`.
    pub(crate) input_fields: BTreeSet<String>,
    /// A bare `input` or `input[...]`: may read any field.
    pub(crate) input_dynamic: bool,
    /// Non-deterministic builtins called.
    pub(crate) non_deterministic: BTreeSet<String>,
    /// Names of rules starting with `test_` (in definition order, deduplicated).
    pub(crate) test_rules: Vec<String>,
    /// Positions (row, col) of forbidden builtin calls such as `http.send`.
    pub(crate) forbidden: Vec<(String, u32, u32)>,
    /// Rules with a `default` definition.
    pub(crate) defaults: BTreeSet<String>,
    /// Position of the `package` keyword.
    pub(crate) package_pos: Option<(u32, u32)>,
}

/// Builtins that policies may not call.
const FORBIDDEN: &[&str] = &["http.send", "net.lookup_ip_addr", "opa.runtime"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A dotted identifier path, e.g. `input.request.host`; `bracket` when `[` follows.
    Path {
        text: String,
        bracket: bool,
        line_start: bool,
        row: u32,
        col: u32,
    },
    Other,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut at_line_start = true;
    let mut row: u32 = 1;
    let mut line_begin = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                at_line_start = true;
                i += 1;
                row += 1;
                line_begin = i;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(Tok::Other);
                at_line_start = false;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    if b[i] == b'\n' {
                        row += 1;
                        line_begin = i + 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Other);
                at_line_start = false;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                loop {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                    // continue a dotted path: `.ident`
                    if i + 1 < b.len()
                        && b[i] == b'.'
                        && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_')
                    {
                        i += 1;
                        continue;
                    }
                    break;
                }
                let text = src.get(start..i).unwrap_or("").to_owned();
                let mut j = i;
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                let bracket = j < b.len() && b[j] == b'[';
                let col = src
                    .get(line_begin..start)
                    .map(|s| s.chars().count())
                    .unwrap_or(0) as u32
                    + 1;
                out.push(Tok::Path {
                    text,
                    bracket,
                    line_start: at_line_start,
                    row,
                    col,
                });
                at_line_start = false;
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Other);
                at_line_start = false;
            }
            _ => {
                i += 1;
                out.push(Tok::Other);
                at_line_start = false;
            }
        }
    }
    out
}

/// Scans one module.
pub(crate) fn scan(src: &str) -> ModuleFacts {
    let mut f = ModuleFacts::default();
    let mut prev = String::new();
    for tok in tokenize(src) {
        let Tok::Path {
            text,
            bracket,
            line_start,
            row,
            col,
        } = tok
        else {
            prev.clear();
            continue;
        };
        let after_with = prev == "with";
        let after_default = prev == "default";
        prev.clone_from(&text);
        if after_default {
            f.defaults.insert(text.clone());
        }
        if text == "package" && f.package_pos.is_none() {
            f.package_pos = Some((row, col));
        }
        if FORBIDDEN.contains(&text.as_str()) {
            f.forbidden.push((text.clone(), row, col));
        }
        let mut parts = text.split('.');
        let head = parts.next().unwrap_or("");
        match head {
            "input" => match parts.next() {
                // `with input as {...}` in tests replaces input; it does not read it.
                None if after_with => {}
                None => f.input_dynamic = true,
                Some("request") => match parts.next() {
                    Some(second) => {
                        f.input_fields.insert(format!("request.{second}"));
                    }
                    None if bracket => {
                        f.input_fields.insert("request".to_owned());
                    }
                    None => {
                        f.input_fields.insert("request".to_owned());
                    }
                },
                Some(first) => {
                    f.input_fields.insert(first.to_owned());
                }
            },
            "data" => {
                let rest: Vec<&str> = parts.collect();
                if rest.is_empty() {
                    f.data_dynamic = true;
                } else {
                    f.data_refs.insert(rest.join("."));
                }
            }
            _ => {
                if NON_DETERMINISTIC.contains(&text.as_str())
                    || NON_DETERMINISTIC_PREFIXES
                        .iter()
                        .any(|p| text.starts_with(p))
                {
                    f.non_deterministic.insert(text.clone());
                }
                if line_start
                    && !text.contains('.')
                    && text.starts_with("test_")
                    && !f.test_rules.contains(&text)
                {
                    f.test_rules.push(text);
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_input_fields_data_refs_and_tests() {
        let f = scan(
            r#"package portcullis.policy.x
import rego.v1
import data.portcullis.lib.catalog
# input.secret in a comment is ignored
allow if {
    input.request.host == "api.openai.com"   # trailing comment
    input.llm.model in {"gpt-4o"}
    catalog.required_scope == "x"
    s := "input.usage in a string"
}
test_allows if { allow with input as {} }
test_allows if { true }
"#,
        );
        assert_eq!(
            f.input_fields.iter().cloned().collect::<Vec<_>>(),
            vec!["llm".to_owned(), "request.host".to_owned()]
        );
        assert!(!f.input_dynamic);
        assert!(f.data_refs.contains("portcullis.lib.catalog"));
        assert!(!f.data_dynamic);
        assert_eq!(f.test_rules, vec!["test_allows".to_owned()]);
        assert!(f.non_deterministic.is_empty());
        let d = scan("package p\ndefault allow := false\ndefault  deny := set()\n");
        assert!(d.defaults.contains("allow") && d.defaults.contains("deny"));
    }

    #[test]
    fn dynamic_and_non_deterministic() {
        let f = scan("package p\nx := input\ny := data[k]\nz := time.now_ns()\nu := uuid.rfc4122(\"a\")\nr := rand.intn(\"s\", 3)\n");
        assert!(f.input_dynamic);
        assert!(f.data_dynamic);
        assert_eq!(f.non_deterministic.len(), 3);
        let h = scan("package p\n\nallow if {\n  r := http.send({})\n}\n");
        assert_eq!(h.forbidden, vec![("http.send".to_owned(), 4, 8)]);
        assert_eq!(h.package_pos, Some((1, 1)));
        let g = scan("package p\nx := time.parse_rfc3339_ns(input.now)\n");
        assert!(g.non_deterministic.is_empty());
        assert!(g.input_fields.contains("now"));
    }
}
