//! Engine-level tests: combination through real Rego, bindings, modes, fail-closed,
//! cache behaviour, validation positions and atomic reload.

use crate::*;
use portcullis_core::{AgentMode, ManualClock, PolicyMode, Principal, Verdict};
use std::sync::Arc;
use std::time::Duration;

const ALLOW_OPENAI: &str = r#"package portcullis.policy.openai
import rego.v1

default allow := false
allow if input.request.host == "api.openai.com"
"#;

const DENY_DELETE: &str = r#"package portcullis.policy.no_delete
import rego.v1

deny contains "DELETE is not allowed" if input.request.method == "DELETE"
deny contains sprintf("path %s is blocked", [input.request.path]) if startswith(input.request.path, "/admin")
"#;

fn principal(id: &str, tenant: &str, groups: &[&str]) -> Principal {
    let mut p = Principal::anonymous();
    p.agent_id = Arc::from(id);
    p.tenant = Arc::from(tenant);
    p.groups = Arc::from(groups.iter().map(|g| g.to_string()).collect::<Vec<_>>());
    p
}

fn engine_with(sources: &[(&str, &str)], config: EngineConfig) -> (PolicyEngine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let srcs = sources
        .iter()
        .map(|(p, c)| SourceFile::new(*p, *c))
        .collect();
    let e = PolicyEngine::with_sources(config, clock.clone(), srcs).expect("valid policies");
    (e, clock)
}

fn http<'a>(p: &'a Principal, method: &'a str, host: &'a str, path: &'a str) -> PolicyInput<'a> {
    PolicyInput::new(RequestKind::Http, p).with_request(RequestFacts {
        method,
        scheme: "https",
        host,
        port: 443,
        path,
        ..Default::default()
    })
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        ("openai.rego", ALLOW_OPENAI),
        ("no_delete.rego", DENY_DELETE),
    ]
}

#[test]
fn allow_deny_and_none_allowing() {
    let (e, _) = engine_with(&base(), EngineConfig::default());
    let p = principal("demo", "default", &[]);
    let d = e
        .decide(&http(&p, "POST", "api.openai.com", "/v1/chat/completions"))
        .decision;
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.policy.as_deref(), Some("openai"));
    assert_eq!(d.evaluations.len(), 2);
    assert!(!d.decision_id.is_empty());

    let d = e
        .decide(&http(&p, "DELETE", "api.openai.com", "/admin/x"))
        .decision;
    assert!(!d.allowed);
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_DENIED));
    assert_eq!(d.policy.as_deref(), Some("no_delete"));
    assert_eq!(
        d.reasons,
        vec!["DELETE is not allowed", "path /admin/x is blocked"]
    );

    let d = e.decide(&http(&p, "GET", "example.com", "/")).decision;
    assert!(!d.allowed);
    assert_eq!(d.reasons, vec!["no policy allows this request"]);
}

#[test]
fn bindings_by_agent_group_and_tenant() {
    let bindings = vec![
        Binding {
            groups: vec!["research".into()],
            ..Binding::all("openai", PolicyMode::Active)
        },
        Binding {
            tenants: vec!["acme".into()],
            ..Binding::all("no_delete", PolicyMode::Active)
        },
    ];
    let cfg = EngineConfig {
        bindings,
        ..Default::default()
    };
    let (e, _) = engine_with(&base(), cfg);
    assert!(e.reload_status().warnings.is_empty());
    // In group research: openai applies and allows.
    let r = principal("r1", "other", &["research"]);
    let d = e
        .decide(&http(&r, "DELETE", "api.openai.com", "/"))
        .decision;
    assert!(d.allowed, "no_delete is bound to tenant acme only: {d:?}");
    assert_eq!(d.evaluations.len(), 1);
    // Not in the group, other tenant: nothing applies → default deny.
    let o = principal("o1", "other", &[]);
    let d = e.decide(&http(&o, "GET", "api.openai.com", "/")).decision;
    assert!(!d.allowed);
    assert!(d.evaluations.is_empty());
    assert_eq!(
        d.reasons,
        vec!["no policy applies to this request (default deny)"]
    );
    // Tenant acme in research: both apply, deny overrides.
    let a = principal("a1", "acme", &["research"]);
    let d = e
        .decide(&http(&a, "DELETE", "api.openai.com", "/"))
        .decision;
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("no_delete"));
    // By agent id.
    let cfg = EngineConfig {
        bindings: vec![Binding {
            agents: vec!["only_me".into()],
            ..Binding::all("openai", PolicyMode::Active)
        }],
        default: DefaultDecision::Allow,
        ..Default::default()
    };
    let (e, _) = engine_with(&[("openai.rego", ALLOW_OPENAI)], cfg);
    let me = principal("only_me", "t", &[]);
    assert_eq!(
        e.decide(&http(&me, "GET", "x.com", "/"))
            .decision
            .evaluations
            .len(),
        1
    );
    let other = principal("someone", "t", &[]);
    let d = e.decide(&http(&other, "GET", "x.com", "/")).decision;
    assert!(d.allowed, "no applicable policy and default allow");
    assert!(d.evaluations.is_empty());
}

