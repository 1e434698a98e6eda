//! Credential injection (issue 9) through the real gateway: the official `openai` and
//! `anthropic` SDKs hold placeholder keys, go through `HTTPS_PROXY` with interception, and
//! reach a local HTTPS origin that accepts only the real key, which the gateway injects from
//! a secret file. Checks bindings, policy on `input.credential`, rotation without restart, and
//! that the real secret appears on none of the gateway's own surfaces.

mod common;

use common::tls_origin::TlsOrigin;
use common::*;

const POLICY: &str = r#"package portcullis.policy.e2e
import rego.v1

allow if input.request.host == "localhost"

deny contains "chat completions need the openai_prod credential" if {
	input.kind == "http"
	input.request.path == "/v1/chat/completions"
	input.credential == null
}
"#;

const BOT_SECRET: &str = "bot-proxy-secret-123";

/// A gateway intercepting nothing but what the credential binds (`localhost`), with the
/// secret in `{DIR}/provider.key`, every audit sink on and debug logs.
fn gateway(origin: &TlsOrigin, credential: &str, secret: &str) -> Gateway {
    let port = origin.port();
    Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: format!("allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\n"),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\n\
             [llm]\nproviders = [{{ name = \"local\", host = \"localhost:{port}\", format = \"openai\" }}]\n\
             [tls]\nintercept = []\nupstream_ca = [{:?}]\n\
             [audit]\nsinks = [\"store\", \"jsonl\", \"stdout\"]\n\
             [[credentials]]\n{credential}\nfile = \"{{DIR}}/provider.key\"\nagents = [\"bot\"]\n\
             [[agents]]\nid = \"bot\"\nsecret_sha256 = \"{}\"\n",
            origin.ca_pem.display().to_string(),
            sha256_hex(BOT_SECRET.as_bytes()),
        ),
        files: vec![
            ("policies/e2e.rego".to_owned(), POLICY.as_bytes().to_vec()),
            ("provider.key".to_owned(), format!("{secret}\n").into_bytes()),
        ],
    })
}

fn ca(gw: &Gateway) -> String {
    gw.dir().join("data/ca/ca.pem").display().to_string()
}

fn bot_proxy(gw: &Gateway) -> String {
    format!("http://bot:{BOT_SECRET}@{}", gw.proxy)
}

/// Replaces the secret file the way a Kubernetes Secret volume does: write aside, rename.
fn rotate(gw: &Gateway, secret: &str) {
    let tmp = gw.dir().join("provider.key.new");
    std::fs::write(&tmp, format!("{secret}\n")).expect("write");
    std::fs::rename(&tmp, gw.dir().join("provider.key")).expect("rename");
}

