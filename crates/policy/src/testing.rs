//! `portcullis policy test`: runs `test_*` rules in the policy files and table-driven
//! decision fixtures from `tests/*.yaml|yml|json` under the policy directory.
//!
//! A fixture file is `{"bindings": [...]?, "default": "deny"?, "cases": [...]}` (or just the
//! list of cases). A case is `{name, input, agent?, bindings?, default?, verdict, reasons?,
//! policy?, code?, would_deny?}`: `agent` fields are merged into `input.agent`; `policy`
//! may be `null` to expect no deciding policy. Each case runs on the RVM path and on the
//! interpreter, and the two must agree.

use crate::binding::{Binding, DefaultDecision};
use crate::compile::{compile, SourceFile, POLICY_PREFIX};
use crate::engine::{EngineConfig, PolicyEngine};
use crate::error::EngineError;
use crate::loader::read_dir;
use portcullis_core::{Clock, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Result of one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// `rego` for a `test_*` rule, `fixture` for a table case.
    pub kind: &'static str,
    /// File the test comes from.
    pub file: String,
    /// Rule path or case name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// All results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Passed tests.
    pub passed: usize,
    /// Failed tests.
    pub failed: usize,
    /// Every result.
    pub results: Vec<TestResult>,
}

impl TestReport {
    fn push(&mut self, r: TestResult) {
        if r.passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        self.results.push(r);
    }