#[test]
fn shadow_and_disabled_policy_modes_and_runtime_override() {
    let cfg = EngineConfig {
        bindings: vec![Binding::all("no_delete", PolicyMode::Shadow)],
        ..Default::default()
    };
    let (e, _) = engine_with(&base(), cfg);
    let p = principal("demo", "default", &[]);
    let d = e
        .decide(&http(&p, "DELETE", "api.openai.com", "/"))
        .decision;
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert_eq!(d.would_deny, vec!["no_delete"]);
    assert_eq!(d.reasons, vec!["DELETE is not allowed"]);
    // A shadow denial never turns a deny into an allow.
    let d = e.decide(&http(&p, "DELETE", "evil.com", "/")).decision;
    assert!(!d.allowed);
    assert_eq!(d.would_deny, vec!["no_delete"]);

    let v = e.version();
    e.set_mode("no_delete", PolicyMode::Active).unwrap();
    assert!(e.version() > v);
    let d = e
        .decide(&http(&p, "DELETE", "api.openai.com", "/"))
        .decision;
    assert!(!d.allowed, "override applies to the very next request");
    e.set_mode("openai", PolicyMode::Disabled).unwrap();
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert!(!d.allowed);
    assert_eq!(d.evaluations.len(), 1);
    assert!(matches!(
        e.set_mode("nope", PolicyMode::Active),
        Err(EngineError::UnknownPolicy(_))
    ));
    e.clear_mode("openai").unwrap();
    assert!(
        e.decide(&http(&p, "GET", "api.openai.com", "/"))
            .decision
            .allowed
    );
    let listed = e.list_policies();
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["no_delete", "openai"]
    );
    assert_eq!(listed[0].mode_override, Some(PolicyMode::Active));
}

#[test]
fn agent_modes() {
    let (e, _) = engine_with(&base(), EngineConfig::default());
    let mut p = principal("demo", "default", &[]);
    p.mode = AgentMode::Shadow;
    let d = e
        .decide(&http(&p, "DELETE", "api.openai.com", "/"))
        .decision;
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_DENIED));
    p.mode = AgentMode::Disabled;
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert!(!d.allowed);
    assert_eq!(d.code.as_deref(), Some(CODE_AGENT_DISABLED));
}

#[test]
fn fails_closed_on_errors_and_ill_typed_results() {
    let conflict = r#"package portcullis.policy.conflict
import rego.v1

default allow := false
allow := true if input.request.method == "GET"
allow := false if input.request.path == "/"
"#;
    let wrong_type = r#"package portcullis.policy.wrong
import rego.v1

allow := "yes"
"#;
    let wrong_deny = r#"package portcullis.policy.wrongdeny
import rego.v1

deny := true if input.request.method == "PUT"
"#;
    let (e, _) = engine_with(
        &[
            ("openai.rego", ALLOW_OPENAI),
            ("conflict.rego", conflict),
            ("wrong.rego", wrong_type),
            ("wrongdeny.rego", wrong_deny),
        ],
        EngineConfig::default(),
    );
    let p = principal("demo", "default", &[]);
    let before = e.stats().policy_errors;
    let out = e.decide(&http(&p, "GET", "api.openai.com", "/"));
    let d = &out.decision;
    assert!(out.policy_error);
    assert!(!d.allowed);
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_ERROR));
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("policy conflict failed")),
        "{:?}",
        d.reasons
    );
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("`allow` must be a boolean")),
        "{:?}",
        d.reasons
    );
    assert_eq!(e.stats().policy_errors, before + 1);
    // The conflict only fires on GET /; wrong is always ill-typed.
    let d = e.decide(&http(&p, "PUT", "api.openai.com", "/x")).decision;
    assert_eq!(d.code.as_deref(), Some(CODE_POLICY_ERROR));
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("`deny` must be a set of strings")),
        "{:?}",
        d.reasons
    );
    assert_eq!(d.policy.as_deref(), Some("wrong"));
}

