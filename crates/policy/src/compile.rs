//! Turning a set of `.rego` sources into a validated, compiled policy set:
//! parse → compile (interpreter) → RVM compile, plus Portcullis-specific checks.

use crate::error::{ErrorReport, PolicyError, Stage};
use crate::mask::FieldMask;
use crate::scan::{scan, ModuleFacts};
use portcullis_core::PolicyMode;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Package prefix of policies.
pub const POLICY_PREFIX: &str = "data.portcullis.policy.";
/// Package of the generated wrapper that evaluates every policy in one pass.
const WRAPPER_PACKAGE: &str = "portcullis.__eval";
const WRAPPER_FILE: &str = "<portcullis:eval>";
/// Entry point returning `[{allow, deny}, ...]` for every policy, in name order.
pub(crate) const ENTRY_ALL: &str = "data.portcullis.__eval.all";
/// Upper bound on VM instructions per evaluation: bounds CPU per request.
pub(crate) const MAX_INSTRUCTIONS: usize = 1_000_000;

/// A policy source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path as shown in errors (relative to the policy directory when loaded from one).
    pub path: String,
    /// Rego text.
    pub contents: String,
}

impl SourceFile {
    /// A new source.
    pub fn new(path: impl Into<String>, contents: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
        }
    }
}

/// Static facts about one compiled policy.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// Name (`portcullis.policy.<name>`).
    pub name: String,
    /// File defining the package (the first one when several do).
    pub file: String,
    /// Whether the policy declares `allow`.
    pub has_allow: bool,
    /// Whether the policy declares `deny`.
    pub has_deny: bool,
    /// Whether the policy declares `default allow`: then an undefined `allow` can only
    /// come from conflicting definitions and is an error.
    pub default_allow: bool,
    /// Whether the policy declares `default deny`.
    pub default_deny: bool,
    /// Non-deterministic builtins reachable from the policy (then never cached).
    pub non_deterministic: Vec<String>,
    /// Whether decisions involving this policy may be cached.
    pub cacheable: bool,
    /// `test_*` rules defined in the policy's files.
    pub test_rules: Vec<String>,
    /// Mode declared in the policy (`mode := "shadow"`): the default when no binding
    /// names the policy.
    pub declared_mode: Option<PolicyMode>,
    pub(crate) mask: FieldMask,
}

/// A validated, compiled set of policies and libraries. Immutable; swapped whole on reload.
pub struct CompiledSet {
    pub(crate) policies: Vec<PolicyMeta>,
    pub(crate) index: BTreeMap<String, usize>,
    pub(crate) libraries: Vec<String>,
    pub(crate) sources: Vec<SourceFile>,
    /// Interpreter engine with every module and the wrapper (clone before use).
    pub(crate) engine: Engine,
    /// Library `test_*` rules: (package path, rule).
    pub(crate) library_tests: Vec<(String, String)>,
    program: Arc<Program>,
    vms: Mutex<Vec<RegoVM>>,
    /// The data document (a bundle's `data.json` files), given to every VM.
    data: Option<regorus::Value>,
    /// Which policy set this is: a bundle's manifest revision, else a hash of the sources.
    pub(crate) revision: String,
}

impl std::fmt::Debug for CompiledSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSet")
            .field("policies", &self.index.keys().collect::<Vec<_>>())
            .field("libraries", &self.libraries)
            .finish_non_exhaustive()
    }
}

/// Per-policy entry point in the compiled program.
pub(crate) fn policy_entry(i: usize) -> String {
    format!("data.portcullis.__eval.p{i}")
}

struct Parsed {
    file: String,
    package: String,
    facts: ModuleFacts,
}

/// Validates and compiles `sources`. On failure every error found is returned, not just the first.
pub fn compile(sources: Vec<SourceFile>) -> Result<CompiledSet, ErrorReport> {
    compile_with_data(sources, None)
}

