//! End-to-end identity: the real `portcullis` binary with authentication on,
//! real clients (curl, Python `requests`), the CLI and the admin API against
//! the same store. Every wait is bounded; nothing asserts on timing.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufReader, Write};

/// A policy letting agents reach the local origin and ask for tokens.
const TEST_POLICY: &str = r#"package portcullis.policy.test_allow

import rego.v1

allow if input.request.host == "127.0.0.1"

allow if input.kind == "token"
"#;

fn opts_for(port: u16) -> GatewayOpts {
    GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: "\n[policy]\ndir = \"{DIR}/policies\"\n".to_owned(),
        files: vec![(
            "policies/test_allow.rego".to_owned(),
            TEST_POLICY.as_bytes().to_vec(),
        )],
    }
}

fn authed_gateway(port: u16) -> Gateway {
    let gw = Gateway::launch(opts_for(port));
    assert!(gw.banner.contains("auth=required"), "{}", gw.banner);
    gw
}

/// `curl -x http://USER:PASS@PROXY URL`; returns (status, body).
fn curl_via(gw: &Gateway, user: &str, pass: &str, url: &str) -> (u16, String) {
    let proxy = format!("http://{user}:{pass}@{}", gw.proxy);
    let out = curl(&["-x", &proxy, "-w", "\n%{http_code}", url]);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    split_status(&String::from_utf8_lossy(&out.stdout))
}

fn split_status(s: &str) -> (u16, String) {
    let (body, code) = s.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_owned())
}

/// Header names (lower-case) the origin's `/echo` saw.
fn echo_header_names(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h[0].as_str().expect("name").to_ascii_lowercase())
        .collect()
}

fn assert_no_credential_reached(body: &str) {
    let names = echo_header_names(body);
    for banned in [
        "proxy-authorization",
        "x-portcullis-subagent",
        "authorization",
    ] {
        assert!(
            !names.iter().any(|n| n == banned),
            "{banned} reached the origin: {body}"
        );
    }
}

/// Status of one proxied GET with `Proxy-Authorization: auth`.
fn status_with(gw: &Gateway, origin: &Origin, auth: &str) -> u16 {
    proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(auth), &[]).status
}

/// Waits (bounded) until a CLI-created agent is known to the gateway (store poll).
fn wait_known(gw: &Gateway, origin: &Origin, id: &str, secret: &str) {
    let auth = basic(id, secret);
    gw.eventually(
        "the agent is known",
        || status_with(gw, origin, &auth),
        |s| *s == 200,
    );
}

/// A 407 exactly as the contract says: header, JSON code and reason.
fn assert_407(r: &RawResponse, reason: &str) {
    let v = r.assert_error(407, "proxy_auth_required");
    assert_eq!(
        r.header("proxy-authenticate"),
        Some("Basic realm=\"portcullis\""),
        "{r:?}"
    );
    assert_eq!(v["reason"], reason, "{v}");
}

/// `POST /oauth/token` on the proxy port (origin-form) with raw headers and body.
fn token_call(gw: &Gateway, headers: &[&str], body: &str) -> RawResponse {
    let mut req = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        gw.proxy,
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    send_raw(gw.proxy, req.as_bytes())
}

