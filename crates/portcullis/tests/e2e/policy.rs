//! End-to-end policy: the real `portcullis` binary deciding real curl requests
//! with Rego from a watched directory; hot reload, broken edits, shadow mode,
//! agent modes, default deny, `kind=token`, and the `policy` CLI.
//! Every wait is bounded; nothing asserts on timing.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lets agents reach the local origin, except under `/big` (left to the default).
const ALLOW: &str = r#"package portcullis.policy.test_allow

import rego.v1

allow if {
	input.request.host == "127.0.0.1"
	not startswith(input.request.path, "/big")
}

allow if input.kind == "token"
"#;

fn guard(denied_prefix: &str) -> String {
    format!(
        r#"package portcullis.policy.guard

import rego.v1

deny contains "path {denied_prefix} is off limits" if {{
	startswith(input.request.path, "{denied_prefix}")
}}

deny contains "scope stripe:customer:write may not be put in a token" if {{
	input.kind == "token"
	"stripe:customer:write" in input.token.scopes
}}
"#
    )
}

const NO_TUNNELS: &str = r#"package portcullis.policy.no_tunnels

import rego.v1

deny contains "tunnels to this port are not allowed" if {
	input.kind == "connect"
	input.request.port == TUNNEL_PORT
}
"#;

struct Setup {
    gw: Gateway,
    origin: Origin,
    user: String,
    secret: String,
}

impl Setup {
    /// `{ORIGIN_PORT}` in `extra_config` is replaced by the origin's port.
    fn new(extra_config: &str, extra_ports: &[u16], extra_files: Vec<(String, Vec<u8>)>) -> Self {
        let origin = Origin::start();
        let mut ports = vec![origin.port()];
        ports.extend_from_slice(extra_ports);
        let mut files = vec![
            (
                "policies/test_allow.rego".to_owned(),
                ALLOW.as_bytes().to_vec(),
            ),
            (
                "policies/guard.rego".to_owned(),
                guard("/echo/forbidden").into_bytes(),
            ),
        ];
        files.extend(extra_files);
        let gw = Gateway::launch(GatewayOpts {
            auth: true,
            proxy_lines: loopback_proxy_section(&ports),
            rest: format!(
                "\n[policy]\ndir = \"{{DIR}}/policies\"\n{}",
                extra_config.replace("{ORIGIN_PORT}", &origin.port().to_string())
            ),
            files,
        });
        let secret = gw.demo_secret();
        Self {
            gw,
            origin,
            user: "demo".to_owned(),
            secret,
        }
    }

    fn proxy_with_creds(&self) -> String {
        format!("http://{}:{}@{}", self.user, self.secret, self.gw.proxy)
    }

    /// curl GET `path` on the origin through the proxy: (status, headers, body).
    fn curl(&self, path: &str) -> (u16, String, String) {
        let hdr = self.gw.dir().join(format!("hdr-{}", std::process::id()));
        let hdr = unique(&hdr);
        let out = curl(&[
            "-x",
            &self.proxy_with_creds(),
            "-D",
            &hdr.display().to_string(),
            "-w",
            "\n%{http_code}",
            &self.origin.url(path),
        ]);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status");
        let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
        let _ = std::fs::remove_file(&hdr);
        (
            code.trim().parse().expect("status"),
            headers,
            body.to_owned(),
        )
    }

    fn status(&self, path: &str) -> u16 {
        self.curl(path).0
    }

    fn policy_file(&self, name: &str) -> PathBuf {
        self.gw.dir().join("policies").join(name)
    }
}

fn unique(base: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    base.with_extension(n.to_string())
}

/// Header `name` from a `curl -D` dump (last response).
fn dumped_header(dump: &str, name: &str) -> Option<String> {
    let last = dump.rsplit("HTTP/").next().unwrap_or("");
    last.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn assert_denied(status: u16, headers: &str, body: &str, policy: &str, reason: &str) -> Value {
    assert_eq!(status, 403, "{headers}{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["code"], "policy_denied", "{v}");
    assert_eq!(v["policy"], policy, "{v}");
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains(reason)),
        "{v}"
    );
    let id = v["decision_id"].as_str().expect("decision_id");
    assert!(!id.is_empty());
    assert_eq!(
        dumped_header(headers, "x-portcullis-decision-id").as_deref(),
        Some(id),
        "{headers}"
    );
    v
}

/// Writes a file atomically enough for the watcher (write then rename).
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn allowed_passes_denied_gets_403_json_with_matching_decision_id() {
    let s = Setup::new("", &[], vec![]);
    let (status, _, body) = s.curl("/echo/ok");
    assert_eq!(status, 200, "{body}");

    let (status, headers, body) = s.curl("/echo/forbidden/thing");
    let v = assert_denied(
        status,
        &headers,
        &body,
        "guard",
        "path /echo/forbidden is off limits",
    );
    assert_eq!(
        dumped_header(&headers, "x-portcullis-error").as_deref(),
        Some("policy_denied")
    );
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(4),
        "exactly detail, code, policy, decision_id: {v}"
    );

    // Nothing matching → default deny (no policy allows /big).
    let before = s.origin.requests();
    let (status, _, body) = s.curl("/big/cl");
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], "policy_denied", "{v}");
    assert!(
        v["decision_id"].as_str().is_some_and(|d| !d.is_empty()),
        "{v}"
    );
    assert_eq!(
        s.origin.requests(),
        before,
        "denied requests never reach the origin"
    );

    let m = s.gw.metrics();
    assert!(
        m.value(
            "portcullis_policy_decisions_total",
            &[("policy", "guard"), ("mode", "active"), ("result", "deny")]
        ) >= 1.0,
        "{}",
        m.0
    );
    assert!(
        m.value(
            "portcullis_policy_decisions_total",
            &[("policy", "test_allow"), ("result", "allow")]
        ) >= 1.0,
        "{}",
        m.0
    );
    assert!(
        m.get("portcullis_policy_eval_duration_seconds_count", &[])
            .is_some(),
        "{}",
        m.0
    );
}

