//! `on_block = "stub"` and provider error envelopes, driven by the official
//! `openai` Python SDK through the real gateway (absolute-form to an
//! OpenAI-compatible host declared in `[[llm.providers]]`).
//!
//! The denied requests never reach an upstream, so the "provider" is a closed
//! local port: any forward would fail with 502 and the test would see it.

use crate::common::*;

const POLICY: &str = r#"package portcullis.policy.models

import rego.v1

default allow := false

allow if input.llm.provider == "local"

deny contains sprintf("model %s is not allowed", [input.llm.model]) if {
	input.llm.model == "gpt-forbidden"
}
"#;

/// An authenticated gateway whose `local` provider is a port nothing listens on,
/// and the OpenAI base URL pointing there.
fn start(on_block: &str) -> (Gateway, String) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\non_block = \"{on_block}\"\n\
             [[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{port}\"\n"
        ),
        files: vec![(
            "policies/models.rego".to_owned(),
            POLICY.as_bytes().to_vec(),
        )],
    });
    (gw, format!("http://127.0.0.1:{port}/v1"))
}

const SDK: &str = r#"
import json, sys, httpx, openai
proxy, base, model, stream = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
client = openai.OpenAI(base_url=base, api_key="sdk-dummy-key", max_retries=0,
                       http_client=httpx.Client(proxy=proxy))
try:
    if stream:
        text = ""
        for chunk in client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True):
            for c in chunk.choices:
                text += c.delta.content or ""
        print(json.dumps({"ok": True, "text": text}))
    else:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
        r = raw.parse()
        print(json.dumps({"ok": True, "text": r.choices[0].message.content,
                          "blocked": raw.headers.get("x-portcullis-blocked"),
                          "finish": r.choices[0].finish_reason}))
except openai.APIStatusError as e:
    print(json.dumps({"ok": False, "status": e.status_code, "type": type(e).__name__,
                      "message": e.message, "body": e.body}))
"#;

fn sdk(gw: &(Gateway, String), model: &str, stream: bool) -> serde_json::Value {
    let proxy = format!("http://demo:{}@{}", gw.0.demo_secret(), gw.0.proxy);
    let out = run_python(
        SDK,
        &[
            proxy,
            gw.1.clone(),
            model.to_owned(),
            if stream { "1" } else { "0" }.to_owned(),
        ],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn stub_mode_answers_a_refusal_the_openai_sdk_parses() {
    let gw = start("stub");
    let r = sdk(&gw, "gpt-forbidden", false);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["blocked"], "true", "{r}");
    assert_eq!(r["finish"], "stop", "{r}");
    let text = r["text"].as_str().expect("text");
    assert!(
        text.contains("model gpt-forbidden is not allowed"),
        "{text}"
    );
    assert!(text.contains("models"), "names the policy: {text}");

    let r = sdk(&gw, "gpt-forbidden", true);
    assert_eq!(r["ok"], true, "{r}");
    let text = r["text"].as_str().expect("text");
    assert!(
        text.contains("model gpt-forbidden is not allowed"),
        "{text}"
    );
}

#[test]
fn json_mode_denial_is_a_permission_error_carrying_our_detail() {
    let gw = start("json");
    let r = sdk(&gw, "gpt-forbidden", false);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(r["type"], "PermissionDeniedError", "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("model gpt-forbidden is not allowed")),
        "{r}"
    );
    // The SDK exposes the provider envelope (`error`) as the body; our fields ride along.
    assert_eq!(r["body"]["code"], "policy_denied", "{r}");
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(msg.contains("'policy': 'models'"), "{r}");
    assert!(msg.contains("'decision_id': '"), "{r}");

    // An allowed model is forwarded: the dead provider port proves it (502, not a stub).
    let r = sdk(&gw, "gpt-ok", false);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["status"], 502, "{r}");
    assert_eq!(r["body"]["code"], "upstream_unreachable", "{r}");
    assert_eq!(r["type"], "InternalServerError", "{r}");
}