#[test]
fn interpret_undefined_result_is_an_error() {
    let (e, _) = engine_with(&base(), EngineConfig::default());
    let set = e.compiled();
    let meta = &set.policies()[0];
    assert!(matches!(
        crate::eval::interpret(&regorus::Value::Undefined, meta),
        PolicyResult::Error(m) if m.contains("undefined")
    ));
    let no_slots = regorus::Value::new_object();
    assert!(matches!(
        crate::eval::interpret(&no_slots, meta),
        PolicyResult::Error(_)
    ));
}

#[test]
fn cache_hits_and_reload_invalidates() {
    let (e, clock) = engine_with(&base(), EngineConfig::default());
    let p = principal("demo", "default", &[]);
    let d1 = e.decide(&http(&p, "GET", "api.openai.com", "/a")).decision;
    assert!(!d1.cached);
    let d2 = e.decide(&http(&p, "GET", "api.openai.com", "/a")).decision;
    assert!(d2.cached);
    assert_eq!(d2.verdict, d1.verdict);
    assert_ne!(d1.decision_id, d2.decision_id);
    // A different decision-relevant field misses.
    assert!(
        !e.decide(&http(&p, "GET", "api.openai.com", "/b"))
            .decision
            .cached
    );
    // TTL.
    clock.advance(Duration::from_secs(61));
    assert!(
        !e.decide(&http(&p, "GET", "api.openai.com", "/a"))
            .decision
            .cached
    );
    // Reload with a changed policy: the very next request re-evaluates.
    let deny_all = r#"package portcullis.policy.openai
import rego.v1

deny contains "closed" if true
"#;
    e.reload_sources(vec![SourceFile::new("openai.rego", deny_all)])
        .unwrap();
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/a")).decision;
    assert!(!d.cached);
    assert!(!d.allowed);
    assert_eq!(d.reasons, vec!["closed"]);
    assert_eq!(e.stats().cache_hits, 1);
}

#[test]
fn non_deterministic_policies_are_not_cached() {
    let time_policy = r#"package portcullis.policy.hours
import rego.v1

allow if time.now_ns() > 0
"#;
    let lib = r#"package portcullis.lib.ids
import rego.v1

fresh := uuid.rfc4122("x")
"#;
    let uses_lib = r#"package portcullis.policy.uses_lib
import rego.v1
import data.portcullis.lib.ids

allow if ids.fresh != ""
"#;
    let reads_now = r#"package portcullis.policy.reads_now
import rego.v1

allow if input.now != ""
"#;
    for (name, sources) in [
        ("hours", vec![("p.rego", time_policy)]),
        (
            "uses_lib",
            vec![("p.rego", uses_lib), ("lib/ids.rego", lib)],
        ),
        ("reads_now", vec![("p.rego", reads_now)]),
    ] {
        let (e, _) = engine_with(&sources, EngineConfig::default());
        let meta = e
            .compiled()
            .policies()
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .unwrap();
        assert!(!meta.cacheable, "{name}");
        let p = principal("demo", "default", &[]);
        let d1 = e.decide(&http(&p, "GET", "x.com", "/"));
        let d2 = e.decide(&http(&p, "GET", "x.com", "/"));
        assert!(d1.decision.allowed, "{name}: {:?}", d1.decision);
        assert!(!d2.decision.cached, "{name}");
    }
    // A deterministic policy next to the library (and its user) is cacheable.
    let (e, _) = engine_with(
        &[
            ("o.rego", ALLOW_OPENAI),
            ("u.rego", uses_lib),
            ("lib/ids.rego", lib),
        ],
        EngineConfig::default(),
    );
    let set = e.compiled();
    let cacheable: Vec<(&str, bool)> = set
        .policies()
        .iter()
        .map(|m| (m.name.as_str(), m.cacheable))
        .collect();
    assert_eq!(cacheable, [("openai", true), ("uses_lib", false)]);
}