/// A token for `id` through the form + Basic flow.
fn fetch_token(gw: &Gateway, id: &str, secret: &str) -> String {
    let r = token_call(
        gw,
        &[
            &format!("Authorization: {}", basic(id, secret)),
            "Content-Type: application/x-www-form-urlencoded",
        ],
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 200, "{r:?} {}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

const PY_GET: &str = r#"
import json, sys, requests
proxy, url = sys.argv[1], sys.argv[2]
s = requests.Session()
s.trust_env = False
r = s.get(url, proxies={"http": proxy, "https": proxy}, timeout=60)
print(json.dumps({"status": r.status_code, "body": r.text}))
"#;

fn python_get(proxy: &str, url: &str) -> (u16, String) {
    let out = run_python(PY_GET, &[proxy.to_owned(), url.to_owned()]);
    let v: Value = serde_json::from_str(out.trim()).expect("python json");
    (
        v["status"].as_u64().expect("status") as u16,
        v["body"].as_str().expect("body").to_owned(),
    )
}

#[test]
fn basic_secret_reaches_origin_with_curl_and_python_and_is_stripped() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let demo = gw.demo_secret();
    let secret = gw.create_agent("bot_one", "t1", &[]);
    wait_known(&gw, &origin, "bot_one", &secret);

    for (id, s) in [("demo", demo.as_str()), ("bot_one", secret.as_str())] {
        let (status, body) = curl_via(&gw, id, s, &origin.url("/echo/curl"));
        assert_eq!(status, 200, "{id}: {body}");
        assert_no_credential_reached(&body);

        let proxy = format!("http://{id}:{s}@{}", gw.proxy);
        let (status, body) = python_get(&proxy, &origin.url("/echo/python"));
        assert_eq!(status, 200, "{id}: {body}");
        assert_no_credential_reached(&body);
    }

    // The access log records the agent and a complete response (all bytes reached curl).
    let log = gw.eventually(
        "the access log records the requests",
        || strip_ansi(&gw.stderr()),
        |log| {
            log.lines()
                .filter(|l| l.contains("path=/echo/curl"))
                .count()
                >= 2
        },
    );
    for l in log.lines().filter(|l| l.contains("path=/echo/")) {
        assert!(
            l.contains("status=200") && l.contains("completed=true"),
            "{l}"
        );
        assert!(!l.contains("client_aborted"), "{l}");
        assert!(
            l.contains("agent=\"demo\"") || l.contains("agent=\"bot_one\""),
            "{l}"
        );
    }

    // CONNECT: the identity binds to the tunnel (curl to a TLS origin).
    let tls = Origin::start_tls();
    drop(gw);
    let gw = Gateway::launch(GatewayOpts {
        proxy_lines: loopback_proxy_section(&[origin.port(), tls.port()]),
        ..opts_for(origin.port())
    });
    let secret = gw.create_agent("tunnel_bot", "t1", &[]);
    wait_known(&gw, &origin, "tunnel_bot", &secret);
    let cert = tls.cert_pem.as_ref().expect("pem").display().to_string();
    let ok = curl(&[
        "-x",
        &format!("http://tunnel_bot:{secret}@{}", gw.proxy),
        "--cacert",
        &cert,
        "-w",
        "\n%{http_code}",
        &format!("https://127.0.0.1:{}/echo", tls.port()),
    ]);
    let (status, body) = split_status(&String::from_utf8_lossy(&ok.stdout));
    assert_eq!(
        status,
        200,
        "{body} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_no_credential_reached(&body);
    // Python requests sends Proxy-Authorization on the CONNECT.
    let out = run_python(
        r#"
import json, sys, requests
proxy, url, ca = sys.argv[1], sys.argv[2], sys.argv[3]
s = requests.Session()
s.trust_env = False
r = s.get(url, proxies={"https": proxy}, verify=ca, timeout=60)
print(json.dumps({"status": r.status_code, "body": r.text}))
"#,
        &[
            format!("http://tunnel_bot:{secret}@{}", gw.proxy),
            format!("https://127.0.0.1:{}/echo/py", tls.port()),
            cert.clone(),
        ],
    );
    let v: Value = serde_json::from_str(out.trim()).expect("python json");
    assert_eq!(v["status"], 200, "{v}");
    assert_no_credential_reached(v["body"].as_str().expect("body"));
    // Without credentials the CONNECT itself gets 407.
    let r = send_raw(
        gw.proxy,
        format!(
            "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
            p = tls.port()
        )
        .as_bytes(),
    );
    assert_407(&r, "missing");
    assert!(!gw.stderr().contains(&secret), "secret in the log");
}

#[test]
fn tokens_from_the_endpoint_work_as_basic_password_and_bearer() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let secret = gw.create_agent(
        "tok_bot",
        "t1",
        &["--scopes", "openai:chat:create,stripe:customer:read"],
    );
    // The CLI write reaches the gateway within the store poll interval.
    gw.eventually(
        "the agent is known",
        || status_with(&gw, &origin, &basic("tok_bot", &secret)),
        |s| *s == 200,
    );

    // Form body with HTTP Basic (curl as a real OAuth client).
    let out = curl(&[
        "-u",
        &format!("tok_bot:{secret}"),
        "-d",
        "grant_type=client_credentials&scope=openai:chat:create",
        &format!("http://{}/oauth/token", gw.proxy),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("token json");
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert_eq!(v["scope"], "openai:chat:create", "{v}");
    let form_token = v["access_token"].as_str().expect("token").to_owned();
    assert_eq!(form_token.split('.').count(), 3);

    // JSON body with credentials in the body.
    let body = json!({"grant_type": "client_credentials", "client_id": "tok_bot",
                      "client_secret": secret})
    .to_string();
    let r = token_call(&gw, &["Content-Type: application/json"], &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let json_token = r.json()["access_token"].as_str().expect("tok").to_owned();

    for t in [&form_token, &json_token] {
        // As the Basic password (curl and Python).
        let (status, body) = curl_via(&gw, "tok_bot", t, &origin.url("/echo"));
        assert_eq!(status, 200, "{body}");
        assert_no_credential_reached(&body);
        let (status, body) = python_get(
            &format!("http://tok_bot:{t}@{}", gw.proxy),
            &origin.url("/echo"),
        );
        assert_eq!(status, 200, "{body}");
        // As Proxy-Authorization: Bearer.
        let out = curl(&[
            "-x",
            &gw.proxy_url(),
            "--proxy-header",
            &format!("Proxy-Authorization: Bearer {t}"),
            "-w",
            "\n%{http_code}",
            &origin.url("/echo"),
        ]);
        let (status, body) = split_status(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(status, 200, "{body}");
        assert_no_credential_reached(&body);
    }
    // A token under someone else's name is refused.
    let r = proxy_send(
        gw.proxy,
        "GET",
        &origin.url("/echo"),
        Some(&basic("demo", &form_token)),
        &[],
    );
    assert_407(&r, "bad_token");

    // JWKS on the proxy port.
    let r = send_raw(
        gw.proxy,
        format!(
            "GET /.well-known/jwks.json HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gw.proxy
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let jwks = r.json();
    let k = &jwks["keys"][0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str()),
        (Some("OKP"), Some("Ed25519")),
        "{jwks}"
    );
    assert!(k["x"].as_str().is_some_and(|x| !x.is_empty()), "{jwks}");

    // Errors: 401 invalid_client (wrong secret, unknown client), 403 invalid_scope, 400.
    let form = "Content-Type: application/x-www-form-urlencoded";
    let wrong = format!("Authorization: {}", basic("tok_bot", "not-the-secret"));
    let r = token_call(&gw, &[&wrong, form], "grant_type=client_credentials");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"portcullis\"")
    );
    let unknown = format!("Authorization: {}", basic("nobody_here", &secret));
    let r = token_call(&gw, &[&unknown, form], "grant_type=client_credentials");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let good = format!("Authorization: {}", basic("tok_bot", &secret));
    let r = token_call(
        &gw,
        &[&good, form],
        "grant_type=client_credentials&scope=github:repo:write",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("invalid_scope"))
    );
    let r = token_call(&gw, &[&good, form], "scope=openai:chat:create");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = token_call(&gw, &[&good, "Content-Type: application/json"], "{not json");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = token_call(&gw, &[&good, form], "grant_type=password");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    let m = gw.metrics();
    assert_eq!(
        m.value("portcullis_tokens_issued_total", &[("result", "issued")]),
        2.0
    );
    assert_eq!(
        m.value(
            "portcullis_tokens_issued_total",
            &[("result", "invalid_client")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "portcullis_tokens_issued_total",
            &[("result", "invalid_scope")]
        ),
        1.0
    );
    let log = gw.stderr();
    for s in [&secret, &form_token, &json_token] {
        assert!(!log.contains(s.as_str()), "credential in the log");
    }
}

#[test]
fn missing_credentials_get_407_and_the_same_connection_then_succeeds() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let demo = gw.demo_secret();
    let url = origin.url("/echo");

    // Raw: 407 then a retry with credentials on the same TCP connection.
    let s = connect(gw.proxy);
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    w.write_all(&proxy_request("GET", &url, None, &[]))
        .expect("write");
    let first = read_response(&mut r, false).expect("407");
    assert_407(&first, "missing");
    w.write_all(&proxy_request(
        "GET",
        &url,
        Some(&basic("demo", &demo)),
        &[],
    ))
    .expect("write");
    let second = read_response(&mut r, false).expect("retry");
    assert_eq!(second.status, 200, "{second:?}");
    assert_no_credential_reached(&String::from_utf8_lossy(&second.body));
    // ... and a wrong secret on the same connection is a 407 again, connection still usable.
    w.write_all(&proxy_request(
        "GET",
        &url,
        Some(&basic("demo", "wrong-secret-value")),
        &[],
    ))
    .expect("write");
    assert_407(&read_response(&mut r, false).expect("407"), "bad_secret");
    w.write_all(&proxy_request(
        "GET",
        &url,
        Some(&basic("demo", &demo)),
        &[],
    ))
    .expect("write");
    assert_eq!(read_response(&mut r, false).expect("200").status, 200);

    // curl's own 407 dance: --proxy-anyauth first asks without credentials,
    // then retries with Basic; one connection.
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--proxy-user",
        &format!("demo:{demo}"),
        "--proxy-anyauth",
        "-w",
        "\n%{http_code} %{num_connects}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (_, last) = text.rsplit_once('\n').expect("write-out");
    assert_eq!(
        last.trim(),
        "200 1",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Malformed and unknown.
    let r = proxy_send(gw.proxy, "GET", &url, Some("Basic !!!not-base64"), &[]);
    assert_407(&r, "malformed");
    let r = proxy_send(gw.proxy, "GET", &url, Some(&basic("ghost", &demo)), &[]);
    assert_407(&r, "unknown_agent");

    let m = gw.metrics();
    let f = |reason| {
        m.value(
            "portcullis_proxy_auth_failures_total",
            &[("reason", reason)],
        )
    };
    assert!(f("missing") >= 2.0, "{}", m.0);
    assert_eq!(f("bad_secret"), 1.0);
    assert_eq!(f("malformed"), 1.0);
    assert_eq!(f("unknown_agent"), 1.0);
    assert!(!gw.stderr().contains(&demo), "demo secret in the log");
}

#[test]
fn cli_suspend_revoke_and_rotate_apply_without_restart() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let secret = gw.create_agent("life_bot", "t1", &[]);
    let auth = basic("life_bot", &secret);
    gw.eventually(
        "agent known",
        || status_with(&gw, &origin, &auth),
        |s| *s == 200,
    );
    let token = fetch_token(&gw, "life_bot", &secret);
    let bearer = format!("Bearer {token}");
    assert_eq!(status_with(&gw, &origin, &bearer), 200);

    gw.cli_ok(&["agent", "suspend", "life_bot"]);
    gw.eventually(
        "suspension applies",
        || status_with(&gw, &origin, &auth),
        |s| *s == 407,
    );
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]);
    assert_407(&r, "suspended");
    assert_eq!(
        status_with(&gw, &origin, &bearer),
        407,
        "token of a suspended agent"
    );
    let r = token_call(
        &gw,
        &[
            &format!("Authorization: {auth}"),
            "Content-Type: application/x-www-form-urlencoded",
        ],
        "grant_type=client_credentials",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );

    gw.cli_ok(&["agent", "activate", "life_bot"]);
    gw.eventually(
        "activation applies",
        || status_with(&gw, &origin, &auth),
        |s| *s == 200,
    );
    assert_eq!(status_with(&gw, &origin, &bearer), 200);

    // Rotation: old secret and old token refused, the new secret and its tokens work.
    let out = gw.cli_ok(&["agent", "rotate", "life_bot"]);
    let new_secret = out.lines().nth(1).expect("new secret").trim().to_owned();
    assert_ne!(new_secret, secret);
    let new_auth = basic("life_bot", &new_secret);
    gw.eventually(
        "rotation applies",
        || status_with(&gw, &origin, &new_auth),
        |s| *s == 200,
    );
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]);
    assert_407(&r, "bad_secret");
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&bearer), &[]);
    assert_407(&r, "rotated");
    let (status, _) = curl_via(&gw, "life_bot", &token, &origin.url("/echo"));
    assert_eq!(status, 407, "old token as Basic password");
    let new_token = fetch_token(&gw, "life_bot", &new_secret);
    assert_eq!(
        status_with(&gw, &origin, &format!("Bearer {new_token}")),
        200
    );
    let (status, _) = curl_via(&gw, "life_bot", &new_secret, &origin.url("/echo"));
    assert_eq!(status, 200);

    // Revocation is final.
    gw.cli_ok(&["agent", "revoke", "life_bot"]);
    gw.eventually(
        "revocation applies",
        || status_with(&gw, &origin, &new_auth),
        |s| *s == 407,
    );
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&new_auth), &[]);
    assert_407(&r, "revoked");
    let out = gw.cli(&[
        "agent",
        "activate",
        "life_bot",
        "--config",
        &gw.config_path().display().to_string(),
    ]);
    assert!(
        !out.status.success(),
        "re-activating a revoked agent must fail"
    );
    assert_eq!(status_with(&gw, &origin, &new_auth), 407);

    let m = gw.metrics();
    let f = |reason| {
        m.value(
            "portcullis_proxy_auth_failures_total",
            &[("reason", reason)],
        )
    };
    assert!(f("suspended") >= 2.0, "{}", m.0);
    assert!(f("rotated") >= 1.0, "{}", m.0);
    assert!(f("revoked") >= 1.0, "{}", m.0);
    let log = gw.stderr();
    for s in [&secret, &new_secret, &token, &new_token] {
        assert!(!log.contains(s.as_str()), "credential in the log");
    }
}

