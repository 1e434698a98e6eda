//! Credential injection (issue 9) through the real gateway: the official `openai` and
//! `anthropic` SDKs hold placeholder keys, go through `HTTPS_PROXY` with interception, and
//! reach a local HTTPS origin that accepts only the real key, which the gateway injects from
//! a secret file. Checks bindings, policy on `input.credential`, rotation without restart, and
//! that the real secret appears on none of the gateway's own surfaces.

use crate::common::tls_origin::TlsOrigin;
use crate::common::*;

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
        // Every request and tunnel of the bot went through interception.
        assert_eq!(r["tls_intercepted"], true, "{r}");
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
import json, os, sys
proxy, ca, base = sys.argv[1:4]
# Exactly as docs/credentials.md sets an agent up: environment only, placeholder key.
os.environ.update({"HTTPS_PROXY": proxy, "SSL_CERT_FILE": ca, "ANTHROPIC_API_KEY": "sk-ant-placeholder"})
for k in ("NO_PROXY", "no_proxy"):
    os.environ.pop(k, None)
import anthropic
client = anthropic.Anthropic(base_url=base, max_retries=0)
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
    let q = gw.eventually(
        "the plain request is audited",
        || gw.cli_ok(&["audit", "query", "--agent-id", "bot", "--format", "json"]),
        |out| out.contains("/echo/x"),
    );
    let q: serde_json::Value = serde_json::from_str(q.trim()).expect("json");
    assert_eq!(q["decisions"][0]["tls_intercepted"], false, "{q}");
    assert!(q["decisions"][0]["credential"].is_null(), "{q}");
    assert!(!headers.contains("sk-REAL-plaintext-never"), "{headers}");
    assert_eq!(
        gw.metrics().value(
            "portcullis_credential_injections_total",
            &[("credential", "local")]
        ),
        0.0
    );
}

const CHAT: &str = r#"
import json, sys, httpx, openai
proxy, ca, base = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key="sk-placeholder-from-agent-env", max_retries=0,
                       http_client=httpx.Client(proxy=proxy, verify=ca))
try:
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"status": 200, "text": r.choices[0].message.content}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "body": e.response.text}))
"#;