fn errors_of(sources: &[(&str, &str)]) -> Vec<PolicyError> {
    match compile(
        sources
            .iter()
            .map(|(p, c)| SourceFile::new(*p, *c))
            .collect(),
    ) {
        Ok(_) => panic!("expected errors"),
        Err(r) => r.errors,
    }
}

#[test]
fn broken_policies_report_positions() {
    let syntax = "package portcullis.policy.s\nimport rego.v1\n\nallow if {\n  input.kind == \"http\"\n  x := [1, 2\n}\n";
    let e = errors_of(&[("s.rego", syntax)]);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].file.as_str(), e[0].row, e[0].col, e[0].stage),
        ("s.rego", 7, 1, Stage::Parse)
    );
    assert!(e[0].message.contains("expecting `]`"), "{e:?}");

    let unknown = "package portcullis.policy.u\nimport rego.v1\n\nallow if foo(input.a)\n";
    let e = errors_of(&[("u.rego", unknown)]);
    assert_eq!((e[0].row, e[0].col), (4, 10), "{e:?}");
    assert_eq!(e[0].message, "unknown function foo");

    let http_send = "package portcullis.policy.h\nimport rego.v1\n\nallow if {\n  r := http.send({\"method\": \"get\", \"url\": \"http://x\"})\n  r.status_code == 200\n}\n";
    let e = errors_of(&[("h.rego", http_send)]);
    assert!(
        e.iter()
            .any(|x| x.row == 5 && x.col == 8 && x.message.starts_with("http.send is not allowed")),
        "{e:?}"
    );

    let neither = "package portcullis.policy.n\nimport rego.v1\n\nfoo := 1\n";
    let e = errors_of(&[("n.rego", neither)]);
    assert_eq!(e[0].row, 1);
    assert!(e[0].message.contains("neither"));

    let bad_name = "package portcullis.policy.a.b\nimport rego.v1\nallow := true\n";
    assert_eq!(errors_of(&[("b.rego", bad_name)])[0].stage, Stage::Validate);

    // Every broken file is reported, not just the first.
    let e = errors_of(&[
        ("s.rego", syntax),
        ("u2.rego", "package portcullis.policy.q\nallow if {\n"),
    ]);
    assert_eq!(e.len(), 2);
    let report = ErrorReport::new(e);
    assert!(report.to_text().starts_with("s.rego:7:1: "));
}

const HOSTS_LIB: &str =
    "package portcullis.lib.hosts\nimport rego.v1\n\nopenai := \"api.openai.com\"\n";

const OPENAI_VIA_LIB: &str = "package portcullis.policy.openai\nimport rego.v1\nimport data.portcullis.lib.hosts\n\nallow if input.request.host == hosts.openai\n";

#[test]
fn atomic_reload_keeps_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("openai.rego"), OPENAI_VIA_LIB).unwrap();
    std::fs::write(dir.path().join("lib/hosts.rego"), HOSTS_LIB).unwrap();
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let cfg = EngineConfig {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let e = PolicyEngine::open(cfg, clock).unwrap();
    assert_eq!(
        e.compiled().libraries(),
        &["portcullis.lib.hosts".to_owned()]
    );
    let p = principal("demo", "default", &[]);
    assert!(
        e.decide(&http(&p, "GET", "api.openai.com", "/"))
            .decision
            .allowed
    );
    let v1 = e.version();

    // Break a file: the previous set keeps serving, the status records the error.
    std::fs::write(
        dir.path().join("openai.rego"),
        "package portcullis.policy.openai\nallow if {\n",
    )
    .unwrap();
    let err = e.reload_from_dir().unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    let st = e.reload_status();
    assert!(!st.ok);
    assert_eq!(st.version, v1);
    assert_eq!(st.errors[0].file, "openai.rego");
    assert!(st.errors[0].row >= 2);
    assert!(
        e.decide(&http(&p, "GET", "api.openai.com", "/"))
            .decision
            .allowed
    );
    assert_eq!(e.stats().reloads_error, 1);

    // Fix it with a policy using the library: swapped in, next request sees it.
    std::fs::write(
        dir.path().join("openai.rego"),
        "package portcullis.policy.openai\nimport rego.v1\nimport data.portcullis.lib.hosts\n\nallow if input.request.host == hosts.openai\ndeny contains \"no GET\" if input.request.method == \"GET\"\n",
    )
    .unwrap();
    let st = e.reload_from_dir().unwrap();
    assert!(st.ok && st.version > v1);
    assert!(e.reload_status().errors.is_empty());
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert_eq!(d.reasons, vec!["no GET"]);
    assert!(
        e.decide(&http(&p, "POST", "api.openai.com", "/"))
            .decision
            .allowed
    );
}

