//! Which packages a policy set may contain: every module is a policy, a library some
//! policy imports (directly or through other libraries), or a `*_test.rego` test module.
//! Anything else is refused at its `package` line instead of being silently ignored.

use crate::*;
use portcullis_core::{ManualClock, Principal};
use std::sync::Arc;

const POLICY: &str = "package portcullis.policy.base\nimport rego.v1\n\nallow := true\n";

fn check(sources: &[(&str, &str)]) -> Vec<PolicyError> {
    let srcs = sources
        .iter()
        .map(|(p, c)| SourceFile::new(*p, *c))
        .collect();
    match compile(srcs) {
        Ok(_) => Vec::new(),
        Err(r) => r.errors,
    }
}

/// The single error of `sources`, as (file, row, col, message).
fn one_error(sources: &[(&str, &str)]) -> (String, u32, u32, String) {
    let errs = check(sources);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert_eq!(e.stage, Stage::Validate, "{e:?}");
    (e.file.clone(), e.row, e.col, e.message.clone())
}

#[test]
fn a_foreign_package_is_refused_at_its_package_line() {
    let src = "# Deny deletes.\n\npackage acme.policy.no_delete\nimport rego.v1\n\ndeny contains \"no\" if input.request.method == \"DELETE\"\n";
    let (file, row, col, msg) = one_error(&[("base.rego", POLICY), ("no_delete.rego", src)]);
    assert_eq!((file.as_str(), row, col), ("no_delete.rego", 3, 1));
    assert_eq!(
        msg,
        "package acme.policy.no_delete would never be evaluated: a policy's package must be \
         portcullis.policy.<name> (e.g. portcullis.policy.no_delete), and a library's must be \
         imported by a policy (import data.acme.policy.no_delete)"
    );
    // Alone, too: a set of nothing but a foreign package is not "ok".
    assert_eq!(one_error(&[("no_delete.rego", src)]).1, 3);
}

#[test]
fn a_typo_in_the_policy_prefix_is_refused_with_the_right_name() {
    let src = "package portcullis.policies.guard\nimport rego.v1\n\ndeny contains \"x\" if true\n";
    let (file, row, _, msg) = one_error(&[("base.rego", POLICY), ("guard.rego", src)]);
    assert_eq!((file.as_str(), row), ("guard.rego", 1));
    assert!(
        msg.starts_with("package portcullis.policies.guard would never be evaluated")
            && msg.contains("portcullis.policy.guard"),
        "{msg}"
    );
    let singular =
        "package portcullis.polcy.guard\nimport rego.v1\n\ndeny contains \"x\" if true\n";
    assert!(one_error(&[("guard.rego", singular)])
        .3
        .contains("(e.g. portcullis.policy.guard)"));
}

#[test]
fn nested_policy_packages_are_refused() {
    let src =
        "package portcullis.policy.team.guard\nimport rego.v1\n\ndeny contains \"x\" if true\n";
    let (file, row, _, msg) = one_error(&[("base.rego", POLICY), ("team/guard.rego", src)]);
    assert_eq!((file.as_str(), row), ("team/guard.rego", 1));
    assert!(
        msg.contains("portcullis.policy.<name>") && msg.contains("portcullis.policy.team.guard"),
        "{msg}"
    );
}

#[test]
fn a_library_is_accepted_only_when_a_policy_imports_it() {
    let lib = "package portcullis.lib.hosts\nimport rego.v1\n\nopenai := \"api.openai.com\"\n";
    let imports = "package portcullis.policy.p\nimport rego.v1\nimport data.portcullis.lib.hosts\n\nallow if input.request.host == hosts.openai\n";
    assert!(check(&[("p.rego", imports), ("lib/hosts.rego", lib)]).is_empty());
    // A full `data.` reference counts as an import.
    let refers = "package portcullis.policy.p\nimport rego.v1\n\nallow if input.request.host == data.portcullis.lib.hosts.openai\n";
    assert!(check(&[("p.rego", refers), ("lib/hosts.rego", lib)]).is_empty());
    // So does importing a parent package.
    let parent = "package portcullis.policy.p\nimport rego.v1\nimport data.portcullis.lib\n\nallow if input.request.host == lib.hosts.openai\n";
    assert!(check(&[("p.rego", parent), ("lib/hosts.rego", lib)]).is_empty());

    // Nobody imports it.
    let (file, row, _, msg) = one_error(&[("base.rego", POLICY), ("lib/hosts.rego", lib)]);
    assert_eq!((file.as_str(), row), ("lib/hosts.rego", 1));
    assert!(msg.contains("import data.portcullis.lib.hosts"), "{msg}");
    // A mention in a comment or a string imports nothing; neither does a dynamic lookup.
    let mentions = "package portcullis.policy.p\nimport rego.v1\n\n# data.portcullis.lib.hosts\nallow if \"data.portcullis.lib.hosts\" != data[\"portcullis\"]\n";
    assert_eq!(
        one_error(&[("p.rego", mentions), ("lib/hosts.rego", lib)]).0,
        "lib/hosts.rego"
    );
    // A sibling package with a common prefix is not the imported one.
    let sibling = "package portcullis.lib.hostsx\nimport rego.v1\n\ny := 1\n";
    assert_eq!(
        one_error(&[
            ("p.rego", imports),
            ("lib/hosts.rego", lib),
            ("lib/hostsx.rego", sibling)
        ])
        .0,
        "lib/hostsx.rego"
    );
}