/// Every surface of the gateway itself, as text: its stdout (banner, stdout audit sink),
/// stderr log, the JSONL audit file, the store's files, `/metrics`, and admin API answers.
fn surfaces(gw: &Gateway) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "stdout".to_owned(),
            gw.stdout_lines().join("\n") + &gw.banner,
        ),
        ("stderr".to_owned(), gw.stderr()),
        ("metrics".to_owned(), gw.metrics().0),
    ];
    for entry in walk(&gw.dir().join("data")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        out.push((
            entry.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    let key = gw.create_api_key("default", "admin");
    for path in [
        "/v1/decisions?limit=200",
        "/v1/agents",
        "/v1/agents/bot",
        "/v1/policies",
    ] {
        let r = gw.admin_call("GET", path, Some(&key), None);
        assert_eq!(r.status, 200, "{path}");
        out.push((
            path.to_owned(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
    }
    let sim = serde_json::json!({"agent": "bot", "credential": "openai_prod", "request": {
        "method": "POST", "url": "https://localhost/v1/chat/completions"}});
    let r = gw.admin_call("POST", "/v1/policies/simulate", Some(&key), Some(&sim));
    out.push((
        "simulate".to_owned(),
        String::from_utf8_lossy(&r.body).into_owned(),
    ));
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

fn assert_secret_absent(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "the real secret appears in {what}");
    }
}

const OPENAI_SDK: &str = r#"
import json, sys, httpx, openai
proxy, ca, base, who = sys.argv[1:5]
client = openai.OpenAI(base_url=base, api_key="sk-placeholder-from-agent-env", max_retries=0,
                       http_client=httpx.Client(proxy=proxy, verify=ca))
msgs = [{"role": "user", "content": "hi"}]
out = {}
def attempt(name, f):
    try:
        out[name] = {"ok": True, "value": f()}
    except openai.APIStatusError as e:
        out[name] = {"ok": False, "status": e.status_code, "body": e.response.text}
attempt("json", lambda: client.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content)
def stream():
    text = ""
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True,
                                                stream_options={"include_usage": True}):
        for c in chunk.choices:
            text += c.delta.content or ""
    return text
if who == "bot":
    attempt("stream", stream)
attempt("models", lambda: [m.id for m in client.models.list()])
print(json.dumps(out))
"#;

fn openai(gw: &Gateway, origin: &TlsOrigin, proxy: &str, who: &str) -> (serde_json::Value, String) {
    let out = run_python(
        OPENAI_SDK,
        &[
            proxy.to_owned(),
            ca(gw),
            format!("https://localhost:{}/v1", origin.port()),
            who.to_owned(),
        ],
    );
    (
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}")),
        out,
    )
}

#[test]
fn openai_sdk_with_a_placeholder_key_gets_the_real_one_injected_and_rotated() {
    let (old, new) = (
        "sk-REAL-one-4f0c2b9e-do-not-leak",
        "sk-REAL-two-8d1e7a35-do-not-leak",
    );
    let origin = TlsOrigin::requiring_key(old);
    let gw = gateway(
        &origin,
        "name = \"openai_prod\"\nhosts = [\"localhost\"]",
        old,
    );
    assert!(
        gw.banner.contains(" credentials=1(openai_prod) "),
        "{}",
        gw.banner
    );

    // The bound agent: JSON, streaming and a GET all reach the origin with the real key.
    let (bot, bot_out) = openai(&gw, &origin, &bot_proxy(&gw), "bot");
    assert_eq!(bot["json"]["value"], "Hello from origin", "{bot}");
    assert_eq!(bot["stream"]["value"], "Hello from origin", "{bot}");
    assert_eq!(
        bot["models"]["value"],
        serde_json::json!(["gpt-4o-mini"]),
        "{bot}"
    );
    let bearer_old = format!("Bearer {old}");
    assert_eq!(origin.seen_credentials(), vec![bearer_old.clone(); 3]);

    // An agent not bound to it: its placeholder reaches the origin (401), and the policy that
    // requires a credential for chat refuses before anything is forwarded.
    // Created through the admin API: the registry reloads before it answers.
    let key = gw.create_api_key("default", "admin");
    let created = gw.admin_call(
        "POST",
        "/v1/agents",
        Some(&key),
        Some(&serde_json::json!({"id": "other"})),
    );
    assert_eq!(created.status, 201);
    let other = created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let demo_proxy = format!("http://other:{other}@{}", gw.proxy);
    let (demo, demo_out) = openai(&gw, &origin, &demo_proxy, "demo");
    assert_eq!(demo["models"]["status"], 401, "{demo}");
    assert_eq!(demo["json"]["status"], 403, "{demo}");
    assert!(
        demo["json"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("need the openai_prod credential")),
        "{demo}"
    );
    assert_eq!(
        origin.seen_credentials().last().map(String::as_str),
        Some("Bearer sk-placeholder-from-agent-env")
    );
    assert_eq!(
        origin.requests(),
        4,
        "the denied chat never reached the origin"
    );

    // Rotation: the provider switches keys and the Secret file is replaced; no restart.
    origin.set_key(new);
    rotate(&gw, new);
    let (after, after_out) = openai(&gw, &origin, &bot_proxy(&gw), "bot");
    assert_eq!(after["json"]["value"], "Hello from origin", "{after}");
    assert_eq!(
        origin.seen_credentials().last().map(String::as_str),
        Some(format!("Bearer {new}").as_str())
    );

    // Audit and metrics name the credential; only the bound agent's requests carry it.
    let m = gw.metrics_until("six injections are counted", |m| {
        m.value(
            "portcullis_credential_injections_total",
            &[("credential", "openai_prod")],
        ) == 6.0
    });
    assert_eq!(
        m.value(
            "portcullis_credential_injections_total",
            &[("credential", "openai_prod")]
        ),
        6.0
    );
    let q = gw.eventually(
        "the bot's requests are audited",
        || {
            let out = gw.cli_ok(&[
                "audit",
                "query",
                "--agent-id",
                "bot",
                "--format",
                "json",
                "--limit",
                "200",
            ]);
            serde_json::from_str::<serde_json::Value>(out.trim()).expect("json")
        },
        |q| {
            q["decisions"]
                .as_array()
                .is_some_and(|d| d.iter().filter(|r| r["kind"] == "http").count() == 6)
        },
    );
    for r in q["decisions"].as_array().expect("decisions") {
        if r["kind"] == "http" {
            assert_eq!(r["credential"], "openai_prod", "{r}");
        }
    }
    let demo_q = gw.cli_ok(&[
        "audit",
        "query",
        "--agent-id",
        "other",
        "--format",
        "json",
        "--limit",
        "200",
    ]);
    let demo_q: serde_json::Value = serde_json::from_str(demo_q.trim()).expect("json");
    let demo_records = demo_q["decisions"].as_array().expect("decisions");
    assert!(!demo_records.is_empty());
    assert!(demo_records.iter().all(|r| r["credential"].is_null()));

    // The real secrets appear nowhere the gateway writes or answers.
    for (what, text) in [
        ("the bot's SDK output", bot_out),
        ("the demo's SDK output", demo_out),
        ("the SDK output after rotation", after_out),
    ] {
        assert_secret_absent(what, &text, &[old, new]);
    }
    let surfaces = surfaces(&gw);
    assert!(
        surfaces.iter().any(|(w, _)| w.ends_with("audit.jsonl")),
        "no JSONL audit file"
    );
    assert!(
        surfaces.iter().any(|(w, _)| w.ends_with("portcullis.db")),
        "no store file"
    );
    for (what, text) in &surfaces {
        assert_secret_absent(what, text, &[old, new]);
    }
    // The surfaces were really looked at: the credential's name is there.
    let all: String = surfaces.iter().map(|(_, t)| t.as_str()).collect();
    assert!(all.contains("openai_prod"));
}

#[test]
fn anthropic_sdk_gets_x_api_key_injected_json_and_streaming() {
    let real = "sk-ant-REAL-5b7c91d2-do-not-leak";
    let origin = TlsOrigin::requiring_key(real);
    let gw = gateway(
        &origin,
        "name = \"anthropic_prod\"\nhosts = [\"localhost\"]\nheader = \"x-api-key\"\nformat = \"{secret}\"",
        real,
    );
    let script = r#"
import json, sys, httpx, anthropic
proxy, ca, base = sys.argv[1:4]
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-placeholder", max_retries=0,
                             http_client=httpx.Client(proxy=proxy, verify=ca))
msgs = [{"role": "user", "content": "hi"}]
m = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=msgs)
text = ""
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=msgs) as s:
    for t in s.text_stream:
        text += t