/// The revision of a set read from files: `sha256:` and the first 20 hex digits of a hash
/// over every file's path and contents (and the data document), in path order.
pub fn sources_revision(sources: &[SourceFile], data: Option<&serde_json::Value>) -> String {
    use sha2::{Digest, Sha256};
    let mut files: Vec<&SourceFile> = sources.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in files {
        h.update((f.path.len() as u64).to_le_bytes());
        h.update(f.path.as_bytes());
        h.update((f.contents.len() as u64).to_le_bytes());
        h.update(f.contents.as_bytes());
    }
    if let Some(d) = data {
        h.update(b"data.json");
        h.update(d.to_string().as_bytes());
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// [`compile`] with a data document (`data.json` of a bundle): policies read it as `data.*`.
/// Data that conflicts with a rule's path is an error.
pub fn compile_with_data(
    sources: Vec<SourceFile>,
    data: Option<serde_json::Value>,
) -> Result<CompiledSet, ErrorReport> {
    let revision = sources_revision(&sources, data.as_ref());
    let mut errors = Vec::new();
    let mut engine = Engine::new();
    engine.set_rego_v0(false);
    let data = match data {
        None => None,
        Some(doc) if !doc.is_object() => {
            return Err(ErrorReport::new(vec![PolicyError::new(
                "data.json",
                1,
                1,
                "the data document must be a JSON object",
                Stage::Load,
            )]))
        }
        Some(doc) => {
            let value = regorus::Value::from(doc);
            if let Err(e) = engine.add_data(value.clone()) {
                return Err(ErrorReport::new(vec![PolicyError::new(
                    "data.json",
                    1,
                    1,
                    format!("data document rejected: {e}"),
                    Stage::Load,
                )]));
            }
            Some(value)
        }
    };
    let mut parsed = Vec::new();

    // Stage 1: parse each file alone so every syntax error is reported.
    for src in &sources {
        let mut probe = Engine::new();
        probe.set_rego_v0(false);
        match probe.add_policy(src.path.clone(), src.contents.clone()) {
            Err(e) => errors.push(PolicyError::from_regorus(
                &src.path,
                &e.to_string(),
                Stage::Parse,
            )),
            Ok(package) => {
                let facts = scan(&src.contents);
                let (row, col) = facts.package_pos.unwrap_or((1, 1));
                for (name, r, c) in &facts.forbidden {
                    errors.push(PolicyError::new(
                        &src.path,
                        *r,
                        *c,
                        forbidden_message(name),
                        Stage::Validate,
                    ));
                }
                if package.starts_with("data.portcullis.__") {
                    errors.push(PolicyError::new(
                        &src.path,
                        row,
                        col,
                        format!("package {} is reserved", &package["data.".len()..]),
                        Stage::Validate,
                    ));
                    continue;
                }
                if let Some(name) = package.strip_prefix(POLICY_PREFIX) {
                    if !is_policy_name(name) {
                        errors.push(PolicyError::new(
                            &src.path,
                            row,
                            col,
                            format!(
                                "policy package must be portcullis.policy.<name> with name matching [a-z][a-z0-9_]*, got {}",
                                &package["data.".len()..]
                            ),
                            Stage::Validate,
                        ));
                        continue;
                    }
                }
                if let Err(e) = engine.add_policy(src.path.clone(), src.contents.clone()) {
                    errors.push(PolicyError::from_regorus(
                        &src.path,
                        &e.to_string(),
                        Stage::Parse,
                    ));
                    continue;
                }
                parsed.push(Parsed {
                    file: src.path.clone(),
                    package,
                    facts,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ErrorReport::new(errors));
    }
    errors.extend(unused_modules(&parsed, &engine));

    // Policies (by name) and their declared rules.
    let mut policies: BTreeMap<String, PolicyMeta> = BTreeMap::new();
    let mut libraries = BTreeSet::new();
    let mut library_tests = Vec::new();
    for p in &parsed {
        let Some(name) = p.package.strip_prefix(POLICY_PREFIX) else {
            libraries.insert(p.package.clone());
            for t in &p.facts.test_rules {
                library_tests.push((p.package.clone(), t.clone()));
            }
            continue;
        };
        let has_allow = engine
            .has_declared_rule_rooted_at(&p.file, "allow")
            .unwrap_or(false);
        let has_deny = engine
            .has_declared_rule_rooted_at(&p.file, "deny")
            .unwrap_or(false);
        let meta = policies
            .entry(name.to_owned())
            .or_insert_with(|| PolicyMeta {
                name: name.to_owned(),
                file: p.file.clone(),
                has_allow: false,
                has_deny: false,
                default_allow: false,
                default_deny: false,
                non_deterministic: Vec::new(),
                cacheable: true,
                test_rules: Vec::new(),
                declared_mode: None,
                mask: FieldMask::default(),
            });
        meta.has_allow |= has_allow;
        meta.has_deny |= has_deny;
        meta.default_allow |= p.facts.defaults.contains("allow");
        meta.default_deny |= p.facts.defaults.contains("deny");
        for t in &p.facts.test_rules {
            if !meta.test_rules.contains(t) {
                meta.test_rules.push(t.clone());
            }
        }
    }
    for meta in policies.values() {
        if !meta.has_allow && !meta.has_deny {
            let pos = parsed
                .iter()
                .find(|p| p.file == meta.file)
                .and_then(|p| p.facts.package_pos)
                .unwrap_or((1, 1));
            errors.push(PolicyError::new(
                &meta.file,
                pos.0,
                pos.1,
                format!("policy {} defines neither `allow` nor `deny`", meta.name),
                Stage::Validate,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ErrorReport::new(errors));
    }

    // Static facts: reachable modules → cacheability and the input fields read.
    for meta in policies.values_mut() {
        let pkg = format!("{POLICY_PREFIX}{}", meta.name);
        let closure = reachable(&pkg, &parsed);
        let mut mask = FieldMask::default();
        let mut nd = BTreeSet::new();
        for p in &closure {
            if p.facts.input_dynamic {
                mask = FieldMask::ALL;
            }
            for f in &p.facts.input_fields {
                mask = mask.union(FieldMask(FieldMask::for_field(f)));
            }
            nd.extend(p.facts.non_deterministic.iter().cloned());
        }
        meta.cacheable = nd.is_empty() && !mask.has(FieldMask::NOW);
        meta.non_deterministic = nd.into_iter().collect();
        meta.mask = mask;
    }

    // Stage 2: interpreter compile with the generated wrapper.
    let metas: Vec<PolicyMeta> = policies.into_values().collect();
    let wrapper = wrapper_source(&metas);
    if let Err(e) = engine.add_policy(WRAPPER_FILE.to_owned(), wrapper) {
        return Err(ErrorReport::new(vec![PolicyError::from_regorus(
            WRAPPER_FILE,
            &e.to_string(),
            Stage::Compile,
        )]));
    }
    let compiled = match engine.compile_with_entrypoint(&ENTRY_ALL.into()) {
        Ok(c) => c,
        Err(e) => {
            return Err(ErrorReport::new(vec![PolicyError::from_regorus(
                WRAPPER_FILE,
                &e.to_string(),
                Stage::Compile,
            )]))
        }
    };

    // Declared modes: `mode` must be a constant "active", "shadow" or "disabled".
    let mut metas = metas;
    for meta in metas.iter_mut() {
        let declares = parsed.iter().any(|p| {
            p.package.strip_prefix(POLICY_PREFIX) == Some(meta.name.as_str())
                && engine
                    .has_declared_rule_rooted_at(&p.file, "mode")
                    .unwrap_or(false)
        });
        if !declares {
            continue;
        }
        let mut probe = engine.clone();
        let value = probe.eval_rule(format!("{POLICY_PREFIX}{}.mode", meta.name));
        let mode = match value
            .as_ref()
            .ok()
            .and_then(|v| v.as_string().ok())
            .map(|s| s.to_string())
        {
            Some(m) if m == "active" => Some(PolicyMode::Active),
            Some(m) if m == "shadow" => Some(PolicyMode::Shadow),
            Some(m) if m == "disabled" => Some(PolicyMode::Disabled),
            _ => None,
        };
        match mode {
            Some(m) => meta.declared_mode = Some(m),
            None => errors.push(PolicyError::new(
                &meta.file,
                1,
                1,
                format!(
                    "policy {}: `mode` must be the constant \"active\", \"shadow\" or \"disabled\"",
                    meta.name
                ),
                Stage::Validate,
            )),
        }
    }
    if !errors.is_empty() {
        return Err(ErrorReport::new(errors));
    }

    // Stage 3: RVM compile each policy alone (so every broken policy is reported), then all.
    // `test_*` rules are not compiled: they run on the interpreter (the RVM lacks `with`).
    let entries: Vec<String> = (0..metas.len()).map(policy_entry).collect();
    for (i, meta) in metas.iter().enumerate() {
        if let Err(e) = Compiler::compile_from_policy(&compiled, &[entries[i].as_str()]) {
            errors.push(rvm_error(&meta.file, &e.to_string()));
        }
    }
    if !errors.is_empty() {
        errors.dedup();
        return Err(ErrorReport::new(errors));
    }
    let mut all_entries: Vec<&str> = vec![ENTRY_ALL];
    all_entries.extend(entries.iter().map(String::as_str));
    let program = match Compiler::compile_from_policy(&compiled, &all_entries) {
        Ok(p) => p,
        Err(e) => {
            return Err(ErrorReport::new(vec![rvm_error(
                WRAPPER_FILE,
                &e.to_string(),
            )]))
        }
    };

    if let Some(d) = &data {
        let mut probe = RegoVM::new();
        probe.load_program(program.clone());
        if let Err(e) = probe.set_data(d.clone()) {
            return Err(ErrorReport::new(vec![PolicyError::new(
                "data.json",
                1,
                1,
                format!("data document conflicts with the policies' rules: {e}"),
                Stage::Validate,
            )]));
        }
    }
    let index = metas
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    Ok(CompiledSet {
        policies: metas,
        index,
        libraries: libraries
            .into_iter()
            .map(|p| p.trim_start_matches("data.").to_owned())
            .collect(),
        sources,
        engine,
        library_tests,
        program,
        vms: Mutex::new(Vec::new()),
        data,
        revision,
    })
}

fn rvm_error(file: &str, diagnostic: &str) -> PolicyError {
    let mut e = PolicyError::from_regorus(file, diagnostic, Stage::RvmCompile);
    if let Some(name) = e
        .message
        .strip_prefix("Unknown function: '")
        .and_then(|m| m.strip_suffix('\''))
    {
        e.message = format!("unknown function {name}");
        e.stage = Stage::Validate;
    }
    e
}

fn forbidden_message(name: &str) -> String {
    match name {
        "http.send" => "http.send is not allowed: policies cannot make network calls (regorus would silently return undefined)".to_owned(),
        other => format!("{other} is not allowed in policies"),
    }
}

fn is_policy_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Modules that would never be evaluated: every module must be a policy
/// (`portcullis.policy.<name>`), a library some policy imports, or a test module.
///
/// "Imported" means reachable from a policy through static references: an
/// `import data.x.y` or a `data.x.y...` reference in a policy names package `x.y` (and
/// the packages under it), and a library so named imports further libraries the same
/// way. A dynamic `data[...]` lookup imports nothing, and neither does a test module.
/// A test module is a `*_test.rego` file that defines `test_*` rules and neither
/// `allow` nor `deny` (`portcullis policy test` runs it; requests never do).
///
/// Without this check a policy with a mistyped package (`portcullis.policies.x`) would
/// load as an unused library and its `deny` would silently never apply.
fn unused_modules(parsed: &[Parsed], engine: &Engine) -> Vec<PolicyError> {
    let is_policy = |p: &Parsed| p.package.starts_with(POLICY_PREFIX);
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut work: Vec<usize> = (0..parsed.len())
        .filter(|&i| is_policy(&parsed[i]))
        .collect();
    while let Some(i) = work.pop() {
        if !used.insert(i) {
            continue;
        }
        for (j, other) in parsed.iter().enumerate() {
            if !used.contains(&j) && references(&parsed[i].facts, &other.package) {
                work.push(j);
            }
        }
    }
    let mut errors = Vec::new();
    for (i, p) in parsed.iter().enumerate() {
        if used.contains(&i) || is_test_module(p, engine) {
            continue;
        }
        let package = p.package.trim_start_matches("data.");
        let (row, col) = p.facts.package_pos.unwrap_or((1, 1));
        let hint = package
            .rsplit('.')
            .next()
            .filter(|last| is_policy_name(last))
            .map(|last| format!(" (e.g. portcullis.policy.{last})"))
            .unwrap_or_default();
        errors.push(PolicyError::new(
            &p.file,
            row,
            col,
            format!(
                "package {package} would never be evaluated: a policy's package must be \
                 portcullis.policy.<name>{hint}, and a library's must be imported by a policy \
                 (import data.{package})"
            ),
            Stage::Validate,
        ));
    }
    errors
}

/// Whether a module's static `data.*` references name `package` (`data.`-prefixed):
/// the package itself, something inside it, or a parent of it.
fn references(facts: &ModuleFacts, package: &str) -> bool {
    let pkg = package.trim_start_matches("data.");
    facts.data_refs.iter().any(|r| {
        r == pkg
            || r.strip_prefix(pkg)
                .is_some_and(|rest| rest.starts_with('.'))
            || pkg
                .strip_prefix(r.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// A `*_test.rego` file with `test_*` rules and no `allow` or `deny`.
fn is_test_module(p: &Parsed, engine: &Engine) -> bool {
    let declares = |rule: &str| {
        engine
            .has_declared_rule_rooted_at(&p.file, rule)
            .unwrap_or(true)
    };
    p.file.ends_with("_test.rego")
        && !p.facts.test_rules.is_empty()
        && !declares("allow")
        && !declares("deny")
}

/// Modules reachable from `package` through `data.*` references (including itself).
fn reachable<'a>(package: &str, parsed: &'a [Parsed]) -> Vec<&'a Parsed> {
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut work: Vec<usize> = parsed
        .iter()
        .enumerate()
        .filter(|(_, p)| p.package == package)
        .map(|(i, _)| i)
        .collect();
    while let Some(i) = work.pop() {
        if !seen.insert(i) {
            continue;
        }
        let facts = &parsed[i].facts;
        for (j, other) in parsed.iter().enumerate() {
            if seen.contains(&j) {
                continue;
            }
            let other_pkg = other.package.trim_start_matches("data.");
            let referenced = facts.data_dynamic
                || facts.data_refs.iter().any(|r| {
                    r == other_pkg
                        || r.starts_with(&format!("{other_pkg}."))
                        || other_pkg.starts_with(&format!("{r}."))
                });
            if referenced {
                work.push(j);
            }
        }
    }
    seen.into_iter().map(|i| &parsed[i]).collect()
}

/// The wrapper module: `p<i>` is `{"allow": [allow] or [], "deny": [deny] or []}` and
/// `all` is the array of every `p<i>`, so one evaluation yields every policy's result.
fn wrapper_source(metas: &[PolicyMeta]) -> String {
    let mut s = format!("package {WRAPPER_PACKAGE}\nimport rego.v1\n\n");
    for (i, m) in metas.iter().enumerate() {
        let base = format!("{POLICY_PREFIX}{}", m.name);
        // A comprehension is never undefined: `[]` when the rule is undefined, `[v]` otherwise.
        if m.has_allow {
            s.push_str(&format!("a{i} := [v | v := {base}.allow]\n"));
        } else {
            s.push_str(&format!("a{i} := []\n"));
        }
        if m.has_deny {
            s.push_str(&format!("d{i} := [v | v := {base}.deny]\n"));
        } else {
            s.push_str(&format!("d{i} := []\n"));
        }
        s.push_str(&format!("p{i} := {{\"allow\": a{i}, \"deny\": d{i}}}\n\n"));
    }
    let items: Vec<String> = (0..metas.len()).map(|i| format!("p{i}")).collect();
    s.push_str(&format!("all := [{}]\n", items.join(", ")));
    s
}

impl CompiledSet {
    /// Policies in name order.
    pub fn policies(&self) -> &[PolicyMeta] {
        &self.policies
    }

    /// Library packages (without the `data.` prefix).
    pub fn libraries(&self) -> &[String] {
        &self.libraries
    }

    /// The sources the set was compiled from.
    pub fn sources(&self) -> &[SourceFile] {
        &self.sources
    }

    /// Which policy set this is: a bundle's manifest revision, or a hash of the sources.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Index of a policy by name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Runs `f` with a VM loaded with this set's program, reusing pooled VMs.
    /// The closure returns its result and whether the VM is still healthy; a VM that saw
    /// an execution error is dropped rather than reused.
    pub(crate) fn with_vm<R>(&self, f: impl FnOnce(&mut RegoVM) -> (R, bool)) -> R {
        let pooled = self.vms.lock().ok().and_then(|mut v| v.pop());
        let mut vm = match pooled {
            Some(vm) => vm,
            None => {
                let mut vm = RegoVM::new();
                vm.load_program(self.program.clone());
                vm.set_max_instructions(MAX_INSTRUCTIONS);
                if let Some(d) = &self.data {
                    // Checked at compile time: a conflict cannot happen here.
                    let _ = vm.set_data(d.clone());
                }
                vm
            }
        };
        let (r, healthy) = f(&mut vm);
        if healthy {
            if let Ok(mut v) = self.vms.lock() {
                if v.len() < 64 {
                    v.push(vm);
                }
            }
        }
        r
    }
}