#[test]
fn declared_mode_is_the_default_and_bindings_override_it() {
    let shadow = "package portcullis.policy.sh\nimport rego.v1\n\nmode := \"shadow\"\ndeny contains \"nope\" if true\n";
    let (e, _) = engine_with(
        &[("openai.rego", ALLOW_OPENAI), ("sh.rego", shadow)],
        EngineConfig::default(),
    );
    let p = principal("demo", "default", &[]);
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert!(d.allowed);
    assert_eq!(d.verdict, Verdict::WouldDeny);
    assert_eq!(d.would_deny, vec!["sh"]);
    let cfg = EngineConfig {
        bindings: vec![Binding::all("sh", PolicyMode::Active)],
        ..Default::default()
    };
    let (e, _) = engine_with(&[("openai.rego", ALLOW_OPENAI), ("sh.rego", shadow)], cfg);
    assert!(
        !e.decide(&http(&p, "GET", "api.openai.com", "/"))
            .decision
            .allowed
    );
    let dynamic =
        "package portcullis.policy.dy\nimport rego.v1\n\nmode := input.m\nallow := true\n";
    let e = errors_of(&[("dy.rego", dynamic)]);
    assert!(
        e[0].message.contains("`mode` must be the constant"),
        "{e:?}"
    );
}

#[test]
fn body_and_headers_reach_policies_that_read_them() {
    let body_policy = "package portcullis.policy.body\nimport rego.v1\n\ndeny contains \"no temperature\" if input.request.body.temperature > 1\nallow if input.request.headers[\"x-team\"] == \"blue\"\n";
    let (e, _) = engine_with(
        &[("openai.rego", ALLOW_OPENAI), ("body.rego", body_policy)],
        EngineConfig::default(),
    );
    let p = principal("demo", "default", &[]);
    let body = serde_json::json!({"temperature": 2});
    let mut h = http::HeaderMap::new();
    h.insert("x-team", "blue".parse().unwrap());
    let mut input = http(&p, "POST", "example.com", "/");
    input.request.body = Some(&body);
    input.request.headers = Some(&h);
    let d = e.decide(&input).decision;
    assert_eq!(d.reasons, vec!["no temperature"]);
    let cool = serde_json::json!({"temperature": 0});
    input.request.body = Some(&cool);
    let d = e.decide(&input).decision;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy.as_deref(), Some("body"));
    // Only the body policy applies: the per-policy path must still see body and headers.
    let cfg = EngineConfig {
        strategy: EvalStrategy::PerPolicy,
        ..Default::default()
    };
    let (e, _) = engine_with(
        &[("openai.rego", ALLOW_OPENAI), ("body.rego", body_policy)],
        cfg,
    );
    input.request.body = Some(&body);
    assert_eq!(e.decide(&input).decision.reasons, vec!["no temperature"]);
}

#[test]
fn engine_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
    let (e, _) = engine_with(&base(), EngineConfig::default());
    let e = Arc::new(e);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let p = principal("demo", "default", &[]);
                let path = format!("/{i}");
                (0..50)
                    .filter(|_| {
                        e.decide(&http(&p, "GET", "api.openai.com", &path))
                            .decision
                            .allowed
                    })
                    .count()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 50);
    }
    assert_eq!(e.stats().decisions, 200);
}