#[test]
fn libraries_imported_by_imported_libraries_are_used() {
    let base = "package portcullis.lib.base\nimport rego.v1\n\nlimit := 10\n";
    let mid = "package portcullis.lib.mid\nimport rego.v1\nimport data.portcullis.lib.base\n\ncap := base.limit * 2\n";
    let user = "package portcullis.policy.p\nimport rego.v1\nimport data.portcullis.lib.mid\n\nallow if mid.cap > 0\n";
    assert!(check(&[
        ("p.rego", user),
        ("lib/mid.rego", mid),
        ("lib/base.rego", base)
    ])
    .is_empty());
    // The chain starts at a policy: libraries importing each other are not enough.
    let errs = check(&[
        ("base.rego", POLICY),
        ("lib/mid.rego", mid),
        ("lib/base.rego", base),
    ]);
    let files: Vec<&str> = errs.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(files, ["lib/base.rego", "lib/mid.rego"], "{errs:?}");
}

#[test]
fn test_modules_are_accepted_but_import_nothing() {
    let lib = "package portcullis.lib.hosts\nimport rego.v1\n\nopenai := \"api.openai.com\"\n";
    let user = "package portcullis.policy.p\nimport rego.v1\nimport data.portcullis.lib.hosts\n\nallow if input.request.host == hosts.openai\n";
    let test = "package portcullis.lib.hosts_test\nimport rego.v1\nimport data.portcullis.lib.hosts\n\ntest_openai if hosts.openai == \"api.openai.com\"\n";
    assert!(check(&[
        ("p.rego", user),
        ("lib/hosts.rego", lib),
        ("lib/hosts_test.rego", test)
    ])
    .is_empty());
    // Only a test imports the library: the library is refused (its policy is gone).
    assert_eq!(
        one_error(&[
            ("base.rego", POLICY),
            ("lib/hosts.rego", lib),
            ("lib/hosts_test.rego", test)
        ])
        .0,
        "lib/hosts.rego"
    );
    // A `_test.rego` file with a deny is a misplaced policy, not a test module.
    let with_deny = "package portcullis.checks_test\nimport rego.v1\n\ndeny contains \"x\" if true\ntest_x if true\n";
    assert_eq!(
        one_error(&[("base.rego", POLICY), ("checks_test.rego", with_deny)]).0,
        "checks_test.rego"
    );
    // Test rules in a file not named `*_test.rego` make no test module.
    let misnamed = "package portcullis.checks\nimport rego.v1\n\ntest_x if true\n";
    assert_eq!(
        one_error(&[("base.rego", POLICY), ("checks.rego", misnamed)]).0,
        "checks.rego"
    );
}

#[test]
fn the_shipped_set_has_no_unused_module() {
    let set = compile(example_sources()).expect("the shipped set compiles");
    assert_eq!(
        set.libraries(),
        ["portcullis.lib.catalog", "portcullis.lib.catalog_test"]
    );
}

#[test]
fn a_reload_with_a_foreign_package_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.rego"), POLICY).unwrap();
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let cfg = EngineConfig {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let e = PolicyEngine::open(cfg.clone(), clock.clone()).unwrap();
    let v1 = e.version();
    let p = Principal::anonymous();
    let input = PolicyInput::new(RequestKind::Http, &p).with_request(RequestFacts {
        method: "DELETE",
        host: "example.com",
        path: "/x",
        ..Default::default()
    });
    assert!(e.decide(&input).decision.allowed);

    std::fs::write(
        dir.path().join("no_delete.rego"),
        "package portcullis.policies.no_delete\nimport rego.v1\n\ndeny contains \"no deletes\" if input.request.method == \"DELETE\"\n",
    )
    .unwrap();
    let err = e.reload_from_dir().unwrap_err();
    let EngineError::Invalid(report) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        report.to_text().lines().next().unwrap_or(""),
        "no_delete.rego:1:1: package portcullis.policies.no_delete would never be evaluated: a \
         policy's package must be portcullis.policy.<name> (e.g. portcullis.policy.no_delete), \
         and a library's must be imported by a policy (import data.portcullis.policies.no_delete)"
    );
    let st = e.reload_status();
    assert!(!st.ok);
    assert_eq!((st.version, st.policies), (v1, 1));
    assert_eq!(
        (st.errors[0].file.as_str(), st.errors[0].row),
        ("no_delete.rego", 1)
    );
    assert_eq!(e.stats().reloads_error, 1);
    assert!(
        e.decide(&input).decision.allowed,
        "the last good set serves"
    );

    // A start with it fails like a compile error.
    assert!(matches!(
        PolicyEngine::open(cfg, clock),
        Err(EngineError::Invalid(_))
    ));

    // Fixing the package applies the deny.
    std::fs::write(
        dir.path().join("no_delete.rego"),
        "package portcullis.policy.no_delete\nimport rego.v1\n\ndeny contains \"no deletes\" if input.request.method == \"DELETE\"\n",
    )
    .unwrap();
    assert!(e.reload_from_dir().unwrap().ok);
    assert_eq!(e.decide(&input).decision.reasons, ["no deletes"]);
}