#[test]
fn admin_api_changes_apply_to_the_very_next_request_with_roles_and_tenants() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let admin_a = gw.create_api_key("tenant_a", "admin");
    let viewer_a = gw.create_api_key("tenant_a", "viewer");
    let admin_b = gw.create_api_key("tenant_b", "admin");

    // Create through the API: the secret is in the answer, usable at once.
    let r = gw.admin_call(
        "POST",
        "/v1/agents",
        Some(&admin_a),
        Some(&json!({"id": "api_bot", "scopes": ["openai:chat:create"]})),
    );
    assert!(
        r.status == 201 || r.status == 200,
        "{r:?} {}",
        String::from_utf8_lossy(&r.body)
    );
    let created = r.json();
    let secret = created["client_secret"]
        .as_str()
        .or_else(|| created["secret"].as_str())
        .unwrap_or_else(|| panic!("no secret in {created}"))
        .to_owned();
    let auth = basic("api_bot", &secret);
    assert_eq!(status_with(&gw, &origin, &auth), 200);

    // Suspend via the API: the very next request is refused (no waiting).
    let r = gw.admin_call("POST", "/v1/agents/api_bot/suspend", Some(&admin_a), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_407(
        &proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]),
        "suspended",
    );
    let r = gw.admin_call("POST", "/v1/agents/api_bot/activate", Some(&admin_a), None);
    assert_eq!(r.status, 200);
    assert_eq!(status_with(&gw, &origin, &auth), 200);

    // Mode disabled via the API → 403 agent_disabled on the next request.
    let r = gw.admin_call(
        "PUT",
        "/v1/agents/api_bot/config",
        Some(&admin_a),
        Some(&json!({"mode": "disabled"})),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]);
    r.assert_error(403, "agent_disabled");
    let r = gw.admin_call(
        "PUT",
        "/v1/agents/api_bot/config",
        Some(&admin_a),
        Some(&json!({"mode": "active"})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(status_with(&gw, &origin, &auth), 200);
    let r = gw.admin_call(
        "PUT",
        "/v1/agents/api_bot/config",
        Some(&admin_a),
        Some(&json!({})),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));

    // Rotation via the API: the old secret is refused at once.
    let r = gw.admin_call("POST", "/v1/agents/api_bot/rotate", Some(&admin_a), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rotated = r.json();
    let new_secret = rotated["client_secret"]
        .as_str()
        .or_else(|| rotated["secret"].as_str())
        .unwrap_or_else(|| panic!("no secret in {rotated}"))
        .to_owned();
    assert_407(
        &proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]),
        "bad_secret",
    );
    assert_eq!(
        status_with(&gw, &origin, &basic("api_bot", &new_secret)),
        200
    );

    // A viewer reads but cannot write.
    let r = gw.admin_call("GET", "/v1/agents/api_bot", Some(&viewer_a), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "api_bot");
    assert!(!String::from_utf8_lossy(&r.body).contains(&new_secret));
    for (m, p, b) in [
        ("POST", "/v1/agents/api_bot/suspend", None),
        ("POST", "/v1/agents", Some(json!({"id": "viewer_made"}))),
        (
            "PUT",
            "/v1/agents/api_bot/config",
            Some(json!({"mode": "shadow"})),
        ),
    ] {
        let r = gw.admin_call(m, p, Some(&viewer_a), b.as_ref());
        assert_eq!(
            r.status,
            403,
            "{m} {p}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        status_with(&gw, &origin, &basic("api_bot", &new_secret)),
        200
    );

    // Tenant B sees nothing of tenant A's agent and cannot act on it.
    for (m, p) in [
        ("GET", "/v1/agents/api_bot"),
        ("POST", "/v1/agents/api_bot/suspend"),
        ("POST", "/v1/agents/api_bot/rotate"),
    ] {
        let r = gw.admin_call(m, p, Some(&admin_b), None);
        assert!(r.status == 404 || r.status == 403, "{m} {p}: {r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("tenant_a") && !body.contains("openai:chat"),
            "{body}"
        );
    }
    let r = gw.admin_call("GET", "/v1/agents", Some(&admin_b), None);
    assert_eq!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("api_bot"));
    assert_eq!(
        status_with(&gw, &origin, &basic("api_bot", &new_secret)),
        200
    );

    // No key / a wrong key.
    assert_eq!(gw.admin_call("GET", "/v1/agents", None, None).status, 401);
    assert_eq!(
        gw.admin_call("GET", "/v1/agents", Some("pk_not_a_real_key"), None)
            .status,
        401
    );
    let log = gw.stderr();
    for s in [&secret, &new_secret, &admin_a, &viewer_a, &admin_b] {
        assert!(!log.contains(s.as_str()), "credential in the log");
    }
}