#[test]
fn simulator_traces_every_policy_and_matches_the_rvm() {
    let cfg = EngineConfig {
        bindings: vec![Binding {
            groups: vec!["ops".into()],
            ..Binding::all("no_delete", PolicyMode::Active)
        }],
        ..Default::default()
    };
    let (e, _) = engine_with(&base(), cfg);
    let p = principal("demo", "default", &["ops"]);
    let input = http(&p, "DELETE", "api.openai.com", "/admin");
    let sim = e.simulate(&input);
    let rvm = e.decide(&input).decision;
    assert_eq!(
        (sim.decision.verdict, &sim.decision.reasons),
        (rvm.verdict, &rvm.reasons)
    );
    assert_eq!(sim.trace.len(), 2);
    let nd = sim.trace.iter().find(|t| t.policy == "no_delete").unwrap();
    assert!(nd.applicable && nd.deny.len() == 2);
    assert_eq!(sim.input["request"]["method"], "DELETE");
    // Outside the group the policy is traced as not applicable.
    let q = principal("other", "default", &[]);
    let sim = e.simulate(&http(&q, "DELETE", "api.openai.com", "/admin"));
    assert!(sim.decision.allowed);
    assert!(
        !sim.trace
            .iter()
            .find(|t| t.policy == "no_delete")
            .unwrap()
            .applicable
    );
    // Raw documents: agent fields drive bindings and mode.
    let doc = serde_json::json!({
        "kind": "http",
        "agent": {"id": "x", "tenant": "default", "groups": ["ops"], "mode": "shadow"},
        "request": {"method": "DELETE", "host": "api.openai.com", "path": "/", "port": 443}
    });
    let sim = e.simulate_json(doc.clone()).unwrap();
    assert_eq!(sim.decision.verdict, Verdict::WouldDeny);
    assert_eq!(e.decide_json(doc).unwrap().verdict, Verdict::WouldDeny);
    assert!(e
        .simulate_json(serde_json::json!({"kind": "http"}))
        .is_err());
    let bad_mode = serde_json::json!({"agent": {"id": "x", "mode": "sideways"}});
    assert!(matches!(
        e.simulate_json(bad_mode),
        Err(EngineError::InvalidInput(_))
    ));
}

#[test]
fn validate_source_uses_active_libraries() {
    let (e, _) = engine_with(
        &[
            ("openai.rego", ALLOW_OPENAI),
            (
                "user.rego",
                &OPENAI_VIA_LIB.replace("policy.openai", "policy.user"),
            ),
            ("lib/hosts.rego", HOSTS_LIB),
        ],
        EngineConfig::default(),
    );
    let good = "package portcullis.policy.new\nimport rego.v1\nimport data.portcullis.lib.hosts\n\nallow if input.request.host == hosts.openai\n";
    assert!(e.validate_source("new", good).is_empty());
    let bad = "package portcullis.policy.new\nimport rego.v1\n\nallow if nope(1)\n";
    let errs = e.validate_source("new", bad);
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].file.as_str(), errs[0].row), ("new.rego", 4));
    // The source is checked as part of the set a reload would load: a library nobody
    // imports is refused, and so is an edit that leaves an active library unused.
    let lib = "package portcullis.lib.extra\nimport rego.v1\n\nx := 1\n";
    let errs = e.validate_source("lib/extra.rego", lib);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].file.as_str(), errs[0].row), ("lib/extra.rego", 1));
    let user_without_lib = "package portcullis.policy.user\nimport rego.v1\n\nallow := true\n";
    let errs = e.validate_source("user.rego", user_without_lib);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].file, "lib/hosts.rego");
    assert!(errs[0]
        .message
        .contains("portcullis.lib.hosts would never be evaluated"));
    // Validation never changes the active set.
    assert_eq!(e.compiled().policies().len(), 2);
}

#[test]
fn token_requests_see_requested_scopes() {
    let token_policy = "package portcullis.policy.tokens\nimport rego.v1\n\ndefault allow := false\nallow if input.kind == \"token\"\ndeny contains sprintf(\"scope %s may not be requested\", [s]) if {\n  input.kind == \"token\"\n  some s in input.token.scopes\n  startswith(s, \"admin:\")\n}\n";
    let (e, _) = engine_with(&[("t.rego", token_policy)], EngineConfig::default());
    let p = principal("demo", "default", &[]);
    let requested = portcullis_core::TokenInfo {
        scopes: vec!["admin:all".into(), "openai:chat:create".into()],
        exp: 1_800_000_600,
        jti: "j".into(),
    };
    let input = PolicyInput {
        token: Some(&requested),
        ..PolicyInput::new(RequestKind::Token, &p)
    };
    let d = e.decide(&input).decision;
    assert_eq!(d.reasons, vec!["scope admin:all may not be requested"]);
}

