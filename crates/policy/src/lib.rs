//! Rego policy engine of Portcullis (DESIGN §4).
//!
//! Policies are `.rego` files with `package portcullis.policy.<name>` defining `allow`
//! (boolean) and/or `deny` (set of reason strings); other packages (`portcullis.lib.*`)
//! are libraries and must be imported by a policy (or be `*_test.rego` test modules):
//! anything else is refused, never silently ignored. [`compile`] validates a set in
//! stages (parse, compile, RVM compile, forbidden builtins) and compiles it to regorus RVM
//! bytecode: a generated wrapper gives one entry point per policy and one for all
//! policies in one pass (per policy is the default, see [`EvalStrategy`]).
//! [`PolicyEngine`] holds the active set behind `arc-swap`, applies bindings and modes,
//! combines results (deny-overrides, fail closed), caches decisions and reloads
//! atomically. [`build_input`] is the one builder of the input document from the data
//! plane's facts (the gateway, the simulator and `policy eval` all use it, with
//! [`inspect_buffered`] for the body). The tree-walking interpreter serves the simulator
//! and test runner. No sockets, no async except the optional directory watch.
#![warn(missing_docs)]

mod binding;
mod bundle;
mod cache;
mod combine;
mod compile;
mod engine;
mod error;
mod eval;
mod facts;
mod ids;
mod input;
mod loader;
mod mask;
mod overrides;
mod plan;
mod scan;
mod simulate;
mod stub;
mod testing;
mod watch;

pub use binding::{Binding, DefaultDecision, OnBlock, Subject};
pub use bundle::{build_bundle, read_bundle, Bundle, BundleError, BundleLimits};
pub use combine::{
    combine, Applied, Combined, PolicyResult, CODE_AGENT_DISABLED, CODE_POLICY_DENIED,
    CODE_POLICY_ERROR,
};
pub use compile::{
    compile, compile_with_data, sources_revision, CompiledSet, PolicyMeta, SourceFile,
    POLICY_PREFIX,
};
pub use engine::{
    EngineConfig, EngineStats, PolicyEngine, PolicyOutcome, PolicySummary, ReloadStatus,
};
pub use error::{EngineError, ErrorReport, PolicyError, Stage};
pub use facts::{build_input, inspect_buffered, ExchangeFacts, Inspected};
pub use ids::DecisionIds;
pub use input::{
    is_credential_header, parse_query, rfc3339, value_to_json, LlmFacts, McpFacts, PolicyInput,
    RequestFacts, RequestKind, UsageFacts,
};
pub use loader::{example_sources, read_dir};
pub use overrides::{
    method_override, AMBIGUOUS_METHOD, METHOD_OVERRIDE_HEADERS, METHOD_OVERRIDE_PARAM,
};
pub use plan::EvalStrategy;
pub use simulate::{
    decision_json, principal_json, validate_sources, validate_with, with_principal, CoverageFile,
    PolicyTrace, Simulation,
};
pub use stub::{refusal_text, stub_response, StubFormat, StubResponse};
pub use testing::{run_fixture_text, run_rego_tests, run_tests, TestReport, TestResult};
pub use watch::{watch, WatchHandle};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod package_tests;