    /// One line per test plus the `N passed, N failed` summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            let status = if r.passed { "PASS" } else { "FAIL" };
            s.push_str(&format!("{status} {} {}: {}", r.kind, r.file, r.name));
            if let Some(m) = &r.message {
                s.push_str(&format!(" — {m}"));
            }
            s.push('\n');
        }
        s.push_str(&format!("{} passed, {} failed\n", self.passed, self.failed));
        s
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FixtureFile {
    Full(FixtureSet),
    Cases(Vec<Case>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureSet {
    #[serde(default)]
    bindings: Option<Vec<Binding>>,
    #[serde(default)]
    default: Option<DefaultDecision>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Json,
    #[serde(default)]
    agent: Option<serde_json::Map<String, Json>>,
    #[serde(default)]
    bindings: Option<Vec<Binding>>,
    #[serde(default)]
    default: Option<DefaultDecision>,
    verdict: Verdict,
    #[serde(default)]
    reasons: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some_option")]
    policy: Option<Option<String>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    would_deny: Option<Vec<String>>,
}

/// Distinguishes a missing `policy` (no expectation) from `policy: null`.
fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Runs every test of the policy directory `dir`.
pub fn run_tests(dir: &Path, clock: Arc<dyn Clock>) -> Result<TestReport, EngineError> {
    let sources = read_dir(dir)?;
    let mut report = TestReport::default();
    run_rego_tests(&sources, &mut report)?;
    let fixtures_dir = dir.join("tests");
    if fixtures_dir.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(&fixtures_dir)
            .map_err(|source| EngineError::Io {
                path: fixtures_dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| EngineError::Io {
                path: f.clone(),
                source,
            })?;
            let name = f
                .file_name()
                .map(|n| format!("tests/{}", n.to_string_lossy()))
                .unwrap_or_default();
            run_fixture_text(&sources, &name, &text, clock.clone(), &mut report)?;
        }
    }
    Ok(report)
}

/// Runs the `test_*` rules of `sources`.
pub fn run_rego_tests(sources: &[SourceFile], report: &mut TestReport) -> Result<(), EngineError> {
    let set = compile(sources.to_vec()).map_err(EngineError::Invalid)?;
    let mut tests: Vec<(String, String)> = Vec::new();
    for m in &set.policies {
        for t in &m.test_rules {
            tests.push((m.file.clone(), format!("{POLICY_PREFIX}{}.{t}", m.name)));
        }
    }
    for (pkg, rule) in &set.library_tests {
        let file = set
            .sources
            .iter()
            .find(|s| {
                s.contents
                    .contains(&format!("package {}", pkg.trim_start_matches("data.")))
            })
            .map(|s| s.path.clone())
            .unwrap_or_default();
        tests.push((file, format!("{pkg}.{rule}")));
    }
    for (file, path) in tests {
        let mut engine = set.engine.clone();
        let (passed, message) = match engine.eval_rule(path.clone()) {
            Ok(regorus::Value::Bool(true)) => (true, None),
            Ok(regorus::Value::Undefined) => {
                (false, Some("undefined (a condition failed)".to_owned()))
            }
            Ok(other) => (
                false,
                Some(format!("result {}", crate::input::value_to_json(&other))),
            ),
            Err(e) => (false, Some(crate::eval::first_line(&e.to_string()))),
        };
        report.push(TestResult {
            kind: "rego",
            file,
            name: path.trim_start_matches("data.").to_owned(),
            passed,
            message,
        });
    }
    Ok(())
}

/// Runs one fixture file's cases against `sources`.
pub fn run_fixture_text(
    sources: &[SourceFile],
    file: &str,
    text: &str,
    clock: Arc<dyn Clock>,
    report: &mut TestReport,
) -> Result<(), EngineError> {
    let value = regorus::Value::from_yaml_str(text)
        .map_err(|e| EngineError::InvalidInput(format!("{file}: {e}")))?;
    let json = crate::input::value_to_json(&value);
    let fixture: FixtureFile = serde_json::from_value(json)
        .map_err(|e| EngineError::InvalidInput(format!("{file}: {e}")))?;
    let (file_bindings, file_default, cases) = match fixture {
        FixtureFile::Full(s) => (s.bindings, s.default, s.cases),
        FixtureFile::Cases(c) => (None, None, c),
    };
    let mut engines: BTreeMap<String, PolicyEngine> = BTreeMap::new();
    for case in cases {
        let bindings = case
            .bindings
            .clone()
            .or_else(|| file_bindings.clone())
            .unwrap_or_default();
        let default = case.default.or(file_default).unwrap_or_default();
        let key = serde_json::to_string(&(&bindings, default)).unwrap_or_default();
        if !engines.contains_key(&key) {
            let cfg = EngineConfig {
                bindings,
                default,
                cache_ttl: std::time::Duration::ZERO,
                ..Default::default()
            };
            let engine = PolicyEngine::with_sources(cfg, clock.clone(), sources.to_vec())?;
            engines.insert(key.clone(), engine);
        }
        let Some(engine) = engines.get(&key) else {
            continue;
        };
        let mut input = case.input.clone();
        if let Some(agent) = &case.agent {
            if let Some(obj) = input.as_object_mut() {
                let slot = obj
                    .entry("agent")
                    .or_insert_with(|| Json::Object(Default::default()));
                if let Some(a) = slot.as_object_mut() {
                    for (k, v) in agent {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let message = match (
            engine.decide_json(input.clone()),
            engine.simulate_json(input),
        ) {
            (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
            (Ok(rvm), Ok(sim)) => {
                let d = &rvm;
                let mut problems = Vec::new();
                if d.verdict != case.verdict {
                    problems.push(format!("verdict {} (expected {})", d.verdict, case.verdict));
                }
                if let Some(r) = &case.reasons {
                    let mut want = r.clone();
                    want.sort();
                    if d.reasons != want {
                        problems.push(format!("reasons {:?} (expected {:?})", d.reasons, want));
                    }
                }
                if let Some(p) = &case.policy {
                    if &d.policy != p {
                        problems.push(format!("policy {:?} (expected {:?})", d.policy, p));
                    }
                }
                if let Some(c) = &case.code {
                    if d.code.as_deref() != Some(c.as_str()) {
                        problems.push(format!("code {:?} (expected {c:?})", d.code));
                    }
                }
                if let Some(w) = &case.would_deny {
                    if &d.would_deny != w {
                        problems.push(format!("would_deny {:?} (expected {w:?})", d.would_deny));
                    }
                }
                let s = &sim.decision;
                if (s.verdict, &s.reasons, &s.policy) != (d.verdict, &d.reasons, &d.policy) {
                    problems.push(format!(
                        "interpreter disagrees with RVM: {} {:?} {:?} vs {} {:?} {:?}",
                        s.verdict, s.reasons, s.policy, d.verdict, d.reasons, d.policy
                    ));
                }
                (!problems.is_empty()).then(|| problems.join("; "))
            }
        };
        report.push(TestResult {
            kind: "fixture",
            file: file.to_owned(),
            name: case.name,
            passed: message.is_none(),
            message,
        });
    }
    Ok(())
}
