//! The operator console end to end: the real gateway and an LLM-like origin, real proxied
//! requests (curl), then headless Chromium (Debian's `chromium`, driven by `playwright-core`
//! from `tests/browser/`) signing in, finding the requests, filtering, reading the decision
//! trace, simulating the denial, suspending the agent, and refusing a viewer's and a
//! token-less change; afterwards the suspended agent's next proxied request is 407.
//! Screenshots of every page land in `target/console-screenshots/`.
//!
//! The same checks run twice: on a gateway with its embedded SQLite store, and on a
//! gateway of a shared deployment (PostgreSQL store, as the overlay runs it; screenshots in
//! `target/console-screenshots/postgres/`).
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules`: `scripts/test.sh`
//! installs them (apt `chromium`, `npm ci`); without them the test fails saying so. The
//! PostgreSQL run also needs `PORTCULLIS_TEST_POSTGRES_URL` (`scripts/test.sh` sets it).

use crate::common::server::{OBody, TestServer};
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use portcullis_core::{AuditRecord, RequestKind, Verdict};
use portcullis_store::{AuditRow, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const DENY_REASON: &str = "path /deny is off limits";

const GUARD: &str = r#"package portcullis.policy.guard

import rego.v1

allow if input.request.host == "127.0.0.1"

deny contains "path /deny is off limits" if startswith(input.request.path, "/deny")
"#;

/// `POST /v1/chat/completions`: an OpenAI-style answer with 25 + 16 tokens of usage;
/// anything else: 200 `ok`.
async fn llm(req: Request<Incoming>) -> Response<OBody> {
    let chat = req.uri().path() == "/v1/chat/completions";
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = if chat {
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": v["model"].as_str().unwrap_or("unknown"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 25, "completion_tokens": 16, "total_tokens": 41},
        })
        .to_string()
    } else {
        "ok".to_owned()
    };
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    r.headers_mut().insert(
        "content-type",
        if chat {
            "application/json"
        } else {
            "text/plain"
        }
        .parse()
        .expect("ct"),
    );
    r
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails with instructions when the browser toolchain is missing.
fn browser_ready() -> PathBuf {
    let root = workspace();
    let chromium =
        std::env::var("PORTCULLIS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} not found: the console browser tests need Debian's chromium; run \
         scripts/test.sh (it installs it with apt) or `apt-get install chromium`"
    );
    assert!(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "node not found: the console browser tests need Node.js 20+; run scripts/test.sh"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "tests/browser/node_modules is missing: run scripts/test.sh (or `npm ci` in \
         tests/browser with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)"
    );
    PathBuf::from(chromium)
}

/// Writes a record with raw payloads in path, sub-agent and model straight into the store
/// at `store_url`, as any writer of the shared store could (the data plane itself refuses
/// such a sub-agent name and such a path).
fn insert_payload_record(store_url: &str, agent: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let mut rec = AuditRecord::new(
        "01ZZPAYLOAD0000000000000001",
        now_ms,
        "default",
        agent,
        RequestKind::Http,
        Verdict::Allow,
    );
    rec.subagent = Some("\"><img src=x onerror=alert(1)>".into());
    rec.method = Some("GET".into());
    rec.scheme = Some("http".into());
    rec.host = Some("127.0.0.1".into());
    rec.port = Some(80);
    rec.path = Some("/<script>alert(1)</script>".into());
    rec.provider = Some("openai".into());
    rec.api = Some("chat.completions".into());
    rec.model = Some("<img src=x onerror=alert(1)>".into());
    rec.stream = Some(false);
    rec.policy = Some("guard".into());
    rec.reasons = vec!["<b onmouseover=alert(1)>reason</b>".into()];
    rec.decision_id = Some("dec-payload".into());
    rec.status = Some(200);
    rec.latency_ms = 3;
    rec.policy_us = Some(10);
    rec.upstream_ttfb_ms = Some(1);
    rec.bytes_out = 2;
    rec.client_addr = Some("127.0.0.1:1".into());
    block_on(async {
        let store = Store::connect_existing(store_url)
            .await
            .unwrap_or_else(|e| panic!("open {store_url}: {e}"));
        let n = store
            .insert_audit_batch(&[AuditRow::from(rec)])
            .await
            .unwrap_or_else(|e| panic!("insert the payload record: {e}"));
        assert_eq!(n, 1, "the payload record is new");
        store.close().await;
    });
}

/// The gateway's config sections beyond `[proxy]` for an origin on `port`.
fn config_rest(port: u16) -> String {
    format!(
        "\n[policy]\ndir = \"{{DIR}}/policies\"\n\
         [[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{port}\"\n\
         [console]\nlive_interval_secs = 1\n"
    )
}

fn policy_files() -> Vec<(String, Vec<u8>)> {
    vec![("policies/guard.rego".to_owned(), GUARD.as_bytes().to_vec())]
}

#[test]
fn the_console_in_a_real_browser() {
    let chromium = browser_ready();
    let origin = TestServer::start(None, Arc::new(|req| Box::pin(llm(req))));
    let port = origin.port();
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: config_rest(port),
        files: policy_files(),
    });
    let store_url = format!("sqlite://{}", gw.dir().join("data/portcullis.db").display());
    browser_checks(&gw, &store_url, port, &chromium, "console-screenshots");
}

/// The same checks on a gateway whose store is PostgreSQL (the shared deployment).
#[test]
fn the_console_in_a_real_browser_on_postgresql() {
    let chromium = browser_ready();
    let origin = TestServer::start(None, Arc::new(|req| Box::pin(llm(req))));
    let port = origin.port();
    let shared = Shared::start(SharedOpts {
        replicas: 1,
        proxy_lines: format!(
            "allow_unauthenticated = false\n{}",
            loopback_proxy_section(&[port])
        ),
        rest: config_rest(port),
        files: policy_files(),
        ..SharedOpts::default()
    });
    browser_checks(
        &shared.gateways[0],
        shared.direct_url(),
        port,
        &chromium,
        "console-screenshots/postgres",
    );
}

/// Proxied requests through `gw` to the origin on `port`, then the browser script against
/// its console, then the suspended agent's refusal. `store_url` is the gateway's store (for
/// the payload record); screenshots go to `target/<shots>/`.
fn browser_checks(gw: &Gateway, store_url: &str, port: u16, chromium: &Path, shots: &str) {
    let secret = gw.create_agent("bot", "default", &[]);
    let admin_key = gw.create_api_key("default", "admin");
    let viewer_key = gw.create_api_key("default", "viewer");
    let proxy = format!("http://bot:{secret}@{}", gw.proxy);
    let origin_url = format!("http://127.0.0.1:{port}");
    gw.eventually(
        "the new agent is loaded",
        || {
            curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy,
                &format!("{origin_url}/ready"),
            ])
            .stdout
        },
        |o| o == b"200",
    );

    let chat = |model: &str| {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                .to_string();
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            &format!("{origin_url}/v1/chat/completions"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(chat("gpt-4o-mini"), "200");
    assert_eq!(chat("\"><img src=x onerror=alert(1)>"), "200");
    let denied = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        &format!("{origin_url}/deny/secrets"),
    ]);
    assert_eq!(denied.stdout, b"403");
    let encoded = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        &format!("{origin_url}/x/%3Cscript%3Ealert(1)%3C/script%3E"),
    ]);
    assert_eq!(encoded.stdout, b"200");
    insert_payload_record(store_url, "bot");
    gw.eventually(
        "the records are stored",
        || {
            let r = gw.admin_call("GET", "/v1/decisions?agent_id=bot", Some(&admin_key), None);
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .map(|v| v["total"].as_u64().unwrap_or(0))
                .unwrap_or(0)
        },
        |n| *n >= 6,
    );

    // The console is never reachable through the proxy port: the SSRF guard refuses the
    // gateway's own listeners.
    let through = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        &format!("http://{}/ui/login", gw.admin),
    ]);
    assert_eq!(
        through.stdout, b"403",
        "the admin listener through the proxy"
    );

    let shots = workspace().join("target").join(shots);
    let out = Command::new("node")
        .arg(workspace().join("tests/browser/console.mjs"))
        .current_dir(workspace())
        .env("CONSOLE_URL", format!("http://{}", gw.admin))
        .env("ADMIN_KEY", &admin_key)
        .env("VIEWER_KEY", &viewer_key)
        .env("AGENT", "bot")
        .env("AGENT_PROXY", &proxy)
        .env("ORIGIN_URL", &origin_url)
        .env("DENY_REASON", DENY_REASON)
        .env("DENY_PATH", "/deny/secrets")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for step in [
        "sign-in refuses a wrong key",
        "sign-in with an operator key",
        "a proxied request appears with agent, verdict, policy and tokens",
        "live updates show a new request without reloading",
        "filter by verdict",
        "the detail shows the decision trace",
        "simulating the denied request gives the same decision and reasons",
        "agent-controlled payloads render inert",
        "every page renders (screenshots)",
        "a change without the CSRF token is refused",
        "a viewer has no controls and a forged change is refused",
        "suspend the agent in the UI",
        "no CSP violation and no dialog anywhere",
    ] {
        assert!(
            stdout.contains(&format!("PASS {step}\n")),
            "step {step:?} did not pass:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // Suspended in the browser: the very next proxied request is refused.
    let after = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        &format!("{origin_url}/after"),
    ]);
    assert_eq!(after.stdout, b"407", "the suspended agent's next request");
    for name in [
        "01-login",
        "02-requests",
        "03-request-detail",
        "04-simulator",
        "06-agents",
        "07-policies",
        "08-usage",
        "09-credentials",
        "11-agents-suspended",
    ] {
        let p = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "screenshot {} missing or empty", p.display());
    }
}