#[test]
fn connect_denial_keeps_reason_phrase_and_error_header() {
    let tls = Origin::start_tls();
    let policy = NO_TUNNELS.replace("TUNNEL_PORT", &tls.port().to_string());
    let s = Setup::new(
        "",
        &[tls.port()],
        vec![("policies/no_tunnels.rego".to_owned(), policy.into_bytes())],
    );
    let req = format!(
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nProxy-Authorization: {}\r\n\r\n",
        basic("demo", &s.secret),
        p = tls.port()
    );
    let r = send_raw(s.gw.proxy, req.as_bytes());
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        !r.reason.is_empty() && r.reason != "Forbidden",
        "reason phrase: {:?}",
        r.reason
    );
    assert_eq!(
        r.header("x-portcullis-error"),
        Some("policy_denied"),
        "{r:?}"
    );
    let id = r
        .header("x-portcullis-decision-id")
        .expect("decision id")
        .to_owned();
    if !r.body.is_empty() {
        let v = r.json();
        assert_eq!(v["decision_id"], id.as_str(), "{v}");
        assert_eq!(v["policy"], "no_tunnels", "{v}");
    }
    // curl sees the refused tunnel too.
    let cert = tls.cert_pem.as_ref().expect("pem").display().to_string();
    let out = curl(&[
        "-x",
        &s.proxy_with_creds(),
        "--cacert",
        &cert,
        "-w",
        "%{http_connect}",
        &format!("https://127.0.0.1:{}/echo", tls.port()),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("403"));
}

#[test]
fn editing_a_policy_applies_without_restart_and_a_broken_edit_keeps_the_last_good_set() {
    let s = Setup::new("", &[], vec![]);
    assert_eq!(s.status("/echo/forbidden"), 403);
    assert_eq!(s.status("/echo/changed"), 200);

    // Edit: move the denial to another path. Once the reload is counted, the very
    // next requests see the new set (the decision cache is keyed by the set version).
    let ok_before =
        s.gw.metrics()
            .value("portcullis_policy_reloads_total", &[("result", "ok")]);
    replace_file(&s.policy_file("guard.rego"), &guard("/echo/changed"));
    s.gw.metrics_until("the edit is reloaded", |m| {
        m.value("portcullis_policy_reloads_total", &[("result", "ok")]) > ok_before
    });
    assert_eq!(
        s.status("/echo/changed"),
        403,
        "the very next request after the reload"
    );
    assert_eq!(
        s.status("/echo/forbidden"),
        200,
        "cached deny must not survive the reload"
    );
    let (status, headers, body) = s.curl("/echo/changed/x");
    assert_denied(
        status,
        &headers,
        &body,
        "guard",
        "path /echo/changed is off limits",
    );
    let reloads_ok =
        s.gw.metrics()
            .value("portcullis_policy_reloads_total", &[("result", "ok")]);
    assert!(reloads_ok >= 1.0);

    // Broken edit: an expression missing its right-hand side (reported at 7:1, the `}`).
    let errors_before =
        s.gw.metrics()
            .value("portcullis_policy_reloads_total", &[("result", "error")]);
    let broken = "package portcullis.policy.guard\n\nimport rego.v1\n\n\
                  deny contains \"x\" if {\n\tinput.kind == \n}\n";
    replace_file(&s.policy_file("guard.rego"), broken);
    s.gw.metrics_until("a failed reload is counted", |m| {
        m.value("portcullis_policy_reloads_total", &[("result", "error")]) > errors_before
    });
    // The previous behaviour stays.
    assert_eq!(s.status("/echo/changed"), 403);
    assert_eq!(s.status("/echo/forbidden"), 200);
    let r = s.gw.admin_get("/readyz");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let v = r.json();
    let errs = find_key(&v, "errors").unwrap_or_else(|| panic!("no errors in {v}"));
    let errs: Vec<String> = errs
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| {
            e.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string())
        })
        .collect();
    assert!(
        errs.iter()
            .any(|e| has_file_line_col(e, "guard.rego") && e.contains("guard.rego:7:1")),
        "readyz errors lack file:line:col: {text}"
    );
    assert!(text.contains("\"error\""), "last_reload error: {text}");
    let log = strip_ansi(&s.gw.stderr());
    // The log names the file, row and column (as text or as structured fields).
    assert!(
        log.lines().any(|l| has_file_line_col(l, "guard.rego")
            || (l.contains("guard.rego") && l.contains("row=7") && l.contains("col="))),
        "the log lacks file:line:col"
    );

    // Fixing it recovers.
    replace_file(&s.policy_file("guard.rego"), &guard("/echo/forbidden"));
    s.gw.eventually(
        "the fixed policy applies",
        || (s.status("/echo/changed"), s.status("/echo/forbidden")),
        |v| *v == (200, 403),
    );
    let r = s.gw.admin_get("/readyz");
    assert_eq!(r.status, 200);
    let errs = find_key(&r.json(), "errors")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(errs.as_array().is_none_or(|a| a.is_empty()), "{errs}");

    // A new file is picked up too; removing it drops it.
    let extra = s.policy_file("extra.rego");
    replace_file(
        &extra,
        "package portcullis.policy.extra\n\nimport rego.v1\n\n\
         deny contains \"extra says no\" if input.request.path == \"/echo/extra\"\n",
    );
    s.gw.eventually(
        "a new policy file applies",
        || s.status("/echo/extra"),
        |v| *v == 403,
    );
    std::fs::remove_file(&extra).expect("rm");
    s.gw.eventually(
        "a removed policy file stops applying",
        || s.status("/echo/extra"),
        |v| *v == 200,
    );
}

fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// Whether `s` mentions `file` followed by `:LINE:COL`.
fn has_file_line_col(s: &str, file: &str) -> bool {
    s.match_indices(file).any(|(i, _)| {
        let rest = &s[i + file.len()..];
        let mut parts = rest.splitn(3, ':');
        parts.next() == Some("")
            && parts
                .next()
                .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

#[test]
fn shadow_binding_lets_the_request_through_and_counts_the_would_deny() {
    let s = Setup::new(
        "\n[[policy.bindings]]\npolicy = \"guard\"\nmode = \"shadow\"\n",
        &[],
        vec![],
    );
    let (status, headers, body) = s.curl("/echo/forbidden");
    assert_eq!(status, 200, "{headers}{body}");
    assert!(body.contains("/echo/forbidden"), "{body}");
    let m = s.gw.metrics();
    assert!(
        m.value(
            "portcullis_policy_decisions_total",
            &[("policy", "guard"), ("mode", "shadow"), ("result", "deny")]
        ) >= 1.0,
        "{}",
        m.0
    );
    // A shadow policy never turns a deny into an allow: /big is still default-denied.
    assert_eq!(s.status("/big/cl"), 403);
}

#[test]
fn agent_mode_disabled_is_403_agent_disabled_and_shadow_agent_passes() {
    let s = Setup::new("", &[], vec![]);
    let secret = s.gw.create_agent("mode_bot", "default", &[]);
    let auth = basic("mode_bot", &secret);
    let url = s.origin.url("/echo/forbidden");
    let status = |s: &Setup| proxy_send(s.gw.proxy, "GET", &url, Some(&auth), &[]).status;
    s.gw.eventually("agent known", || status(&s), |v| *v == 403);

    s.gw.cli_ok(&["agent", "set", "mode_bot", "--mode", "shadow"]);
    s.gw.eventually("agent shadow mode applies", || status(&s), |v| *v == 200);

    s.gw.cli_ok(&["agent", "set", "mode_bot", "--mode", "disabled"]);
    s.gw.eventually("agent disabled applies", || status(&s), |v| *v == 403);
    let r = proxy_send(
        s.gw.proxy,
        "GET",
        &s.origin.url("/echo/ok"),
        Some(&auth),
        &[],
    );
    r.assert_error(403, "agent_disabled");
}

#[test]
fn token_kind_deny_is_403_invalid_scope_with_the_reason() {
    let s = Setup::new("", &[], vec![]);
    let secret = s.gw.create_agent(
        "pay_bot",
        "default",
        &["--scopes", "stripe:customer:read,stripe:customer:write"],
    );
    let call = |scope: &str| {
        let body = format!("grant_type=client_credentials&scope={scope}");
        let req = format!(
            "POST /oauth/token HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Authorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            basic("pay_bot", &secret),
            body.len()
        );
        send_raw(s.gw.proxy, req.as_bytes())
    };
    let r = s.gw.eventually(
        "the agent can get a read token",
        || call("stripe:customer:read"),
        |r| r.status == 200,
    );
    assert!(r.json()["access_token"].is_string());
    let r = call("stripe:customer:write");
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"], "invalid_scope", "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("may not be put in a token")),
        "{v}"
    );
    let m = s.gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_tokens_issued_total",
            &[("result", "invalid_scope")]
        ),
        1.0
    );
    assert!(
        m.value(
            "portcullis_policy_decisions_total",
            &[("policy", "guard"), ("result", "deny")]
        ) >= 1.0
    );
}

// ---------------------------------------------------------------- CLI

fn portcullis(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.current_dir(cwd).args(args);
    for k in ["PORTCULLIS_CONFIG", "PORTCULLIS_LOG"] {
        cmd.env_remove(k);
    }
    cmd.output().expect("run portcullis")
}

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/policies")
}