#[test]
fn fixture_failures_are_reported() {
    let sources = vec![SourceFile::new("openai.rego", ALLOW_OPENAI)];
    let fixture = r#"
cases:
  - name: right
    input: {kind: http, agent: {id: a}, request: {host: api.openai.com}}
    verdict: allow
    policy: openai
  - name: wrong
    input: {kind: http, agent: {id: a}, request: {host: api.openai.com}}
    verdict: deny
"#;
    let mut report = TestReport::default();
    let clock = Arc::new(ManualClock::at(1));
    run_fixture_text(&sources, "f.yaml", fixture, clock.clone(), &mut report).unwrap();
    assert_eq!((report.passed, report.failed), (1, 1));
    assert!(report.results[1]
        .message
        .as_deref()
        .unwrap()
        .contains("verdict allow (expected deny)"));
    assert!(report.to_text().ends_with("1 passed, 1 failed\n"));
    let unknown_key = "cases:\n  - {name: x, input: {}, verdict: allow, surprise: 1}\n";
    assert!(run_fixture_text(&sources, "g.yaml", unknown_key, clock, &mut report).is_err());
}

#[test]
fn coverage_reports_evaluated_lines() {
    let (e, _) = engine_with(&base(), EngineConfig::default());
    let doc = serde_json::json!({
        "kind": "http",
        "agent": {"id": "x"},
        "request": {"method": "DELETE", "host": "api.openai.com", "path": "/", "port": 443}
    });
    let cov = e.coverage_json(&doc).unwrap();
    let nd = cov.iter().find(|f| f.path == "no_delete.rego").unwrap();
    assert!(nd.covered.contains(&4), "{cov:?}");
    assert!(cov.iter().all(|f| !f.path.starts_with('<')));
}

#[test]
fn runaway_policies_hit_the_instruction_limit_and_fail_closed() {
    let runaway = "package portcullis.policy.runaway\nimport rego.v1\n\nallow if {\n  input.request.method == \"GET\"\n  n := count([1 | some i in numbers.range(1, 1500); some j in numbers.range(1, 1500)])\n  n > 0\n}\n";
    let (e, _) = engine_with(
        &[("openai.rego", ALLOW_OPENAI), ("runaway.rego", runaway)],
        EngineConfig::default(),
    );
    let p = principal("demo", "default", &[]);
    let out = e.decide(&http(&p, "GET", "api.openai.com", "/"));
    assert!(out.policy_error);
    assert!(!out.decision.allowed);
    assert_eq!(out.decision.policy.as_deref(), Some("runaway"));
    assert!(
        out.decision.reasons[0]
            .to_lowercase()
            .contains("instruction"),
        "{:?}",
        out.decision.reasons
    );
    // The engine keeps serving: the runaway branch is not taken for POST.
    let d = e.decide(&http(&p, "POST", "api.openai.com", "/")).decision;
    assert!(d.allowed, "{d:?}");
}

#[test]
fn bindings_for_unknown_policies_are_reported() {
    let cfg = EngineConfig {
        bindings: vec![Binding::all("typo", PolicyMode::Shadow)],
        ..Default::default()
    };
    let (e, _) = engine_with(&base(), cfg);
    assert_eq!(
        e.reload_status().warnings,
        vec!["binding names unknown policy \"typo\""]
    );
}

#[test]
fn one_pass_and_per_policy_strategies_agree() {
    let conflict = "package portcullis.policy.conflict\nimport rego.v1\n\ndefault allow := false\nallow := true if input.request.method == \"GET\"\nallow := false if input.request.path == \"/\"\n";
    let mk = |strategy| {
        let cfg = EngineConfig {
            strategy,
            cache_ttl: Duration::ZERO,
            ..Default::default()
        };
        engine_with(
            &[
                ("openai.rego", ALLOW_OPENAI),
                ("no_delete.rego", DENY_DELETE),
                ("conflict.rego", conflict),
            ],
            cfg,
        )
        .0
    };
    let one = mk(EvalStrategy::OnePass);
    let per = mk(EvalStrategy::PerPolicy);
    let p = principal("demo", "default", &[]);
    for (m, h, path) in [
        ("GET", "api.openai.com", "/"),
        ("GET", "api.openai.com", "/x"),
        ("DELETE", "api.openai.com", "/admin"),
        ("POST", "example.com", "/"),
    ] {
        let a = one.decide(&http(&p, m, h, path)).decision;
        let b = per.decide(&http(&p, m, h, path)).decision;
        assert_eq!(
            (a.verdict, &a.reasons, &a.policy, &a.code, &a.evaluations),
            (b.verdict, &b.reasons, &b.policy, &b.code, &b.evaluations),
            "{m} {h}{path}"
        );
    }
    assert_eq!(
        one.decide(&http(&p, "GET", "api.openai.com", "/"))
            .decision
            .code
            .as_deref(),
        Some(CODE_POLICY_ERROR)
    );
}