print(json.dumps({"json": m.content[0].text, "stream": text}))
"#;
    let out = run_python(
        script,
        &[
            bot_proxy(&gw),
            ca(&gw),
            format!("https://localhost:{}", origin.port()),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["json"], "Hello from origin", "{v}");
    assert_eq!(v["stream"], "Hello from origin", "{v}");
    assert_eq!(origin.seen_credentials(), vec![real.to_owned(); 2]);
    assert_secret_absent("the SDK output", &out, &[real]);
    gw.metrics_until("two injections are counted", |m| {
        m.value(
            "portcullis_credential_injections_total",
            &[("credential", "anthropic_prod")],
        ) == 2.0
    });
    for (what, text) in &surfaces(&gw) {
        assert_secret_absent(what, text, &[real]);
    }
}

#[test]
fn plain_http_never_carries_a_credential() {
    // The same binding, but the agent talks plain HTTP (absolute-form) to the host: the
    // secret is never sent in cleartext, so nothing is injected.
    let origin = Origin::start();
    let port = origin.port();
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n\
               [[credentials]]\nname = \"local\"\nhosts = [\"127.0.0.1\"]\nfile = \"{DIR}/k\"\nagents = [\"bot\"]\n\
               [[agents]]\nid = \"bot\"\nsecret_sha256 = \"SHA\"\n"
            .replace("SHA", &sha256_hex(BOT_SECRET.as_bytes())),
        files: vec![
            (
                "policies/p.rego".to_owned(),
                b"package portcullis.policy.p\nimport rego.v1\nallow := true\n".to_vec(),
            ),
            ("k".to_owned(), b"sk-REAL-plaintext-never".to_vec()),
        ],
    });
    let out = curl(&[
        "-s",
        "-x",
        &bot_proxy(&gw),
        "-H",
        "authorization: Bearer agent-own",
        &origin.url("/echo/x"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo json");
    let headers = v["headers"].to_string();
    assert!(headers.contains("Bearer agent-own"), "{headers}");
    assert!(!headers.contains("sk-REAL-plaintext-never"), "{headers}");
    assert_eq!(
        gw.metrics().value(
            "portcullis_credential_injections_total",
            &[("credential", "local")]
        ),
        0.0
    );
}
