//! Runs every `test_*` rule and every decision fixture under `config/policies`.

use portcullis_core::ManualClock;
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn example_policies_pass_their_tests_and_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/policies");
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let report = portcullis_policy::run_tests(&dir, clock).expect("policies compile");
    print!("{}", report.to_text());
    assert_eq!(report.failed, 0, "{}", report.to_text());
    assert!(report.results.iter().any(|r| r.kind == "rego"));
    assert!(
        report
            .results
            .iter()
            .filter(|r| r.kind == "fixture")
            .count()
            >= 20
    );
}