#[test]
fn credentials_managed_through_the_admin_api_and_cli_are_sealed_and_write_only() {
    let (first, rotated, via_cli) = (
        "sk-API-first-77aa10-do-not-leak",
        "sk-API-rotated-88bb20-do-not-leak",
        "sk-CLI-managed-99cc30-do-not-leak",
    );
    let origin = TlsOrigin::requiring_key(first);
    let port = origin.port();
    // No [[credentials]]: what the API stores alone decides interception and injection.
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: format!("allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\n"),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\n\
             [tls]\nintercept = []\nupstream_ca = [{:?}]\n\
             [audit]\nsinks = [\"store\", \"jsonl\", \"stdout\"]\n\
             [[agents]]\nid = \"bot\"\nsecret_sha256 = \"{}\"\n",
            origin.ca_pem.display().to_string(),
            sha256_hex(BOT_SECRET.as_bytes()),
        ),
        files: vec![(
            "policies/p.rego".to_owned(),
            b"package portcullis.policy.p\nimport rego.v1\nallow if input.request.host == \"localhost\"\n"
                .to_vec(),
        )],
    });
    assert!(gw.banner.contains(" credentials=0 "), "{}", gw.banner);
    // Trust both the gateway CA (intercepted) and the origin's (spliced tunnels).
    let bundle = gw.dir().join("both-cas.pem");
    let mut pem = std::fs::read(ca(&gw)).expect("gateway ca");
    pem.extend(std::fs::read(&origin.ca_pem).expect("origin ca"));
    std::fs::write(&bundle, pem).expect("bundle");
    let chat = || -> serde_json::Value {
        let out = run_python(
            CHAT,
            &[
                bot_proxy(&gw),
                bundle.display().to_string(),
                format!("https://localhost:{port}/v1"),
            ],
        );
        assert_secret_absent("the SDK output", &out, &[first, rotated, via_cli]);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    // Nothing bound yet: the tunnel is spliced and the placeholder reaches the origin.
    assert_eq!(chat()["status"], 401);

    let admin = gw.create_api_key("default", "admin");
    let viewer = gw.create_api_key("default", "viewer");
    let stranger = gw.create_api_key("acme", "admin");
    let put = |key: &str, body: serde_json::Value| {
        gw.admin_call("PUT", "/v1/credentials/openai_api", Some(key), Some(&body))
    };
    let binding = serde_json::json!({"hosts": ["localhost"], "agents": ["bot"]});

    // Refusals: no secret on create, bad bindings, sources meant for the config file,
    // another tenant's agents, a viewer.
    let r = put(&admin, binding.clone());
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    for (body, field) in [
        (serde_json::json!({"hosts": [], "secret": first}), "hosts"),
        (
            serde_json::json!({"hosts": ["localhost"], "header": "Host", "secret": first}),
            "header",
        ),
        (
            serde_json::json!({"hosts": ["localhost"], "format": "Bearer", "secret": first}),
            "format",
        ),
        (
            serde_json::json!({"hosts": ["localhost"], "file": "/etc/passwd"}),
            "file",
        ),
        (
            serde_json::json!({"hosts": ["localhost"], "tenants": ["acme"], "secret": first}),
            "tenants",
        ),
        (
            serde_json::json!({"hosts": ["localhost"], "secret": "two\nlines"}),
            "secret",
        ),
        (
            serde_json::json!({"hosts": ["localhost"], "secret": first, "surprise": 1}),
            "body",
        ),
    ] {
        let r = put(&admin, body.clone());
        assert_eq!(
            r.status,
            422,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["errors"][0]["field"], field, "{body}");
        assert_secret_absent("a 422 answer", &String::from_utf8_lossy(&r.body), &[first]);
    }
    let mut with_secret = binding.clone();
    with_secret["secret"] = serde_json::json!(first);
    assert_eq!(put(&viewer, with_secret.clone()).status, 403);

    // Created: 201, and the secret is never shown again.
    let r = put(&admin, with_secret.clone());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["name"], "openai_api");
    assert_eq!(v["source"], "store");
    assert_eq!(v["secret"], "(write-only)");
    assert_eq!(v["header"], "authorization");
    for path in ["/v1/credentials", "/v1/credentials/openai_api"] {
        let r = gw.admin_call("GET", path, Some(&viewer), None);
        assert_eq!(r.status, 200, "{path}");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(text.contains("openai_api"), "{text}");
        assert_secret_absent(path, &text, &[first]);
    }
    // Another tenant sees nothing and cannot take the name.
    assert_eq!(
        gw.admin_call("GET", "/v1/credentials/openai_api", Some(&stranger), None)
            .status,
        404
    );
    assert_eq!(put(&stranger, with_secret.clone()).status, 409);

    // The bound agent's request now gets the real key (the host is intercepted on its own).
    let ok = chat();
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["text"], "Hello from origin");
    assert_eq!(
        origin.seen_credentials().last().map(String::as_str),
        Some(format!("Bearer {first}").as_str())
    );

    // An update without a secret keeps it; one with a secret rotates it at once.
    let r = put(
        &admin,
        serde_json::json!({"hosts": ["localhost"], "agents": ["bot"], "mode": "replace"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(chat()["status"], 200);
    origin.set_key(rotated);
    let mut rotate = binding.clone();
    rotate["secret"] = serde_json::json!(rotated);
    assert_eq!(put(&admin, rotate).status, 200);
    assert_eq!(chat()["status"], 200);
    assert_eq!(
        origin.seen_credentials().last().map(String::as_str),
        Some(format!("Bearer {rotated}").as_str())
    );

    // Deleted: 204, gone from the list, the placeholder reaches the origin again.
    let r = gw.admin_call("DELETE", "/v1/credentials/openai_api", Some(&admin), None);
    assert_eq!(r.status, 204);
    assert_eq!(
        gw.admin_call("DELETE", "/v1/credentials/openai_api", Some(&admin), None)
            .status,
        404
    );
    assert_eq!(chat()["status"], 401);

    // The CLI: the secret from a file, never the command line; the gateway follows the store.
    let secret_file = gw.dir().join("cli-secret.txt");
    std::fs::write(&secret_file, format!("{via_cli}\n")).expect("write");
    let out = gw.cli_ok(&[
        "credential",
        "set",
        "cli_cred",
        "--hosts",
        "localhost",
        "--agents",
        "bot",
        "--secret-file",
        &secret_file.display().to_string(),
    ]);
    assert!(out.contains("secret sealed"), "{out}");
    std::fs::remove_file(&secret_file).expect("rm");
    let listed = gw.cli_ok(&["credential", "list"]);
    assert!(
        listed.contains("cli_cred") && listed.contains("agents=bot"),
        "{listed}"
    );
    origin.set_key(via_cli);
    gw.eventually("the CLI credential applies", chat, |v| v["status"] == 200);
    let bad = gw.cli(&[
        "credential",
        "set",
        "bad",
        "--hosts",
        "localhost",
        "--header",
        "Host",
    ]);
    assert!(!bad.status.success());
    gw.cli_ok(&["credential", "remove", "cli_cred"]);
    gw.eventually("the removal applies", chat, |v| v["status"] == 401);

    // No secret in any surface; the store holds them sealed.
    for (what, text) in &surfaces(&gw) {
        assert_secret_absent(what, text, &[first, rotated, via_cli]);
    }
    assert!(gw.dir().join("data/credentials.key").exists());
}

/// `credential set --agents` refuses agents the credential could never be injected for:
/// unknown ids and agents of another tenant than the credential's (naming each), before
/// anything is stored; the agents' own tenant works.
#[test]
fn cli_credential_bindings_are_checked_against_the_agents() {
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        ..GatewayOpts::default()
    });
    gw.create_agent("billing_bot", "acme", &[]);
    gw.create_agent("default_bot", "default", &[]);
    let secret_file = gw.dir().join("cli-secret.txt");
    std::fs::write(&secret_file, "sk-binding-check-0123\n").expect("write");
    let secret_arg = secret_file.display().to_string();
    let set = |tenant: &str, agents: &str| {
        let cfg = gw.config_path().display().to_string();
        gw.cli(&[
            "credential",
            "set",
            "openai_api",
            "--hosts",
            "api.openai.com",
            "--tenant",
            tenant,
            "--agents",
            agents,
            "--secret-file",
            &secret_arg,
            "--config",
            &cfg,
        ])
    };
    let cases = [
        (
            "default",
            "billing_bot",
            vec!["`billing_bot` is in tenant `acme`"],
        ),
        ("acme", "ghost_bot", vec!["no such agent: ghost_bot"]),
        (
            "acme",
            "billing_bot,default_bot,ghost_bot",
            vec![
                "no such agent: ghost_bot",
                "`default_bot` is in tenant `default`",
            ],
        ),
    ];
    for (tenant, agents, needles) in cases {
        let out = set(tenant, agents);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tenant} {agents}: {err}");
        for n in needles {
            assert!(err.contains(n), "{tenant} {agents}: no {n:?} in {err}");
        }
        assert!(err.contains("--agents"), "{err}");
        assert!(
            err.contains(&format!("belongs to tenant `{tenant}`")),
            "{err}"
        );
        assert!(!err.contains("sk-binding-check"), "{err}");
    }
    let listed = gw.cli_ok(&["credential", "list"]);
    assert!(!listed.contains("openai_api"), "{listed}");

    let out = set("acme", "billing_bot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = gw.cli_ok(&["credential", "list", "--tenant", "acme"]);
    assert!(
        listed.contains("openai_api") && listed.contains("agents=billing_bot"),
        "{listed}"
    );
}
