//! Errors: positioned policy errors (OPA `check`-like) and engine errors.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The validation stage at which a policy was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the file from disk.
    Load,
    /// Lexing and parsing.
    Parse,
    /// Interpreter compilation (rule resolution, package checks).
    Compile,
    /// Compilation to RVM bytecode.
    RvmCompile,
    /// Portcullis-specific checks (package layout, forbidden builtins, rule shapes).
    Validate,
}

impl Stage {
    /// The label used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Parse => "parse",
            Stage::Compile => "compile",
            Stage::RvmCompile => "rvm_compile",
            Stage::Validate => "validate",
        }
    }
}

/// One positioned error in a policy file. `row` and `col` are 1-based; 0 when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyError {
    /// File the error is in (as given to the loader).
    pub file: String,
    /// 1-based line.
    pub row: u32,
    /// 1-based column.
    pub col: u32,
    /// Human readable message.
    pub message: String,
    /// Stage that rejected the policy.
    pub stage: Stage,
}

impl PolicyError {
    /// A new error.
    pub fn new(
        file: impl Into<String>,
        row: u32,
        col: u32,
        message: impl Into<String>,
        stage: Stage,
    ) -> Self {
        Self {
            file: file.into(),
            row,
            col,
            message: message.into(),
            stage,
        }
    }

    /// Builds an error from a regorus diagnostic. regorus formats positioned errors as
    /// `--> file:row:col`, a source excerpt, then `error: message`; nested diagnostics
    /// repeat that shape, and the innermost one is the most precise.
    pub fn from_regorus(default_file: &str, diagnostic: &str, stage: Stage) -> Self {
        let mut file = default_file.to_owned();
        let (mut row, mut col) = (0, 0);
        if let Some(pos) = diagnostic.rfind("--> ") {
            let rest = &diagnostic[pos + 4..];
            let line = rest.lines().next().unwrap_or("");
            // file names may contain ':'; row and col are the last two fields.
            let mut parts = line.rsplitn(3, ':');
            let c = parts.next().and_then(|s| s.trim().parse::<u32>().ok());
            let r = parts.next().and_then(|s| s.trim().parse::<u32>().ok());
            let f = parts.next();
            if let (Some(r), Some(c), Some(f)) = (r, c, f) {
                row = r;
                col = c;
                file = f.to_owned();
            }
        }
        let message = diagnostic
            .rsplit_once("error: ")
            .map(|(_, m)| m)
            .unwrap_or(diagnostic)
            .trim()
            .to_owned();
        let message = if message.is_empty() {
            diagnostic.trim().to_owned()
        } else {
            message
        };
        Self {
            file,
            row,
            col,
            message,
            stage,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.row, self.col, self.message
        )
    }
}

/// A list of policy errors with the two output forms of `portcullis policy check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The errors, in file then position order.
    pub errors: Vec<PolicyError>,
}

impl ErrorReport {
    /// Wraps and sorts a list of errors.
    pub fn new(mut errors: Vec<PolicyError>) -> Self {
        errors.sort_by(|a, b| (&a.file, a.row, a.col).cmp(&(&b.file, b.row, b.col)));
        Self { errors }
    }

    /// True when there are no errors.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `{"errors":[{"file","row","col","message","stage"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "errors": self.errors })
    }

    /// One `file:row:col: message` line per error.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out
    }
}

/// Errors of the policy engine's API (as opposed to errors inside policies).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The policy set did not compile; the previous set (if any) stays active.
    #[error("policy set has {} error(s); first: {}", .0.errors.len(), .0.errors.first().map(|e| e.to_string()).unwrap_or_default())]
    Invalid(ErrorReport),
    /// Reading the policy directory failed.
    #[error("cannot read policy directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No such policy in the active set.
    #[error("unknown policy {0:?}")]
    UnknownPolicy(String),
    /// The engine has no directory to reload from.
    #[error("no policy directory configured")]
    NoDirectory,
    /// A filesystem watch could not be set up.
    #[error("cannot watch policy directory: {0}")]
    Watch(String),
    /// Malformed input or fixture.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_regorus_diagnostic() {
        let d = "\n--> c.rego:5:3\n  |\n5 |   r := http.send({})\n  |   ^\nerror: Compilation error: \n--> c.rego:5:17\n  |\n5 |   r := http.send({})\n  |                 ^\nerror: Unknown function: 'http.send'";
        let e = PolicyError::from_regorus("x.rego", d, Stage::RvmCompile);
        assert_eq!((e.file.as_str(), e.row, e.col), ("c.rego", 5, 17));
        assert_eq!(e.message, "Unknown function: 'http.send'");
        assert_eq!(e.to_string(), "c.rego:5:17: Unknown function: 'http.send'");
    }

    #[test]
    fn unpositioned_diagnostic_keeps_text() {
        let e = PolicyError::from_regorus("x.rego", "something broke", Stage::Compile);
        assert_eq!((e.file.as_str(), e.row, e.col), ("x.rego", 0, 0));
        assert_eq!(e.message, "something broke");
    }

    #[test]
    fn report_json_shape() {
        let r = ErrorReport::new(vec![PolicyError::new("a.rego", 2, 3, "boom", Stage::Parse)]);
        assert_eq!(
            r.to_json(),
            serde_json::json!({"errors":[{"file":"a.rego","row":2,"col":3,"message":"boom","stage":"parse"}]})
        );
        assert_eq!(r.to_text(), "a.rego:2:3: boom\n");
    }
}