#[test]
fn subagent_header_is_validated_stripped_and_registered() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let demo = gw.demo_secret();
    let auth = basic("demo", &demo);
    let url = origin.url("/echo");

    for bad in ["Bad Name", "x", "1starts_with_digit", &"a".repeat(65)] {
        let h = format!("X-Portcullis-Subagent: {bad}");
        let r = proxy_send(gw.proxy, "GET", &url, Some(&auth), &[&h]);
        r.assert_error(400, "invalid_subagent");
    }
    let before = origin_requests(&origin);
    let r = proxy_send(
        gw.proxy,
        "GET",
        &url,
        Some(&auth),
        &["X-Portcullis-Subagent: helper_one"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_no_credential_reached(&String::from_utf8_lossy(&r.body));
    assert_eq!(
        origin_requests(&origin),
        before + 1,
        "invalid ones never reached the origin"
    );

    // Also with curl as the client.
    let out = curl(&[
        "-x",
        &format!("http://demo:{demo}@{}", gw.proxy),
        "-H",
        "X-Portcullis-Subagent: helper_two",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    let (status, body) = split_status(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(status, 200, "{body}");
    assert_no_credential_reached(&body);

    let listed = gw.eventually(
        "sub-agents are listed",
        || gw.cli_ok(&["agent", "list"]),
        |out| out.contains("demo/helper_one") && out.contains("demo/helper_two"),
    );
    assert!(!listed.contains("demo/Bad"), "{listed}");
    let json_list: Value =
        serde_json::from_str(&gw.cli_ok(&["agent", "list", "--json"])).expect("json");
    let sub = json_list
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["id"] == "helper_one")
        .expect("helper_one listed");
    assert_eq!(sub["parent"], "demo", "{sub}");

    // The admin API lists it under its parent too.
    let key = gw.create_api_key("default", "viewer");
    let r = gw.admin_call("GET", "/v1/agents", Some(&key), None);
    assert_eq!(r.status, 200);
    let v = r.json();
    let sub = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["id"] == "helper_one")
        .unwrap_or_else(|| panic!("helper_one missing: {v}"));
    assert_eq!(sub["parent"], "demo", "{sub}");

    // A sub-agent has no credentials of its own.
    let r = proxy_send(
        gw.proxy,
        "GET",
        &url,
        Some(&basic("helper_one", &demo)),
        &[],
    );
    assert_407(&r, "unknown_agent");
}

fn origin_requests(o: &Origin) -> usize {
    o.requests()
}

#[test]
fn config_declared_agent_with_secret_sha256_authenticates() {
    let origin = Origin::start();
    let secret = "config-declared-secret-0123456789";
    let mut opts = opts_for(origin.port());
    opts.rest.push_str(&format!(
        "\n[[agents]]\nid = \"gitops_bot\"\ntenant = \"ops\"\ngroups = [\"batch\"]\n\
         allowed_scopes = [\"openai:chat:create\"]\nsecret_sha256 = \"{}\"\n",
        sha256_hex(secret.as_bytes())
    ));
    let gw = Gateway::launch(opts);
    assert!(gw.banner.contains("agents=1"), "{}", gw.banner);

    let (status, body) = curl_via(&gw, "gitops_bot", secret, &origin.url("/echo"));
    assert_eq!(status, 200, "{body}");
    assert_no_credential_reached(&body);
    let (status, _) = curl_via(
        &gw,
        "gitops_bot",
        "config-declared-secret-wrong",
        &origin.url("/echo"),
    );
    assert_eq!(status, 407);
    let t = fetch_token(&gw, "gitops_bot", secret);
    assert_eq!(status_with(&gw, &origin, &format!("Bearer {t}")), 200);
    let shown: Value =
        serde_json::from_str(&gw.cli_ok(&["agent", "show", "gitops_bot"])).expect("json");
    assert_eq!(shown["tenant"], "ops", "{shown}");
    assert_eq!(shown["source"], "config", "{shown}");
    assert!(!gw.stderr().contains(secret), "secret in the log");
}

#[test]
fn cli_token_command_signs_with_the_gateway_key() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let _ = gw.demo_secret();
    let t = gw.cli_ok(&["token", "--agent", "demo"]).trim().to_owned();
    assert_eq!(t.split('.').count(), 3, "{t}");
    assert_eq!(status_with(&gw, &origin, &format!("Bearer {t}")), 200);
    // A token for an unknown agent cannot be made; a tampered one is refused.
    let out = gw.cli(&[
        "token",
        "--agent",
        "no_such_agent",
        "--config",
        &gw.config_path().display().to_string(),
    ]);
    assert!(!out.status.success());
    let mut tampered = t.clone();
    tampered.pop();
    tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
    let r = proxy_send(
        gw.proxy,
        "GET",
        &origin.url("/echo"),
        Some(&format!("Bearer {tampered}")),
        &[],
    );
    assert_407(&r, "bad_token");
}

/// The `[[agents]]` section declaring `gitops_bot` with `secret`'s hash.
fn gitops_agent_section(secret: &str) -> String {
    format!(
        "\n[[agents]]\nid = \"gitops_bot\"\ntenant = \"ops\"\n\
         allowed_scopes = [\"openai:chat:create\"]\nsecret_sha256 = \"{}\"\n",
        sha256_hex(secret.as_bytes())
    )
}

/// The status of a proxied GET, polled until it is `want` (the CLI's writes reach a running
/// gateway through the store poll).
fn wait_status(gw: &Gateway, origin: &Origin, auth: &str, want: u16) {
    gw.eventually(
        &format!("a proxied request answers {want}"),
        || status_with(gw, origin, auth),
        |s| *s == want,
    );
}

/// Incident actions on a config-declared agent, through the CLI and the admin API, take
/// effect at once and survive restarts with the unchanged config: a rotated-out secret and
/// older tokens stay refused, suspension, revocation and `disabled` stay, and a run-time
/// re-activation stays too.
#[test]
fn incident_actions_on_config_agents_survive_restarts() {
    let origin = Origin::start();
    let config_secret = "config-declared-secret-0123456789";
    let mut opts = opts_for(origin.port());
    opts.rest.push_str(&gitops_agent_section(config_secret));
    let mut gw = Gateway::launch(opts);
    let old = basic("gitops_bot", config_secret);
    assert_eq!(status_with(&gw, &origin, &old), 200);
    let old_token = format!("Bearer {}", fetch_token(&gw, "gitops_bot", config_secret));

    // CLI rotation: the old secret is refused at once, the new one works ...
    let out = gw.cli_ok(&["agent", "rotate", "gitops_bot"]);
    let rotated = out.lines().nth(1).expect("new secret").trim().to_owned();
    let new = basic("gitops_bot", &rotated);
    wait_status(&gw, &origin, &old, 407);
    assert_eq!(status_with(&gw, &origin, &new), 200);
    // ... and after a restart with the very same config, still.
    gw.restart();
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&old), &[]);
    assert_407(&r, "bad_secret");
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&old_token), &[]);
    assert_407(&r, "rotated");
    assert_eq!(status_with(&gw, &origin, &new), 200);
    let r = token_call(
        &gw,
        &[
            &format!("Authorization: {old}"),
            "Content-Type: application/x-www-form-urlencoded",
        ],
        "grant_type=client_credentials",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["code"], "invalid_client", "{r:?}");
    let shown: Value =
        serde_json::from_str(&gw.cli_ok(&["agent", "show", "gitops_bot"])).expect("json");
    assert_eq!(shown["generation"], 2, "{shown}");
    assert_eq!(shown["config_overrides"], json!(["secret"]), "{shown}");

    // Suspension survives a restart; a run-time activation does too.
    gw.cli_ok(&["agent", "suspend", "gitops_bot"]);
    wait_status(&gw, &origin, &new, 407);
    gw.restart();
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&new), &[]);
    assert_407(&r, "suspended");
    gw.cli_ok(&["agent", "activate", "gitops_bot"]);
    wait_status(&gw, &origin, &new, 200);
    gw.restart();
    assert_eq!(status_with(&gw, &origin, &new), 200);

    // `set --mode disabled` survives a restart; `set --mode active` at run time does too.
    gw.cli_ok(&["agent", "set", "gitops_bot", "--mode", "disabled"]);
    wait_status(&gw, &origin, &new, 403);
    gw.restart();
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&new), &[]);
    r.assert_error(403, "agent_disabled");
    let shown: Value =
        serde_json::from_str(&gw.cli_ok(&["agent", "show", "gitops_bot"])).expect("json");
    assert_eq!(shown["mode"], "disabled", "{shown}");
    assert_eq!(
        shown["config_overrides"],
        json!(["mode", "secret"]),
        "{shown}"
    );
    gw.cli_ok(&["agent", "set", "gitops_bot", "--mode", "active"]);
    wait_status(&gw, &origin, &new, 200);
    gw.restart();
    assert_eq!(status_with(&gw, &origin, &new), 200);

    // The admin API's equivalents: rotate, then disable through `enabled: false`.
    let key = gw.create_api_key("ops", "admin");
    let r = gw.admin_call("POST", "/v1/agents/gitops_bot/rotate", Some(&key), None);
    assert_eq!(r.status, 200, "{r:?}");
    let api_secret = r.json()["secret"].as_str().expect("secret").to_owned();
    let api_new = basic("gitops_bot", &api_secret);
    assert_eq!(
        r.json()["agent"]["config_overrides"],
        json!(["mode", "secret"])
    );
    let r = gw.admin_call(
        "PUT",
        "/v1/agents/gitops_bot/config",
        Some(&key),
        Some(&json!({"enabled": false})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["config_overrides"], json!(["mode", "secret"]));
    gw.restart();
    for auth in [&old, &new] {
        let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(auth), &[]);
        assert_407(&r, "bad_secret");
    }
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&api_new), &[]);
    r.assert_error(403, "agent_disabled");
    let r = gw.admin_call(
        "PUT",
        "/v1/agents/gitops_bot/config",
        Some(&key),
        Some(&json!({"enabled": true})),
    );
    assert_eq!(r.status, 200, "{r:?}");

    // Revocation through the admin API is final across restarts.
    let r = gw.admin_call("POST", "/v1/agents/gitops_bot/revoke", Some(&key), None);
    assert_eq!(r.status, 200, "{r:?}");
    gw.restart();
    let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&api_new), &[]);
    assert_407(&r, "revoked");
    assert!(!gw.stderr().contains(config_secret), "secret in the log");
    assert!(!gw.stderr().contains(&rotated), "secret in the log");
}

