//! Running compiled policies on the RVM and interpreting their results.

use crate::combine::PolicyResult;
use crate::compile::{CompiledSet, PolicyMeta, ENTRY_ALL};
use crate::plan::{Applicable, EvalStrategy};
use regorus::Value;

/// Evaluates the applicable policies on the VM, per policy or in one pass (see
/// [`EvalStrategy`]).
pub(crate) fn evaluate_rvm(
    set: &CompiledSet,
    applicable: &[Applicable],
    input: Value,
    strategy: EvalStrategy,
) -> Vec<PolicyResult> {
    if applicable.is_empty() {
        return Vec::new();
    }
    let one_pass = one_pass(strategy, applicable.len(), set.policies.len());
    set.with_vm(|vm| {
        vm.set_input(input);
        if !one_pass {
            return per_policy(vm, set, applicable);
        }
        match vm.execute_entry_point_by_index(0) {
            Ok(Value::Array(items)) if items.len() == set.policies.len() => {
                let results = applicable
                    .iter()
                    .map(|a| {
                        interpret(
                            items.get(a.index).unwrap_or(&Value::Undefined),
                            &set.policies[a.index],
                        )
                    })
                    .collect();
                (results, true)
            }
            Ok(other) => {
                let msg = format!("{ENTRY_ALL} is {}", kind_of(&other));
                let results = applicable
                    .iter()
                    .map(|_| PolicyResult::Error(format!("undefined result ({msg})")))
                    .collect();
                (results, true)
            }
            // One failure fails the whole pass: re-run policies one by one so only the
            // failing policy is reported.
            Err(_) => {
                let (results, _) = per_policy(vm, set, applicable);
                (results, false)
            }
        }
    })
}

fn per_policy(
    vm: &mut regorus::rvm::vm::RegoVM,
    set: &CompiledSet,
    applicable: &[Applicable],
) -> (Vec<PolicyResult>, bool) {
    let mut healthy = true;
    let results = applicable
        .iter()
        .map(|a| {
            let r = run_entry(vm, a.index, &set.policies[a.index]);
            if matches!(r, PolicyResult::Error(_)) {
                healthy = false;
            }
            r
        })
        .collect();
    (results, healthy)
}

pub(crate) fn one_pass(strategy: EvalStrategy, applicable: usize, total: usize) -> bool {
    match strategy {
        EvalStrategy::OnePass => applicable > 0 && total > 0,
        EvalStrategy::Auto | EvalStrategy::PerPolicy => false,
    }
}

fn run_entry(vm: &mut regorus::rvm::vm::RegoVM, index: usize, meta: &PolicyMeta) -> PolicyResult {
    match vm.execute_entry_point_by_index(index + 1) {
        Ok(v) => interpret(&v, meta),
        Err(e) => PolicyResult::Error(first_line(&e.to_string())),
    }
}

pub(crate) fn first_line(s: &str) -> String {
    let t = s.trim();
    t.rsplit_once("error: ")
        .map(|(_, m)| m)
        .unwrap_or(t)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Set(_) => "a set",
        Value::Object(_) => "an object",
        Value::Undefined => "undefined",
    }
}

/// Interprets one `{"allow": [v] | [], "deny": [v] | []}` wrapper value.
///
/// An undefined `allow` means "does not allow" unless the policy declares `default allow`:
/// then only conflicting definitions can make it undefined, which is an error. The same
/// holds for `deny`. Ill-typed values are errors. Errors fail closed.
pub(crate) fn interpret(v: &Value, meta: &PolicyMeta) -> PolicyResult {
    let Value::Object(obj) = v else {
        return PolicyResult::Error(format!(
            "undefined result (policy result is {})",
            kind_of(v)
        ));
    };
    let slot = |key: &str| -> Result<Option<Value>, String> {
        match obj.get(&Value::from(key)) {
            // The RVM may yield `[undefined]` where the interpreter yields `[]`.
            Some(Value::Array(a)) => Ok(a.iter().find(|x| !matches!(x, Value::Undefined)).cloned()),
            other => Err(format!(
                "undefined result (`{key}` slot is {})",
                other.map(kind_of).unwrap_or("missing")
            )),
        }
    };
    let allow = match slot("allow") {
        Err(e) => return PolicyResult::Error(e),
        Ok(None) if meta.default_allow => {
            return PolicyResult::Error(
                "`allow` is undefined despite its default (conflicting definitions)".to_owned(),
            )
        }
        Ok(None) => false,
        Ok(Some(Value::Bool(b))) => b,
        Ok(Some(other)) => {
            return PolicyResult::Error(format!(
                "`allow` must be a boolean, got {}",
                kind_of(&other)
            ))
        }
    };
    let mut deny: Vec<String> = Vec::new();
    let mut push = |x: &Value| match x {
        Value::String(s) => deny.push(s.to_string()),
        other => deny.push(crate::input::value_to_json(other).to_string()),
    };
    match slot("deny") {
        Err(e) => return PolicyResult::Error(e),
        Ok(None) if meta.default_deny => {
            return PolicyResult::Error(
                "`deny` is undefined despite its default (conflicting definitions)".to_owned(),
            )
        }
        Ok(None) => {}
        Ok(Some(Value::Set(s))) => s.iter().for_each(&mut push),
        Ok(Some(Value::Array(a))) => a.iter().for_each(&mut push),
        Ok(Some(other)) => {
            return PolicyResult::Error(format!(
                "`deny` must be a set of strings, got {}",
                kind_of(&other)
            ))
        }
    }
    deny.sort();
    deny.dedup();
    PolicyResult::Evaluated { allow, deny }
}