#[test]
fn policy_check_reports_file_row_col_and_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    write_file(dir.path(), "ok.rego", ALLOW.as_bytes());
    write_file(
        dir.path(),
        "bad.rego",
        b"package portcullis.policy.bad\n\nimport rego.v1\n\nallow if {\n\tinput.kind ==\n}\n",
    );
    let d = dir.path().display().to_string();
    let out = portcullis(&["policy", "check", &d], dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.lines().any(|l| has_file_line_col(l, "bad.rego")),
        "{text}"
    );
    assert!(!text.contains("ok.rego:"), "{text}");

    let out = portcullis(&["policy", "check", &d, "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let s = v.to_string();
    assert!(s.contains("bad.rego"), "{s}");
    assert!(
        find_key(&v, "row").is_some() || find_key(&v, "line").is_some(),
        "{s}"
    );

    // Unknown builtins and http.send are refused.
    let dir2 = tempfile::tempdir().expect("tmp");
    write_file(
        dir2.path(),
        "send.rego",
        b"package portcullis.policy.send\n\nimport rego.v1\n\nallow if {\n\
          \tr := http.send({\"method\": \"GET\", \"url\": \"http://x\"})\n\tr.status_code == 200\n}\n",
    );
    let out = portcullis(
        &["policy", "check", &dir2.path().display().to_string()],
        dir2.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| has_file_line_col(l, "send.rego")),
        "{text}"
    );

    // The shipped set is clean.
    let out = portcullis(
        &["policy", "check", &repo_policies().display().to_string()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn policy_test_passes_on_the_shipped_set_and_fails_on_a_wrong_fixture() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = portcullis(
        &["policy", "test", &repo_policies().display().to_string()],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A failing rego test exits 1.
    write_file(
        dir.path(),
        "t.rego",
        b"package portcullis.policy.t\n\nimport rego.v1\n\nallow if input.kind == \"http\"\n\n\
          test_wrong if allow with input as {\"kind\": \"connect\"}\n",
    );
    let out = portcullis(
        &["policy", "test", &dir.path().display().to_string()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("test_wrong"));

    // A fixture expecting the wrong verdict fails, naming the case; a right one passes.
    let fx = tempfile::tempdir().expect("tmp");
    write_file(fx.path(), "guard.rego", guard("/echo/forbidden").as_bytes());
    write_file(fx.path(), "allow.rego", ALLOW.as_bytes());
    std::fs::create_dir_all(fx.path().join("tests")).expect("mkdir");
    let case = |name: &str, path: &str, verdict: &str| {
        format!(
            "  - name: {name}\n    agent: {{id: demo, tenant: default}}\n    input:\n      kind: http\n      \
             request: {{method: GET, scheme: http, host: 127.0.0.1, port: 80, path: {path}}}\n    \
             verdict: {verdict}\n"
        )
    };
    let good = format!(
        "cases:\n{}{}",
        case("forbidden path is denied", "/echo/forbidden", "deny"),
        case("other paths pass", "/echo/ok", "allow")
    );
    write_file(&fx.path().join("tests"), "good.yaml", good.as_bytes());
    let d = fx.path().display().to_string();
    let out = portcullis(&["policy", "test", &d], fx.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = format!(
        "cases:\n{}",
        case("wrongly expected allow", "/echo/forbidden", "allow")
    );
    write_file(&fx.path().join("tests"), "bad.yaml", bad.as_bytes());
    let out = portcullis(&["policy", "test", &d], fx.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrongly expected allow"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn policy_eval_prints_the_decision() {
    let dir = tempfile::tempdir().expect("tmp");
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).expect("mkdir");
    write_file(&pol, "test_allow.rego", ALLOW.as_bytes());
    write_file(&pol, "guard.rego", guard("/echo/forbidden").as_bytes());
    let cfg = write_file(
        dir.path(),
        "portcullis.toml",
        format!("[policy]\ndir = \"{}\"\n", pol.display()).as_bytes(),
    );
    let input = |path: &str| {
        serde_json::json!({
            "kind": "http",
            "agent": {"id": "demo", "tenant": "default", "groups": [], "risk_level": "LOW",
                      "mode": "active", "attributes": {}, "scopes": []},
            "request": {"method": "GET", "scheme": "http", "host": "127.0.0.1", "port": 80,
                        "path": path, "query": {}, "headers": {}}
        })
    };
    let cfg_s = cfg.display().to_string();
    for (path, allowed) in [("/echo/forbidden", false), ("/echo/fine", true)] {
        let f = write_file(
            dir.path(),
            "input.json",
            serde_json::to_vec(&input(path)).expect("json").as_slice(),
        );
        let out = portcullis(
            &[
                "policy",
                "eval",
                "--input",
                &f.display().to_string(),
                "--config",
                &cfg_s,
            ],
            dir.path(),
        );
        // 0 when the decision allows, 1 when it denies.
        assert_eq!(
            out.status.code(),
            Some(if allowed { 0 } else { 1 }),
            "{out:?}"
        );
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let allowed_v = find_key(&v, "allowed")
            .and_then(Value::as_bool)
            .unwrap_or_else(|| panic!("no allowed in {v}"));
        assert_eq!(allowed_v, allowed, "{path}: {v}");
        let s = v.to_string();
        assert!(
            s.contains("guard") && s.contains("test_allow"),
            "every policy's result: {s}"
        );
        if !allowed {
            assert!(s.contains("path /echo/forbidden is off limits"), "{s}");
        }
    }
}

#[test]
fn bindings_by_group_and_agent_and_subagent_input() {
    let sub_policy = r#"package portcullis.policy.subagents

import rego.v1

deny contains "sub-agent scraper may not call the origin" if input.subagent == "scraper"
"#;
    let s = Setup::new(
        "\n[[policy.bindings]]\npolicy = \"guard\"\ngroups = [\"restricted\"]\n\
         \n[[policy.bindings]]\npolicy = \"guard\"\nagents = [\"named_bot\"]\nmode = \"active\"\n",
        &[],
        vec![(
            "policies/subagents.rego".to_owned(),
            sub_policy.as_bytes().to_vec(),
        )],
    );
    let restricted =
        s.gw.create_agent("group_bot", "default", &["--groups", "restricted,other"]);
    let named = s.gw.create_agent("named_bot", "default", &[]);
    let free =
        s.gw.create_agent("free_bot", "default", &["--groups", "other"]);
    let url = s.origin.url("/echo/forbidden");
    let st = |id: &str, secret: &str| {
        proxy_send(s.gw.proxy, "GET", &url, Some(&basic(id, secret)), &[]).status
    };
    // free_bot is outside both bindings: guard does not apply, test_allow allows.
    s.gw.eventually("free_bot known", || st("free_bot", &free), |v| *v == 200);
    s.gw.eventually(
        "group_bot known",
        || st("group_bot", &restricted),
        |v| *v == 403,
    );
    s.gw.eventually("named_bot known", || st("named_bot", &named), |v| *v == 403);
    // demo is in no group either.
    assert_eq!(s.status("/echo/forbidden"), 200);
    let r = proxy_send(
        s.gw.proxy,
        "GET",
        &url,
        Some(&basic("group_bot", &restricted)),
        &[],
    );
    let v = r.assert_error(403, "policy_denied");
    assert_eq!(v["policy"], "guard", "{v}");

    // The sub-agent is in the input (and the header is validated first).
    let auth = basic("free_bot", &free);
    let ok = s.origin.url("/echo/ok");
    let r = proxy_send(
        s.gw.proxy,
        "GET",
        &ok,
        Some(&auth),
        &["X-Portcullis-Subagent: scraper"],
    );
    let v = r.assert_error(403, "policy_denied");
    assert_eq!(v["policy"], "subagents", "{v}");
    assert_eq!(
        v["detail"], "sub-agent scraper may not call the origin",
        "{v}"
    );
    let r = proxy_send(
        s.gw.proxy,
        "GET",
        &ok,
        Some(&auth),
        &["X-Portcullis-Subagent: summarizer"],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn default_allow_decides_only_when_no_policy_applies() {
    // guard applies to bound_bot only; for demo no policy applies, so the default decides.
    let origin = Origin::start();
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[origin.port()]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\ndefault = \"allow\"\n\
               \n[[policy.bindings]]\npolicy = \"guard\"\nagents = [\"bound_bot\"]\n"
            .to_owned(),
        files: vec![(
            "policies/guard.rego".to_owned(),
            guard("/echo/forbidden").into_bytes(),
        )],
    });
    assert!(gw.banner.contains("default=ALLOW"), "{}", gw.banner);
    let auth = basic("demo", &gw.demo_secret());
    for path in ["/echo/ok", "/echo/forbidden"] {
        let r = proxy_send(gw.proxy, "GET", &origin.url(path), Some(&auth), &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    // An applicable policy that denies still wins; one that merely does not allow
    // (guard has no allow rule) denies too: the default is only for "nothing applies".
    let bound = gw.create_agent("bound_bot", "default", &[]);
    let bauth = basic("bound_bot", &bound);
    let st = |path: &str| proxy_send(gw.proxy, "GET", &origin.url(path), Some(&bauth), &[]);
    let r = gw.eventually(
        "bound_bot known",
        || st("/echo/forbidden"),
        |r| r.status == 403,
    );
    assert_eq!(r.json()["policy"], "guard");
    let r = st("/echo/ok");
    let v = r.assert_error(403, "policy_denied");
    assert!(v["policy"].is_null(), "{v}");
}

#[test]
fn a_policy_failing_at_runtime_fails_closed() {
    // Conflicting values for a complete rule are an evaluation error (on /echo/boom only).
    let failing = r#"package portcullis.policy.failing

import rego.v1

default allow := false

allow := true if startswith(input.request.path, "/echo/boom")

allow := false if startswith(input.request.path, "/echo/boom")
"#;
    let s = Setup::new(
        "",
        &[],
        vec![(
            "policies/failing.rego".to_owned(),
            failing.as_bytes().to_vec(),
        )],
    );
    let before = s.origin.requests();
    let (status, headers, body) = s.curl("/echo/boom");
    assert_eq!(
        status, 403,
        "an erroring policy must not let a request through: {body}"
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], "policy_error", "{v}");
    assert_eq!(
        dumped_header(&headers, "x-portcullis-decision-id").as_deref(),
        v["decision_id"].as_str()
    );
    assert_eq!(s.origin.requests(), before);
    assert!(s.gw.metrics().value("portcullis_policy_errors_total", &[]) >= 1.0);
    assert_eq!(s.status("/echo/ok"), 200);
}

#[test]
fn policy_eval_with_an_agent_from_the_store() {
    let s = Setup::new("", &[], vec![]);
    s.gw.create_agent(
        "eval_bot",
        "acme",
        &["--groups", "restricted", "--risk", "HIGH"],
    );
    let input = serde_json::json!({
        "kind": "http",
        "request": {"method": "GET", "scheme": "http", "host": "127.0.0.1", "port": 80,
                    "path": "/echo/forbidden", "query": {}, "headers": {}}
    });
    let f = write_file(
        s.gw.dir(),
        "input.json",
        serde_json::to_vec(&input).expect("json").as_slice(),
    );
    let cfg = s.gw.config_path().display().to_string();
    let out = s.gw.cli(&[
        "policy",
        "eval",
        "--input",
        &f.display().to_string(),
        "--agent",
        "eval_bot",
        "--config",
        &cfg,
    ]);
    assert_eq!(out.status.code(), Some(1), "denied: {out:?}");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        find_key(&v, "allowed").and_then(Value::as_bool),
        Some(false),
        "{v}"
    );
    let agent = find_key(&v, "input")
        .and_then(|i| i.get("agent"))
        .unwrap_or_else(|| panic!("no input.agent in {v}"));
    assert_eq!(agent["id"], "eval_bot", "{v}");
    assert_eq!(agent["tenant"], "acme", "{v}");
    assert_eq!(agent["risk_level"], "HIGH", "{v}");
    assert!(
        v.to_string().contains("path /echo/forbidden is off limits"),
        "{v}"
    );
}

// ------------------------------------------------------- foreign packages (issue 12)

/// A policy whose package misses the `portcullis.policy.` prefix by one letter.
fn typo_policy(path: &str) -> String {
    format!(
        "package portcullis.policies.block\n\nimport rego.v1\n\n\
         deny contains \"blocked\" if input.request.path == \"{path}\"\n"
    )
}

const TYPO_MESSAGE: &str = "package portcullis.policies.block would never be evaluated: a \
    policy's package must be portcullis.policy.<name> (e.g. portcullis.policy.block), and a \
    library's must be imported by a policy (import data.portcullis.policies.block)";

#[test]
fn policy_check_refuses_foreign_packages_and_unused_libraries() {
    let dir = tempfile::tempdir().expect("tmp");
    write_file(dir.path(), "ok.rego", ALLOW.as_bytes());
    write_file(dir.path(), "typo.rego", typo_policy("/x").as_bytes());
    let d = dir.path().display().to_string();
    let out = portcullis(&["policy", "check", &d], dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text, format!("typo.rego:1:1: {TYPO_MESSAGE}\n"));
    let out = portcullis(&["policy", "check", &d, "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"errors": [{"file": "typo.rego", "row": 1, "col": 1,
                                       "stage": "validate", "message": TYPO_MESSAGE}]})
    );

    // A library: refused while no policy imports it, accepted once one does.
    let libs = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(libs.path().join("lib")).expect("mkdir");
    write_file(libs.path(), "ok.rego", ALLOW.as_bytes());
    write_file(
        &libs.path().join("lib"),
        "paths.rego",
        b"package portcullis.lib.paths\n\nimport rego.v1\n\nsecret := \"/echo/secret\"\n",
    );
    let d = libs.path().display().to_string();
    let out = portcullis(&["policy", "check", &d], libs.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(
            "lib/paths.rego:1:1: package portcullis.lib.paths would never be evaluated"
        ),
        "{out:?}"
    );
    write_file(
        libs.path(),
        "secret.rego",
        b"package portcullis.policy.secret\n\nimport rego.v1\nimport data.portcullis.lib.paths\n\n\
          deny contains \"secret\" if input.request.path == paths.secret\n",
    );
    let out = portcullis(&["policy", "check", &d], libs.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{d}: 3 files ok\n")
    );
}

#[test]
fn a_reload_with_a_foreign_package_keeps_the_last_good_set() {
    let s = Setup::new("", &[], vec![]);
    assert_eq!(s.status("/echo/typo"), 200);
    let errors = |s: &Setup| {
        s.gw.metrics()
            .value("portcullis_policy_reloads_total", &[("result", "error")])
    };
    let before = errors(&s);
    replace_file(&s.policy_file("typo.rego"), &typo_policy("/echo/typo"));
    s.gw.metrics_until("the foreign package is refused", |m| {
        m.value("portcullis_policy_reloads_total", &[("result", "error")]) > before
    });
    // A valid edit next to it does not apply either: the whole set is refused.
    let before = errors(&s);
    replace_file(&s.policy_file("guard.rego"), &guard("/echo/changed"));
    s.gw.metrics_until("the set with the foreign package is refused again", |m| {
        m.value("portcullis_policy_reloads_total", &[("result", "error")]) > before
    });
    assert_eq!(s.status("/echo/changed"), 200, "the last good set serves");
    assert_eq!(s.status("/echo/forbidden"), 403, "the last good set serves");
    let r = s.gw.admin_get("/readyz");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let errs = find_key(&v, "errors").cloned().unwrap_or(Value::Null);
    assert_eq!(
        errs,
        serde_json::json!([format!("typo.rego:1:1: {TYPO_MESSAGE}")]),
        "{v}"
    );
    let log = strip_ansi(&s.gw.stderr());
    assert!(
        log.lines()
            .any(|l| l.contains("typo.rego") && l.contains("would never be evaluated")),
        "the log names the file and the reason"
    );

    // Fixing the package applies both the new policy and the pending edit.
    replace_file(
        &s.policy_file("typo.rego"),
        &typo_policy("/echo/typo").replace("portcullis.policies.block", "portcullis.policy.block"),
    );
    s.gw.eventually(
        "the fixed set applies",
        || (s.status("/echo/typo"), s.status("/echo/changed")),
        |v| *v == (403, 403),
    );
}

/// Runs `portcullis serve` on a config whose policy dir holds `files`, expecting it to
/// exit (bounded); returns the exit code and stderr.
fn serve_fails(files: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).expect("mkdir");
    for (name, src) in files {
        write_file(&pol, name, src.as_bytes());
    }
    let cfg = write_file(
        dir.path(),
        "portcullis.toml",
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [policy]\ndir = \"{}\"\n",
            pol.display()
        )
        .as_bytes(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["serve", "--config", &cfg.display().to_string()])
        .env_remove("PORTCULLIS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("portcullis serve kept running with an invalid policy set");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status.code(), err)
}

#[test]
fn a_start_with_a_foreign_package_fails_like_a_compile_error() {
    let allow = ALLOW.to_owned();
    let broken = "package portcullis.policy.bad\n\nallow if {\n";
    let (code_broken, _) = serve_fails(&[("ok.rego", &allow), ("bad.rego", broken)]);
    let typo = typo_policy("/x");
    let (code, err) = serve_fails(&[("ok.rego", &allow), ("typo.rego", &typo)]);
    assert!(code.is_some_and(|c| c != 0), "{code:?} {err}");
    assert_eq!(code, code_broken, "same exit as a compile error: {err}");
    assert!(
        err.contains(&format!("typo.rego:1:1: {TYPO_MESSAGE}")),
        "{err}"
    );
}

// ------------------------------------------- simulation agrees with the gateway (issue 12)

/// The shipped model allowlist, on an OpenAI-compatible local origin declared as provider
/// `openai` (`/echo/v1/chat/completions` is recognised by its last segments).
fn llm_setup() -> Setup {
    Setup::new(
        "\n[[llm.providers]]\nname = \"openai\"\nhost = \"127.0.0.1:{ORIGIN_PORT}\"\n",
        &[],
        vec![(
            "policies/model_allowlist.rego".to_owned(),
            include_bytes!("../../../../config/policies/model_allowlist.rego").to_vec(),
        )],
    )
}

/// POSTs `body` as JSON to `path` on the origin through the proxy, as `demo`.
fn post_json(s: &Setup, path: &str, body: &str) -> RawResponse {
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        s.origin.url(path),
        s.origin.addr,
        basic("demo", &s.secret),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    send_raw(s.gw.proxy, &req)
}

/// (verdict, policy, reasons) of a decision object.
fn vpr(d: &Value) -> (Value, Value, Value) {
    (
        d["verdict"].clone(),
        d["policy"].clone(),
        d["reasons"].clone(),
    )
}

/// The audit record of `decision_id` (written off the request path: polled, bounded).
fn audit_record(s: &Setup, key: &str, decision_id: &str) -> Value {
    s.gw.eventually(
        "the decision is in the audit trail",
        || {
            let r = s.gw.admin_call(
                "GET",
                "/v1/decisions?agent_id=demo&limit=200",
                Some(key),
                None,
            );
            r.json()["decisions"]
                .as_array()
                .and_then(|a| a.iter().find(|d| d["decision_id"] == decision_id).cloned())
        },
        Option::is_some,
    )
    .unwrap_or(Value::Null)
}

#[test]
fn simulate_and_eval_decide_on_the_body_exactly_as_the_gateway() {
    let s = llm_setup();
    let key = s.gw.create_api_key("default", "viewer");
    let cfg = s.gw.config_path().display().to_string();
    let path = "/echo/v1/chat/completions";
    for (model, allowed) in [("gpt-4-32k", false), ("gpt-4o", true)] {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let before = s.origin.requests();
        let r = post_json(&s, path, &body.to_string());
        let gateway = if allowed {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(s.origin.requests(), before + 1);
            let id = r.header("x-portcullis-decision-id").map(str::to_owned);
            let rec = s.gw.eventually(
                "the allowed request is in the audit trail",
                || {
                    let page = s.gw.admin_call(
                        "GET",
                        "/v1/decisions?agent_id=demo&verdict=allow&limit=200",
                        Some(&key),
                        None,
                    );
                    page.json()["decisions"].as_array().and_then(|a| {
                        a.iter()
                            .find(|d| {
                                d["model"] == model
                                    && id.as_deref().is_none_or(|i| d["decision_id"] == i)
                            })
                            .cloned()
                    })
                },
                Option::is_some,
            );
            rec.unwrap_or(Value::Null)
        } else {
            let v = r.assert_error(403, "policy_denied");
            assert_eq!(v["policy"], "model_allowlist", "{v}");
            assert_eq!(
                v["detail"],
                "model gpt-4-32k is not on the openai allowlist"
            );
            assert_eq!(
                s.origin.requests(),
                before,
                "a denied request never reaches the origin"
            );
            let id = v["decision_id"].as_str().expect("decision_id").to_owned();
            audit_record(&s, &key, &id)
        };
        assert_eq!(gateway["model"], model, "{gateway}");

        // The same request, described to the simulator.
        let described = serde_json::json!({
            "agent": "demo",
            "request": {"method": "POST", "scheme": "http", "host": "127.0.0.1",
                        "port": s.origin.port(), "path": path,
                        "headers": {"content-type": "application/json"}, "body": body}
        });
        let sim = s.gw.admin_call(
            "POST",
            "/v1/policies/simulate",
            Some(&key),
            Some(&described),
        );
        assert_eq!(sim.status, 200, "{:?}", String::from_utf8_lossy(&sim.body));
        let sim = sim.json();
        assert_eq!(
            vpr(&sim["decision"]),
            vpr(&gateway),
            "simulate vs gateway: {sim}"
        );
        assert_eq!(sim["input"]["llm"]["model"], model);

        // And to `policy eval`.
        let f = write_file(
            s.gw.dir(),
            &format!("eval-{model}.json"),
            described.to_string().as_bytes(),
        );
        let out = s.gw.cli(&[
            "policy",
            "eval",
            "--input",
            &f.display().to_string(),
            "--config",
            &cfg,
        ]);
        assert_eq!(
            out.status.code(),
            Some(if allowed { 0 } else { 1 }),
            "{out:?}"
        );
        let ev: Value = serde_json::from_slice(&out.stdout).expect("eval json");
        assert_eq!(vpr(&ev["decision"]), vpr(&gateway), "eval vs gateway: {ev}");
        assert_eq!(ev["classification"]["model"], model, "{ev}");
    }
    assert_eq!(
        (
            Value::from("deny"),
            Value::from("model_allowlist"),
            serde_json::json!(["model gpt-4-32k is not on the openai allowlist"])
        ),
        {
            let d = serde_json::json!({"agent": "demo", "request": {"method": "POST", "scheme": "http",
                "host": "127.0.0.1", "port": s.origin.port(), "path": path,
                "body": {"model": "gpt-4-32k"}}});
            vpr(&s
                .gw
                .admin_call("POST", "/v1/policies/simulate", Some(&key), Some(&d))
                .json()["decision"])
        }
    );

    // An invalid description cannot be decided: 2, never "allowed" or "denied".
    let bad = write_file(
        s.gw.dir(),
        "bad.json",
        br#"{"agent": "demo", "request": {"port": 0}}"#,
    );
    let out = s.gw.cli(&[
        "policy",
        "eval",
        "--input",
        &bad.display().to_string(),
        "--config",
        &cfg,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("request.port: must be between 1 and 65535"),
        "{out:?}"
    );
    let out = s.gw.cli(&[
        "policy",
        "eval",
        "--input",
        &bad.display().to_string(),
        "--agent",
        "nobody",
        "--config",
        &cfg,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_readme_eval_example_works_as_written() {
    // The README runs it from the repository root with the shipped policies and the
    // `demo` agent of the first start; the store here is the gateway's (PORTCULLIS_CONFIG).
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: String::new(),
        rest: format!(
            "\n[store]\nurl = \"sqlite://{{DIR}}/data/portcullis.db\"\n\n[policy]\ndir = \"{}\"\n",
            repo_policies().display()
        ),
        files: vec![],
    });
    let root = repo_policies().join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(&root)
        .args([
            "policy",
            "eval",
            "--input",
            "config/examples/eval-request.json",
            "--agent",
            "demo",
        ])
        .env("PORTCULLIS_CONFIG", gw.config_path())
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(1), "the example is denied: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        vpr(&v["decision"]),
        (
            Value::from("deny"),
            Value::from("model_allowlist"),
            serde_json::json!(["model gpt-4-32k is not on the openai allowlist"])
        ),
        "{v}"
    );
    assert_eq!(v["input"]["agent"]["id"], "demo");
    assert_eq!(v["input"]["llm"]["model"], "gpt-4-32k");
}

// ------------------------------------------------------------ method override (issue 12)

/// Reads under `/echo/ro` must stay reads, whatever method override they carry.
const READ_ONLY: &str = r#"package portcullis.policy.read_only

import rego.v1

import data.portcullis.lib.catalog

deny contains sprintf("%s %s is read-only", [m, input.request.path]) if {
	input.kind == "http"
	startswith(input.request.path, "/echo/ro")
	some m in catalog.methods
	not m in {"GET", "HEAD"}
}
"#;

#[test]
fn a_method_override_is_denied_like_the_method_it_asks_for_and_never_forwarded() {
    let s = Setup::new(
        "",
        &[],
        vec![
            (
                "policies/read_only.rego".to_owned(),
                READ_ONLY.as_bytes().to_vec(),
            ),
            (
                "policies/lib/catalog.rego".to_owned(),
                include_bytes!("../../../../config/policies/lib/catalog.rego").to_vec(),
            ),
        ],
    );
    let auth = basic("demo", &s.secret);
    let send = |method: &str, path: &str, extra: &[&str]| {
        proxy_send(s.gw.proxy, method, &s.origin.url(path), Some(&auth), extra)
    };
    let before = s.origin.requests();
    assert_eq!(send("GET", "/echo/ro", &[]).status, 200);
    assert_eq!(s.origin.requests(), before + 1);

    let plain_post = send("POST", "/echo/ro", &[]);
    let post = plain_post.assert_error(403, "policy_denied");
    assert_eq!(post["detail"], "POST /echo/ro is read-only");
    for (path, extra, detail) in [
        (
            "/echo/ro",
            vec!["X-HTTP-Method-Override: POST"],
            "POST /echo/ro is read-only",
        ),
        (
            "/echo/ro",
            vec!["X-HTTP-Method: post"],
            "POST /echo/ro is read-only",
        ),
        (
            "/echo/ro",
            vec!["X-Method-Override: DELETE"],
            "DELETE /echo/ro is read-only",
        ),
        ("/echo/ro?_method=put", vec![], "PUT /echo/ro is read-only"),
        (
            "/echo/ro?%5Fmethod=POST",
            vec![],
            "POST /echo/ro is read-only",
        ),
        (
            "/echo/ro?_method=DELETE",
            vec!["X-HTTP-Method-Override: POST"],
            "* /echo/ro is read-only",
        ),
        (
            "/echo/ro",
            vec!["X-HTTP-Method-Override: GET, POST"],
            "* /echo/ro is read-only",
        ),
    ] {
        let before = s.origin.requests();
        let r = send("GET", path, &extra);
        let v = r.assert_error(403, "policy_denied");
        assert_eq!(v["policy"], "read_only", "{path} {extra:?}: {v}");
        assert_eq!(v["detail"], detail, "{path} {extra:?}");
        assert_eq!(
            s.origin.requests(),
            before,
            "{path} {extra:?}: a denied override never reaches the origin"
        );
    }
    // The same as the plain POST: same policy, same reason.
    let r = send("GET", "/echo/ro", &["X-HTTP-Method-Override: POST"]);
    let v = r.assert_error(403, "policy_denied");
    assert_eq!(
        (&v["policy"], &v["detail"]),
        (&post["policy"], &post["detail"])
    );

    // Overrides asking for a read stay allowed and reach the origin with the header.
    let before = s.origin.requests();
    let r = send("GET", "/echo/ro", &["X-HTTP-Method-Override: head"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.origin.requests(), before + 1);
    let echoed = r.json();
    assert!(
        echoed["headers"]
            .as_array()
            .is_some_and(|h| h.iter().any(|p| p[0] == "x-http-method-override")),
        "{echoed}"
    );
}
