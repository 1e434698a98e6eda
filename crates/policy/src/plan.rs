//! The evaluation plan of one request: which policies apply, in which mode, and how the
//! RVM runs them. Built by the engine, carried out by `eval`.

use crate::binding::OnBlock;
use portcullis_core::PolicyMode;

/// How the applicable policies of a request are evaluated on the RVM.
///
/// Measured on the example set (4 policies, all applicable; `benches/eval.rs`, loaded 2-core
/// machine): one entry point per policy 43–55 µs, one pass over the generated wrapper
/// 49–53 µs, i.e. equal within noise. Per policy also skips policies that do not apply and
/// isolates a failing policy without a second run, so `Auto` evaluates per policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvalStrategy {
    /// The measured faster strategy (currently per policy).
    #[default]
    Auto,
    /// Always one pass over every policy.
    OnePass,
    /// Always one entry point per applicable policy.
    PerPolicy,
}

/// One applicable policy for a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applicable {
    pub(crate) index: usize,
    pub(crate) mode: PolicyMode,
    pub(crate) on_block: Option<OnBlock>,
}