/// Editing the config to a *new* secret after a run-time rotation is the operator's newer
/// decision: it applies at the next start (and the generation moves on, so tokens of the
/// rotated secret die), while the unchanged mode override stays.
#[test]
fn a_new_config_secret_after_a_rotation_applies_at_the_next_start() {
    let origin = Origin::start();
    let first = "config-declared-secret-0123456789";
    let mut opts = opts_for(origin.port());
    opts.rest.push_str(&gitops_agent_section(first));
    let mut gw = Gateway::launch(opts);
    let out = gw.cli_ok(&["agent", "rotate", "gitops_bot"]);
    let rotated = out.lines().nth(1).expect("new secret").trim().to_owned();
    gw.cli_ok(&["agent", "set", "gitops_bot", "--mode", "shadow"]);
    let rotated_auth = basic("gitops_bot", &rotated);
    wait_status(&gw, &origin, &rotated_auth, 200);
    let rotated_token = format!("Bearer {}", fetch_token(&gw, "gitops_bot", &rotated));

    let edited = "edited-config-secret-9876543210";
    let text = std::fs::read_to_string(gw.config_path()).expect("config");
    let text = text.replace(
        &sha256_hex(first.as_bytes()),
        &sha256_hex(edited.as_bytes()),
    );
    std::fs::write(gw.config_path(), text).expect("write config");
    gw.restart();

    assert_eq!(status_with(&gw, &origin, &basic("gitops_bot", edited)), 200);
    for auth in [basic("gitops_bot", first), rotated_auth] {
        let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&auth), &[]);
        assert_407(&r, "bad_secret");
    }
    let r = proxy_send(
        gw.proxy,
        "GET",
        &origin.url("/echo"),
        Some(&rotated_token),
        &[],
    );
    assert_407(&r, "rotated");
    let shown: Value =
        serde_json::from_str(&gw.cli_ok(&["agent", "show", "gitops_bot"])).expect("json");
    assert_eq!(shown["generation"], 3, "{shown}");
    assert_eq!(
        shown["mode"], "shadow",
        "the unchanged config keeps the run-time mode"
    );
}