/// A bundle's data document is `data.*` for its policies, its revision is on every decision,
/// and a broken bundle keeps the last good set (as a broken file does).
#[test]
fn bundles_bring_data_and_a_revision_and_a_broken_one_keeps_the_last_good() {
    let policy = br#"package portcullis.policy.hosts
import rego.v1

allow if input.request.host in data.acme.hosts
"#;
    let v1 = build_bundle(
        "rev-1",
        &["portcullis", "acme"],
        &[
            ("/portcullis/hosts.rego", policy),
            ("/acme/data.json", br#"{"hosts": ["api.openai.com"]}"#),
        ],
    );
    let bundle = read_bundle(&v1, &BundleLimits::default()).unwrap();
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let e = PolicyEngine::with_bundle(EngineConfig::default(), clock, bundle).unwrap();
    let p = principal("bot", "acme", &[]);
    let d = e.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.revision.as_deref(), Some("rev-1"));
    assert!(
        !e.decide(&http(&p, "GET", "evil.example", "/"))
            .decision
            .allowed
    );
    assert_eq!(e.reload_status().revision, "rev-1");

    // A new revision with new data applies to the next request.
    let v2 = build_bundle(
        "rev-2",
        &["portcullis", "acme"],
        &[
            ("/portcullis/hosts.rego", policy),
            ("/acme/data.json", br#"{"hosts": ["evil.example"]}"#),
        ],
    );
    e.reload_bundle(read_bundle(&v2, &BundleLimits::default()).unwrap())
        .unwrap();
    let d = e.decide(&http(&p, "GET", "evil.example", "/")).decision;
    assert!(d.allowed);
    assert_eq!(d.revision.as_deref(), Some("rev-2"));

    // A bundle whose policy does not compile, and data that collides with a rule: both keep
    // rev-2 and are reported.
    let broken = build_bundle(
        "rev-3",
        &[""],
        &[("/p.rego", b"package portcullis.policy.p\nallow if {\n")],
    );
    assert!(e
        .reload_bundle(read_bundle(&broken, &BundleLimits::default()).unwrap())
        .is_err());
    let st = e.reload_status();
    assert!(!st.ok);
    assert_eq!(st.revision, "rev-2");
    assert_eq!(st.errors[0].file, "p.rego");
    let clash = build_bundle(
        "rev-4",
        &[""],
        &[
            ("/hosts.rego", policy),
            (
                "/data.json",
                br#"{"portcullis": {"policy": {"hosts": {"allow": 1}}}, "acme": {"hosts": []}}"#,
            ),
        ],
    );
    assert!(e
        .reload_bundle(read_bundle(&clash, &BundleLimits::default()).unwrap())
        .is_err());
    assert_eq!(e.revision(), "rev-2");
    let e2 = e.record_bundle_error("bundle", "not a readable .tar.gz bundle");
    assert!(e2.to_string().contains("bundle"), "{e2}");
    assert_eq!(e.reload_status().errors[0].file, "bundle");
    assert!(
        e.decide(&http(&p, "GET", "evil.example", "/"))
            .decision
            .allowed
    );
}

/// A policy directory's revision is a hash of its files: the same files, the same revision.
#[test]
fn a_file_set_revision_is_a_hash_of_the_files() {
    let (a, _) = engine_with(&base(), EngineConfig::default());
    let (b, _) = engine_with(&base(), EngineConfig::default());
    assert!(a.revision().starts_with("sha256:"), "{}", a.revision());
    assert_eq!(a.revision(), b.revision());
    let p = principal("bot", "acme", &[]);
    let d = a.decide(&http(&p, "GET", "api.openai.com", "/")).decision;
    assert_eq!(d.revision, Some(a.revision()));
    a.reload_sources(vec![SourceFile::new("openai.rego", ALLOW_OPENAI)])
        .unwrap();
    assert_ne!(a.revision(), b.revision());
}