/// `GET /v1/decisions?QUERY` with `key`; the records.
fn decisions(gw: &Gateway, key: &str, query: &str) -> Vec<Value> {
    let r = gw.admin_call("GET", &format!("/v1/decisions?{query}"), Some(key), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Token endpoint refusals after the client was authenticated (a scope escalation, a
/// suspended agent) are attributed to the agent and its tenant, so the tenant sees them in
/// /v1/decisions; a wrong secret is never attributed (it proves nothing about who sent it)
/// and is visible to the platform tenant only.
#[test]
fn token_refusals_after_authentication_are_attributed_to_the_agent() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let secret = gw.create_agent("scope_bot", "acme", &["--scopes", "openai:chat:create"]);
    let acme = gw.create_api_key("acme", "viewer");
    let platform = gw.create_api_key("default", "viewer");
    let globex = gw.create_api_key("globex", "admin");
    let call = |secret: &str, scope: &str| {
        token_call(
            &gw,
            &[
                &format!("Authorization: {}", basic("scope_bot", secret)),
                "Content-Type: application/x-www-form-urlencoded",
            ],
            &format!("grant_type=client_credentials&scope={scope}"),
        )
    };
    gw.eventually(
        "the CLI's agent can get a token",
        || call(&secret, "openai:chat:create").status,
        |s| *s == 200,
    );

    // Scope escalation: 403 invalid_scope, recorded for scope_bot in acme.
    let r = call(&secret, "admin:all:write");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["code"], "invalid_scope");
    let recs = gw.eventually(
        "the escalation is in acme's decisions",
        || decisions(&gw, &acme, "verdict=deny&agent_id=scope_bot"),
        |v| !v.is_empty(),
    );
    let rec = &recs[0];
    assert_eq!(rec["kind"], "token", "{rec}");
    assert_eq!(rec["tenant"], "acme", "{rec}");
    assert_eq!(rec["status"], 403, "{rec}");
    assert_eq!(rec["error"], "invalid_scope", "{rec}");
    assert_eq!(rec["path"], "/oauth/token", "{rec}");
    assert!(!rec.to_string().contains(&secret), "secret in the record");

    // A wrong secret claiming scope_bot: not attributed, so not acme's; the platform's.
    let r = call("wrong-secret-0123456789", "openai:chat:create");
    assert_eq!(r.status, 401, "{r:?}");
    let unattributed = gw.eventually(
        "the wrong secret is in the platform's decisions",
        || decisions(&gw, &platform, "verdict=error"),
        |v| v.iter().any(|r| r["status"] == 401 && r["kind"] == "token"),
    );
    let rec = unattributed
        .iter()
        .find(|r| r["status"] == 401 && r["kind"] == "token")
        .expect("record");
    assert_eq!(rec["tenant"], "", "{rec}");
    assert_eq!(rec["agent_id"], "", "{rec}");
    let id = rec["id"].as_str().expect("id");
    assert_eq!(
        gw.admin_call("GET", &format!("/v1/decisions/{id}"), Some(&platform), None)
            .status,
        200
    );
    for key in [&acme, &globex] {
        assert_eq!(
            gw.admin_call("GET", &format!("/v1/decisions/{id}"), Some(key), None)
                .status,
            404
        );
        assert!(
            decisions(&gw, key, "since=1h")
                .iter()
                .all(|r| r["tenant"] != ""),
            "unattributed records leaked"
        );
    }

    // Suspended: the verified client's refusal is attributed too.
    gw.cli_ok(&["agent", "suspend", "scope_bot"]);
    gw.eventually(
        "the suspension applies",
        || call(&secret, "openai:chat:create").status,
        |s| *s == 401,
    );
    let recs = gw.eventually(
        "the suspended client's refusal is in acme's decisions",
        || decisions(&gw, &acme, "verdict=error&agent_id=scope_bot"),
        |v| v.iter().any(|r| r["status"] == 401),
    );
    assert!(recs.iter().all(|r| r["tenant"] == "acme"), "{recs:?}");
    assert!(decisions(&gw, &globex, "since=1h").is_empty());
}

/// Sends `req` from source address `src` (any 127.0.0.0/8 address is local on Linux).
fn send_raw_from(src: &str, addr: std::net::SocketAddr, req: &[u8]) -> RawResponse {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: std::net::SocketAddr = format!("{src}:0").parse().expect("source address");
    sock.bind(&from.into()).expect("bind source address");
    sock.connect_timeout(&addr.into(), TIMEOUT)
        .expect("connect");
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.write_all(req).expect("write request");
    read_response(&mut BufReader::new(s), false).expect("read response")
}

/// An agent created through the admin API (the registry is reloaded before the answer, so
/// no failed attempt is spent waiting for it); returns its secret.
fn admin_created_agent(gw: &Gateway, key: &str, id: &str) -> String {
    let r = gw.admin_call(
        "POST",
        "/v1/agents",
        Some(key),
        Some(&json!({"id": id, "scopes": ["openai:chat:create"]})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["secret"].as_str().expect("secret").to_owned()
}

/// Every record of the platform tenant's /v1/decisions since an hour ago, paged.
fn all_platform_records(gw: &Gateway, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = decisions(gw, key, &format!("since=1h&limit=200&offset={}", out.len()));
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A 429 from the throttle: `Retry-After` seconds and the JSON code.
fn assert_throttled(r: &RawResponse) {
    assert_eq!(r.status, 429, "{r:?}");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {r:?}"));
    assert!((1..=6).contains(&secs), "{secs}");
    assert_eq!(r.json()["code"], "auth_throttled", "{r:?}");
    assert!(r.header("proxy-authenticate").is_none(), "{r:?}");
}

/// 250 wrong secrets through the proxy: after the burst of 20, 429 + Retry-After without
/// verification; the real agent's secret and token from the same address still work; the
/// claimed agent is throttled from other addresses too; metric and audit records match.
#[test]
fn guessing_through_the_proxy_is_throttled_without_locking_out_the_agent() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let key = gw.create_api_key("acme", "admin");
    let platform = gw.create_api_key("default", "viewer");
    let secret = admin_created_agent(&gw, &key, "target_bot");
    let real = basic("target_bot", &secret);
    assert_eq!(status_with(&gw, &origin, &real), 200);
    let token = format!("Bearer {}", fetch_token(&gw, "target_bot", &secret));

    let mut refused = 0;
    let mut throttled = 0;
    for i in 0..250 {
        let guess = basic("target_bot", &format!("guessed-secret-{i:04}"));
        let r = proxy_send(gw.proxy, "GET", &origin.url("/echo"), Some(&guess), &[]);
        if i < 20 {
            assert_407(&r, "bad_secret");
            refused += 1;
        } else {
            assert_throttled(&r);
            throttled += 1;
        }
        // The real agent, from the same address, is never locked out.
        if i % 50 == 49 {
            assert_eq!(status_with(&gw, &origin, &real), 200, "after {i} guesses");
            assert_eq!(status_with(&gw, &origin, &token), 200, "after {i} guesses");
        }
    }
    assert_eq!((refused, throttled), (20, 230));
    // A token freshly issued while throttled works at once (the endpoint remembers it).
    let fresh = format!("Bearer {}", fetch_token(&gw, "target_bot", &secret));
    assert_eq!(status_with(&gw, &origin, &fresh), 200);
    // Even the right secret of another agent is not verified from the throttled address.
    let other_secret = admin_created_agent(&gw, &key, "other_bot");
    let r = proxy_send(
        gw.proxy,
        "GET",
        &origin.url("/echo"),
        Some(&basic("other_bot", &other_secret)),
        &[],
    );
    assert_throttled(&r);
    // From another address, the guessed-at agent is throttled too; other agents are not.
    let req = proxy_request(
        "GET",
        &origin.url("/echo"),
        Some(&basic("target_bot", "yet-another-guess")),
        &["Connection: close"],
    );
    assert_throttled(&send_raw_from("127.0.0.2", gw.proxy, &req));
    let req = proxy_request(
        "GET",
        &origin.url("/echo"),
        Some(&basic("other_bot", &other_secret)),
        &["Connection: close"],
    );
    assert_eq!(send_raw_from("127.0.0.2", gw.proxy, &req).status, 200);

    let m = gw.metrics();
    assert_eq!(
        m.value("portcullis_auth_throttled_total", &[("scope", "client")]),
        231.0
    );
    assert_eq!(
        m.value("portcullis_auth_throttled_total", &[("scope", "agent")]),
        1.0
    );
    assert_eq!(
        m.value(
            "portcullis_proxy_auth_failures_total",
            &[("reason", "bad_secret")]
        ),
        20.0
    );
    // One audit record per throttled attempt, unattributed, for the platform's operators.
    let recs = gw.eventually(
        "every throttled attempt is recorded",
        || all_platform_records(&gw, &platform),
        |v| v.iter().filter(|r| r["error"] == "auth_throttled").count() == 232,
    );
    for r in recs.iter().filter(|r| r["error"] == "auth_throttled") {
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["agent_id"], "", "{r}");
        assert_eq!(r["tenant"], "", "{r}");
        assert_eq!(r["kind"], "http", "{r}");
    }
    assert!(!gw.stderr().contains(&secret), "secret in the log");
}

/// 250 wrong secrets at POST /oauth/token: after the burst of 20, 429 `auth_throttled`
/// with Retry-After, recorded; the real client's secret still gets a token from the same
/// address, and that token works through the proxy.
#[test]
fn guessing_at_the_token_endpoint_is_throttled_without_locking_out_the_client() {
    let origin = Origin::start();
    let gw = authed_gateway(origin.port());
    let key = gw.create_api_key("acme", "admin");
    let platform = gw.create_api_key("default", "viewer");
    let secret = admin_created_agent(&gw, &key, "target_bot");
    let _ = fetch_token(&gw, "target_bot", &secret);

    let form = "Content-Type: application/x-www-form-urlencoded";
    for i in 0..250 {
        let body = format!(
            "grant_type=client_credentials&client_id=target_bot&client_secret=guess-{i:04}"
        );
        let r = token_call(&gw, &[form], &body);
        if i < 20 {
            assert_eq!(r.status, 401, "{i}: {r:?}");
            assert_eq!(r.json()["code"], "invalid_client");
        } else {
            assert_throttled(&r);
            let v = r.json();
            assert_eq!(v["error"], "temporarily_unavailable", "{v}");
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
    }
    // The real client still gets a token (Basic and body credentials), and it works.
    let t = fetch_token(&gw, "target_bot", &secret);
    assert_eq!(
        status_with(&gw, &origin, &format!("Bearer {t}")),
        200,
        "a token issued while throttled"
    );
    let body = format!("grant_type=client_credentials&client_id=target_bot&client_secret={secret}");
    assert_eq!(token_call(&gw, &[form], &body).status, 200);

    let m = gw.metrics();
    assert_eq!(
        m.value("portcullis_auth_throttled_total", &[("scope", "client")]),
        230.0
    );
    assert_eq!(
        m.value(
            "portcullis_tokens_issued_total",
            &[("result", "auth_throttled")]
        ),
        230.0
    );
    let recs = gw.eventually(
        "every throttled token request is recorded",
        || all_platform_records(&gw, &platform),
        |v| v.iter().filter(|r| r["error"] == "auth_throttled").count() == 230,
    );
    for r in recs.iter().filter(|r| r["error"] == "auth_throttled") {
        assert_eq!(r["kind"], "token", "{r}");
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["tenant"], "", "{r}");
    }
}
