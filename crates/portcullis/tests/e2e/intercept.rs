//! End-to-end TLS interception (issue 5) with the real binary and real clients:
//! curl, httpx over HTTP/2 and the official `openai` SDK through intercepted
//! CONNECT tunnels to a local HTTPS origin whose certificate comes from a test CA
//! given to the gateway as `tls.upstream_ca`.

use crate::common::tls_origin::TlsOrigin;
use crate::common::*;
use std::io::Write;

/// A gateway allowing loopback on `port` with `[tls]` lines.
fn gateway(port: u16, tls: &str) -> Gateway {
    Gateway::start(
        &format!("allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\n"),
        &format!("\n[tls]\n{tls}\n"),
    )
}

fn intercepting(origin: &TlsOrigin) -> Gateway {
    gateway(
        origin.port(),
        &format!(
            "intercept = [\"localhost\"]\nupstream_ca = [{:?}]\n",
            origin.ca_pem.display().to_string()
        ),
    )
}

fn gateway_ca(gw: &Gateway) -> String {
    let p = gw.dir().join("data/ca/ca.pem");
    assert!(p.exists(), "no dev CA at {}", p.display());
    p.display().to_string()
}

fn ok_stdout(out: &std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

#[test]
fn banner_names_the_ca_and_the_dev_ca_hint_follows() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    assert!(gw.banner.starts_with("portcullis "), "{}", gw.banner);
    assert!(gw.banner.contains("ca=data/ca/ca.pem"), "{}", gw.banner);
    gateway_ca(&gw);
    let key = gw.dir().join("data/ca/ca.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "CA key readable by others: {mode:o}");
    }
}

#[test]
fn curl_through_an_intercepted_tunnel_is_byte_exact_and_reaches_the_origin() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    let ca = gateway_ca(&gw);
    let proxy = gw.proxy_url();

    // The origin's echo comes back: the gateway terminated TLS, re-sent the request
    // upstream and added nothing the origin would not see from a direct client.
    let out = curl(&[
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-H",
        "x-probe: 42",
        &origin.url("/echo/a?b=c"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&ok_stdout(&out)).expect("echo json");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/echo/a?b=c");
    let headers = v["headers"].as_array().expect("headers");
    let has = |k: &str, val: &str| {
        headers
            .iter()
            .any(|h| h[0].as_str() == Some(k) && h[1].as_str() == Some(val))
    };
    assert!(has("x-probe", "42"), "{headers:?}");
    assert!(
        has("host", &format!("localhost:{}", origin.port())),
        "{headers:?}"
    );
    assert!(!headers.iter().any(|h| h[0] == "proxy-authorization"));

    // 10 MB, byte for byte, with the response headers of the origin.
    let out = curl(&[
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-D",
        "-",
        "-o",
        "/dev/null",
        &origin.url("/big"),
    ]);
    let head = String::from_utf8_lossy(&ok_stdout(&out)).to_lowercase();
    assert!(head.contains("x-origin: test-origin"), "{head}");
    let out = curl(&["-x", &proxy, "--cacert", &ca, &origin.url("/big")]);
    let body = ok_stdout(&out);
    assert_eq!(body.len(), BIG_LEN);
    assert_eq!(sha256_hex(&body), sha256_hex(&big_body()));
    assert!(origin.requests() >= 3);

    // The gateway minted once for localhost and counted the intercepted tunnels.
    let m = gw.metrics_until("tunnels closed", |m| {
        m.value("portcullis_tunnels_active", &[("intercepted", "true")]) == 0.0
    });
    assert_eq!(m.value("portcullis_certs_minted_total", &[]), 1.0);
    assert_eq!(m.value("portcullis_cert_cache_size", &[]), 1.0);
    assert_eq!(
        m.value(
            "portcullis_tls_handshake_failures_total",
            &[("side", "client")]
        ),
        0.0
    );
}

#[test]
fn host_mismatch_inside_a_tunnel_is_refused() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    let ca = gateway_ca(&gw);
    let proxy = gw.proxy_url();
    for version in ["--http1.1", "--http2"] {
        let before = origin.requests();
        let out = curl(&[
            version,
            "-x",
            &proxy,
            "--cacert",
            &ca,
            "-H",
            "Host: other.example",
            "-w",
            "\n%{http_code}",
            &origin.url("/echo"),
        ]);
        let text = String::from_utf8_lossy(&ok_stdout(&out)).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        assert_eq!(code, "403", "{version}: {text}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["code"], "host_mismatch", "{version}: {body}");
        assert_eq!(origin.requests(), before, "{version}: reached the origin");
    }
    // The same host with another port is another destination.
    let out = curl(&[
        "--http1.1",
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-H",
        &format!("Host: localhost:{}", origin.port().wrapping_add(1)),
        "-w",
        "\n%{http_code}",
        &origin.url("/echo"),
    ]);
    let text = String::from_utf8_lossy(&ok_stdout(&out)).into_owned();
    assert!(text.ends_with("\n403"), "{text}");
}

#[test]
fn passthrough_hosts_are_spliced_with_the_origin_certificate() {
    let origin = TlsOrigin::start();
    let gw = gateway(
        origin.port(),
        "intercept_all = true\npassthrough = [\"localhost\"]\n",
    );
    let ca = gateway_ca(&gw);
    let proxy = gw.proxy_url();
    let origin_ca = origin.ca_pem.display().to_string();
    let out = curl(&["-x", &proxy, "--cacert", &origin_ca, &origin.url("/big")]);
    let body = ok_stdout(&out);
    assert_eq!(sha256_hex(&body), sha256_hex(&big_body()));
    let out = curl(&["-x", &proxy, "--cacert", &ca, &origin.url("/echo")]);
    assert!(
        !out.status.success(),
        "gateway CA accepted on a spliced tunnel"
    );
    let m = gw.metrics();
    assert_eq!(m.value("portcullis_certs_minted_total", &[]), 0.0);
}

#[test]
fn a_client_not_trusting_the_gateway_ca_fails_cleanly_and_is_counted() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    let origin_ca = origin.ca_pem.display().to_string();
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        &origin_ca,
        &origin.url("/echo"),
    ]);
    assert!(!out.status.success());
    // 60: peer certificate cannot be authenticated with the given CA.
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    gw.metrics_until("client handshake failure counted", |m| {
        m.value(
            "portcullis_tls_handshake_failures_total",
            &[("side", "client")],
        ) == 1.0
    });
    // Counted every time, logged at warn once per host.
    let again = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        &origin_ca,
        &origin.url("/echo"),
    ]);
    assert_eq!(again.status.code(), Some(60), "{again:?}");
    gw.metrics_until("second client handshake failure counted", |m| {
        m.value(
            "portcullis_tls_handshake_failures_total",
            &[("side", "client")],
        ) == 2.0
    });
    let warned = |gw: &Gateway| {
        gw.stderr()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("client rejected the gateway certificate"))
            .count()
    };
    wait_until("warning logged", || warned(&gw) >= 1);
    assert_eq!(warned(&gw), 1, "{}", gw.stderr());
    assert_eq!(origin.requests(), 0);
    // Still serving: a trusting client gets through.
    let ca = gateway_ca(&gw);
    let out = curl(&["-x", &gw.proxy_url(), "--cacert", &ca, &origin.url("/echo")]);
    ok_stdout(&out);
}

#[test]
fn an_untrusted_upstream_certificate_gives_502_inside_the_tunnel() {
    // A self-signed origin the gateway's roots do not know.
    let origin = Origin::start_tls();
    let gw = gateway(origin.port(), "intercept = [\"localhost\"]\n");
    let ca = gateway_ca(&gw);
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        &ca,
        "-w",
        "\n%{http_code}",
        &format!("https://localhost:{}/echo", origin.port()),
    ]);
    let text = String::from_utf8_lossy(&ok_stdout(&out)).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status");
    assert_eq!(code, "502", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["code"], "upstream_tls_error", "{body}");
    // A sentence naming the fix, not the library's error name.
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("is not signed by a trusted CA") && detail.contains("tls.upstream_ca"),
        "{body}"
    );
    assert!(!detail.contains("UnknownIssuer"), "{body}");
    assert_eq!(origin.requests(), 0);
    gw.metrics_until("upstream handshake failure counted", |m| {
        m.value(
            "portcullis_tls_handshake_failures_total",
            &[("side", "upstream")],
        ) >= 1.0
    });
}

#[test]
fn httpx_http2_through_an_intercepted_tunnel() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    let ca = gateway_ca(&gw);
    let script = r#"
import sys, json, httpx
proxy, ca, url = sys.argv[1:4]
with httpx.Client(proxy=proxy, verify=ca, http2=True) as c:
    r1 = c.get(url + "/echo/h2")
    r2 = c.get(url + "/big")
print(json.dumps({"v": r1.http_version, "status": r1.status_code, "echo": r1.json(),
                  "v2": r2.http_version, "big_len": len(r2.content)}))
"#;
    let out = run_python(
        script,
        &[
            gw.proxy_url(),
            ca,
            format!("https://localhost:{}", origin.port()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["v"], "HTTP/2", "{v}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["echo"]["uri"], "/echo/h2");
    assert_eq!(v["v2"], "HTTP/2");
    assert_eq!(v["big_len"], BIG_LEN);
}

#[test]
fn openai_sdk_through_an_intercepted_tunnel_json_and_streaming() {
    let origin = TlsOrigin::start();
    // The origin is declared an OpenAI-compatible provider, so its calls are classified
    // and their usage tapped.
    let gw = gateway(
        origin.port(),
        &format!(
            "intercept = [\"localhost\"]\nupstream_ca = [{:?}]\n\n[[llm.providers]]\nname = \"local\"\nhost = \"localhost:{}\"\n",
            origin.ca_pem.display().to_string(),
            origin.port()
        ),
    );
    let ca = gateway_ca(&gw);
    let script = r#"
import sys, json, httpx, openai
proxy, ca, base = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key="x",
                       http_client=httpx.Client(proxy=proxy, verify=ca))
r = client.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": "hi"}])
parts = []
for chunk in client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hi"}]):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
print(json.dumps({"content": r.choices[0].message.content, "model": r.model,
                  "tokens": r.usage.total_tokens, "stream": "".join(parts)}))
"#;
    let out = run_python(
        script,
        &[
            gw.proxy_url(),
            ca,
            format!("https://localhost:{}/v1", origin.port()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["content"], "Hello from origin");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["tokens"], 6);
    assert_eq!(v["stream"], "Hello from origin");
    assert_eq!(origin.requests(), 2);

    // The usage tap read the JSON answer's usage (3 + 3); the stream carried none
    // (no stream_options.include_usage), which is recorded as missing, not zero.
    let m = gw.metrics_until("token usage counted", |m| {
        m.get(
            "portcullis_llm_tokens_total",
            &[
                ("provider", "local"),
                ("model", "gpt-4o-mini"),
                ("type", "output"),
            ],
        ) == Some(3.0)
    });
    let tokens = |t: &str| {
        m.value(
            "portcullis_llm_tokens_total",
            &[("provider", "local"), ("model", "gpt-4o-mini"), ("type", t)],
        )
    };
    assert_eq!(tokens("input"), 3.0);
    assert_eq!(tokens("output"), 3.0);
    assert_eq!(tokens("cached_input"), 0.0);
    // The writer flushes in batches: wait (bounded) for both records.
    let usage = gw.eventually(
        "both chat records in the audit file",
        || {
            std::fs::read_to_string(gw.dir().join("data/audit.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|r| r["path"] == "/v1/chat/completions")
                .map(|r| r["usage"].clone())
                .collect::<Vec<_>>()
        },
        |u| u.len() == 2,
    );
    assert!(
        usage.iter().any(|u| u["source"] == "provider"
            && u["input_tokens"] == 3
            && u["output_tokens"] == 3
            && u["total_tokens"] == 6),
        "{usage:?}"
    );
    assert!(usage.iter().any(|u| u["source"] == "missing"), "{usage:?}");
}

#[test]
fn ca_init_writes_a_ca_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args(["ca", "init", "--dir", "mycerts"])
            .output()
            .expect("run ca init")
    };
    let out = run();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SSL_CERT_FILE="), "{text}");
    assert!(text.contains("NODE_EXTRA_CA_CERTS="), "{text}");
    let pem = std::fs::read(dir.path().join("mycerts/ca.pem")).expect("ca.pem");
    assert!(dir.path().join("mycerts/ca.key").exists());
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(dir.path().join("mycerts/ca.pem")).expect("ca.pem"),
        pem
    );
}

#[test]
fn plaintext_http_inside_an_intercepted_connect_runs_the_pipeline() {
    let origin = Origin::start();
    let gw = gateway(origin.port(), "intercept = [\"localhost\"]\n");
    let port = origin.port();
    let s = connect(gw.proxy);
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    w.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .expect("connect");
    let resp = read_response(&mut r, true).expect("connect response");
    assert_eq!(resp.status, 200);

    // Origin-form with the CONNECT host: forwarded over plain HTTP.
    w.write_all(format!("GET /echo/plain HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .expect("inner request");
    let resp = read_response(&mut r, false).expect("inner response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["uri"], "/echo/plain");
    assert_eq!(origin.requests(), 1);

    // Another host on the same tunnel: refused, the origin never sees it.
    w.write_all(b"GET /echo/x HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .expect("inner request");
    let resp = read_response(&mut r, false).expect("inner response");
    resp.assert_error(403, "host_mismatch");
    assert_eq!(origin.requests(), 1);
}

#[test]
fn an_sni_different_from_the_connect_host_closes_the_tunnel() {
    let origin = TlsOrigin::start();
    let gw = intercepting(&origin);
    let ca = gateway_ca(&gw);
    let script = r#"
import sys, socket, ssl
proxy_port, port, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(1)
    if not chunk:
        break
    head += chunk
assert head.startswith(b"HTTP/1.1 200"), head
ctx = ssl.create_default_context(cafile=ca)
try:
    t = ctx.wrap_socket(s, server_hostname="other.example")
    print("handshake-ok")
except (ssl.SSLError, OSError) as e:
    print("refused")
"#;
    let out = run_python(
        script,
        &[gw.proxy.port().to_string(), origin.port().to_string(), ca],
    );
    assert_eq!(out.trim(), "refused");
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "sni_mismatch")]
        ),
        1.0
    );
    assert_eq!(m.value("portcullis_certs_minted_total", &[]), 0.0);
    assert_eq!(origin.requests(), 0);
}

#[test]
fn authenticated_tunnel_inner_requests_are_decided_by_policy_and_denials_reach_the_sdk() {
    let origin = TlsOrigin::start();
    let port = origin.port();
    let pol = tempfile::tempdir().expect("tempdir");
    write_file(
        pol.path(),
        "e2e.rego",
        br#"package portcullis.policy.e2e
import rego.v1

default allow := false

allow if input.request.host == "localhost"

deny contains "inner requests must be https" if {
	input.kind == "http"
	input.request.scheme != "https"
}

deny contains "model forbidden-model is not allowed" if {
	input.kind == "http"
	input.llm.model == "forbidden-model"
}

deny contains "only GET on /echo" if {
	input.kind == "http"
	startswith(input.request.path, "/echo")
	input.request.method != "GET"
}
"#,
    );
    let doc = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nallowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"debug\"\n\
         [identity]\ncreate_demo_agent = false\n\
         [policy]\ndir = {:?}\n\
         [llm]\nproviders = [{{ name = \"local\", host = \"localhost:{port}\", format = \"openai\" }}]\n\
         [tls]\nintercept = [\"localhost\"]\nupstream_ca = [{:?}]\n\
         [[agents]]\nid = \"bot\"\nsecret_sha256 = \"{}\"\n",
        pol.path().display().to_string(),
        origin.ca_pem.display().to_string(),
        sha256_hex(b"s3cret"),
    );
    let gw = Gateway::start_with_config(&doc);
    assert!(gw.banner.contains(" auth=required "), "{}", gw.banner);
    let ca = gateway_ca(&gw);
    let proxy = format!("http://bot:s3cret@{}", gw.proxy);

    // Without credentials the CONNECT itself is refused.
    let out = curl(&["-x", &gw.proxy_url(), "--cacert", &ca, &origin.url("/echo")]);
    assert!(!out.status.success());

    // GET is allowed, POST is denied inside the same kind of tunnel by policy kind=http.
    let out = curl(&["-x", &proxy, "--cacert", &ca, &origin.url("/echo/ok")]);
    let v: serde_json::Value = serde_json::from_slice(&ok_stdout(&out)).expect("echo");
    assert_eq!(v["uri"], "/echo/ok");
    let before = origin.requests();
    let out = curl(&[
        "-x",
        &proxy,
        "--cacert",
        &ca,
        "-X",
        "POST",
        "-d",
        "x",
        "-w",
        "\n%{http_code}",
        &origin.url("/echo/post"),
    ]);
    let text = String::from_utf8_lossy(&ok_stdout(&out)).into_owned();
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("only GET on /echo"), "{text}");
    assert_eq!(origin.requests(), before);

    let script = r#"
import sys, json, httpx, openai
proxy, ca, base = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key="x", max_retries=0,
                       http_client=httpx.Client(proxy=proxy, verify=ca))
ok = client.chat.completions.create(model="gpt-4o-mini",
                                    messages=[{"role": "user", "content": "hi"}])
try:
    client.chat.completions.create(model="forbidden-model",
                                   messages=[{"role": "user", "content": "hi"}])
    denied = None
except openai.PermissionDeniedError as e:
    denied = {"status": e.status_code, "message": e.message}
print(json.dumps({"ok": ok.choices[0].message.content, "denied": denied}))
"#;
    let out = run_python(
        script,
        &[proxy.clone(), ca, format!("https://localhost:{port}/v1")],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["ok"], "Hello from origin");
    assert_eq!(v["denied"]["status"], 403, "{v}");
    let msg = v["denied"]["message"].as_str().expect("message");
    assert!(msg.contains("forbidden-model is not allowed"), "{msg}");
}

#[test]
fn idle_intercepted_tunnels_are_closed_after_idle_timeout() {
    let origin = Origin::start();
    let port = origin.port();
    // Real: the idle timer must fire in the binary; short, but longer than one exchange.
    let gw = Gateway::start(
        &format!(
            "allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\nidle_timeout = \"500ms\"\n"
        ),
        "\n[tls]\nintercept = [\"localhost\"]\n",
    );
    let s = connect(gw.proxy);
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    w.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .expect("connect");
    assert_eq!(read_response(&mut r, true).expect("connect").status, 200);
    w.write_all(format!("GET /echo HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .expect("inner request");
    assert_eq!(read_response(&mut r, false).expect("inner").status, 200);
    // Nothing more is sent: the gateway closes the tunnel (bounded wait).
    let mut s = r.into_inner();
    let (rest, closed) = read_until_close(&mut s);
    assert!(closed, "tunnel still open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    gw.metrics_until("tunnel closed", |m| {
        m.value("portcullis_tunnels_active", &[("intercepted", "true")]) == 0.0
    });
}

#[test]
fn shutdown_drains_an_open_intercepted_tunnel() {
    let origin = Origin::start();
    let port = origin.port();
    let mut gw = Gateway::start(
        &format!(
            "allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\nidle_timeout = \"300s\"\nshutdown_grace = \"300s\"\n"
        ),
        "\n[tls]\nintercept = [\"localhost\"]\n",
    );
    let s = connect(gw.proxy);
    let mut w = s.try_clone().expect("clone");
    let mut r = std::io::BufReader::new(s);
    w.write_all(
        format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes(),
    )
    .expect("connect");
    assert_eq!(read_response(&mut r, true).expect("connect").status, 200);
    w.write_all(format!("GET /echo HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes())
        .expect("inner request");
    assert_eq!(read_response(&mut r, false).expect("inner").status, 200);
    gw.sigterm();
    // The idle keep-alive tunnel is closed by the drain, long before the grace period.
    let mut s = r.into_inner();
    let (_, closed) = read_until_close(&mut s);
    assert!(closed, "tunnel still open after SIGTERM");
    assert!(gw.wait_exit(TIMEOUT).success());
}

#[test]
fn undecided_first_bytes_and_non_tls_non_http_bytes_fail_closed() {
    let origin = Origin::start();
    let port = origin.port();
    let gw = gateway(port, "intercept = [\"localhost\"]\n");
    let open_tunnel = || {
        let mut s = connect(gw.proxy);
        s.write_all(
            format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")
                .as_bytes(),
        )
        .expect("connect");
        let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
        assert_eq!(read_response(&mut r, true).expect("connect").status, 200);
        s
    };

    // Half a TLS record header, then end of stream: never spliced (no bypass of
    // interception by dribbling a ClientHello).
    let mut s = open_tunnel();
    s.write_all(&[0x16, 0x03]).expect("partial");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (rest, closed) = read_until_close(&mut s);
    assert!(closed && rest.is_empty());
    gw.metrics_until("undecided tunnel refused", |m| {
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "tunnel_undecided")],
        ) == 1.0
    });

    // Bytes that are neither TLS nor HTTP are not spliced past policy: the tunnel closes
    // (with a record) and the origin never sees them.
    let mut s = open_tunnel();
    s.write_all(b"\x00\x01garbage\r\n\r\n").expect("garbage");
    let (rest, closed) = read_until_close(&mut s);
    assert!(
        closed && rest.is_empty(),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    gw.metrics_until("refused tunnel counted", |m| {
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "tunnel_protocol_refused")],
        ) == 1.0
    });
    assert_eq!(origin.requests(), 0);
}

#[test]
fn official_sdks_receive_the_origins_exact_bytes_and_usage_is_recorded() {
    let origin = TlsOrigin::start();
    let port = origin.port();
    let gw = gateway(
        port,
        &format!(
            "intercept = [\"localhost\"]\nupstream_ca = [{:?}]\n\n\
             [[llm.providers]]\nname = \"local\"\nhost = \"localhost:{port}\"\n",
            origin.ca_pem.display().to_string()
        ),
    );
    let ca = gateway_ca(&gw);
    // Each call: the SHA-256 of the raw bytes the SDK's HTTP client received, and the
    // origin's own hash of what it sent; streaming calls also parse through the SDK.
    let script = r#"
import sys, json, hashlib, httpx, openai, anthropic
proxy, ca, base = sys.argv[1:4]
hc = lambda: httpx.Client(proxy=proxy, verify=ca)
oa = openai.OpenAI(base_url=base + "/v1", api_key="x", http_client=hc(), max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="x", http_client=hc(), max_retries=0)
out = {}
def record(name, resp, body):
    out[name] = {"got": hashlib.sha256(body).hexdigest(), "sent": resp.headers["x-body-sha256"]}
msgs = [{"role": "user", "content": "hi"}]
raw = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
record("openai_json", raw.http_response, raw.http_response.content)
assert raw.parse().choices[0].message.content == "Hello from origin"
with oa.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=msgs, stream=True,
        stream_options={"include_usage": True}) as r:
    body = b"".join(r.iter_bytes())
    record("openai_sse", r.http_response, body)
raw = an.messages.with_raw_response.create(model="claude-x", max_tokens=64, messages=msgs)
record("anthropic_json", raw.http_response, raw.http_response.content)
assert raw.parse().content[0].text == "Hello from origin"
with an.messages.with_streaming_response.create(
        model="claude-x", max_tokens=64, messages=msgs, stream=True) as r:
    body = b"".join(r.iter_bytes())
    record("anthropic_sse", r.http_response, body)
text = "".join(e.delta.text for e in an.messages.create(
    model="claude-x", max_tokens=64, messages=msgs, stream=True)
    if e.type == "content_block_delta")
out["anthropic_text"] = text
print(json.dumps(out))
"#;
    let out = run_python(
        script,
        &[gw.proxy_url(), ca, format!("https://localhost:{port}")],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    for call in [
        "openai_json",
        "openai_sse",
        "anthropic_json",
        "anthropic_sse",
    ] {
        assert_eq!(v[call]["got"], v[call]["sent"], "{call}: bytes differ: {v}");
    }
    assert_eq!(v["anthropic_text"], "Hello from origin");

    // Usage, normalised: OpenAI stream with include_usage 11 in (4 cached) / 5 out;
    // OpenAI JSON 3/3; Anthropic input = 10 + 2 cache read + 1 cache write, output = the
    // latest cumulative count (7), never summed with message_start's 1.
    let m = gw.metrics_until("usage of five LLM calls", |m| {
        m.get(
            "portcullis_llm_tokens_total",
            &[("model", "claude-x"), ("type", "output")],
        ) == Some(21.0)
    });
    let t = |model: &str, kind: &str| {
        m.value(
            "portcullis_llm_tokens_total",
            &[("provider", "local"), ("model", model), ("type", kind)],
        )
    };
    assert_eq!(t("gpt-4o-mini", "input"), 14.0);
    assert_eq!(t("gpt-4o-mini", "output"), 8.0);
    assert_eq!(t("gpt-4o-mini", "cached_input"), 4.0);
    assert_eq!(t("claude-x", "input"), 39.0);
    assert_eq!(t("claude-x", "cached_input"), 6.0);
}

/// The HTTP request records (not the tunnels they came in) of the audit JSONL file so far.
fn jsonl_records(gw: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gw.dir().join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "http")
        .collect()
}

/// The HTTP request records of `/v1/decisions` for tenant `default` (newest first).
fn decisions(gw: &Gateway, key: &str) -> Vec<serde_json::Value> {
    let r = gw.admin_call("GET", "/v1/decisions?limit=200", Some(key), None);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["kind"] == "http")
        .collect()
}

/// The one record whose `model` is `model`.
fn by_model<'a>(records: &'a [serde_json::Value], model: &str) -> &'a serde_json::Value {
    let found: Vec<_> = records.iter().filter(|r| r["model"] == model).collect();
    assert_eq!(found.len(), 1, "records for {model}: {records:?}");
    found[0]
}

/// A gateway intercepting the origin, which is declared an LLM provider, with every
/// audit sink.
fn provider_gateway(origin: &TlsOrigin) -> Gateway {
    gateway(
        origin.port(),
        &format!(
            "upstream_ca = [{:?}]\n\n[audit]\nsinks = [\"store\", \"jsonl\", \"stdout\"]\n\n\
             [[llm.providers]]\nname = \"local\"\nhost = \"localhost:{}\"\n",
            origin.ca_pem.display().to_string(),
            origin.port()
        ),
    )
}

const NULL_USAGE: &str = r#"{"input_tokens": null, "output_tokens": null,
    "cached_input_tokens": null, "reasoning_tokens": null, "total_tokens": null,
    "source": "missing"}"#;

#[test]
fn a_stream_without_usage_has_null_counts_everywhere_and_counts_no_tokens() {
    let origin = TlsOrigin::start();
    let gw = provider_gateway(&origin);
    let ca = gateway_ca(&gw);
    // No stream_options.include_usage: the provider reports no usage.
    let script = r#"
import sys, httpx, openai
proxy, ca, base = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key="x", max_retries=0,
                       http_client=httpx.Client(proxy=proxy, verify=ca))
parts = [c.choices[0].delta.content for c in client.chat.completions.create(
    model="no-usage-model", stream=True, messages=[{"role": "user", "content": "hi"}])
    if c.choices and c.choices[0].delta.content]
r = client.chat.completions.create(model="usage-model",
                                   messages=[{"role": "user", "content": "hi"}])
print("".join(parts), r.usage.total_tokens)
"#;
    let out = run_python(script, &[gw.proxy_url(), ca, origin.url("/v1")]);
    assert_eq!(out.trim(), "Hello from origin 6");

    let nulls: serde_json::Value = serde_json::from_str(NULL_USAGE).expect("json");
    let key = gw.create_api_key("default", "viewer");
    let records = gw.eventually(
        "both records in /v1/decisions",
        || decisions(&gw, &key),
        |r| r.len() == 2,
    );
    let missing = by_model(&records, "no-usage-model");
    assert_eq!(missing["usage"], nulls, "{missing}");
    assert_eq!(missing["error"], serde_json::Value::Null, "{missing}");
    assert_eq!(missing["provider"], "local");
    assert_eq!(missing["stream"], true);
    let reported = by_model(&records, "usage-model");
    assert_eq!(reported["usage"]["total_tokens"], 6, "{reported}");
    assert_eq!(reported["usage"]["source"], "provider");

    let lines = gw.eventually("two JSONL records", || jsonl_records(&gw), |r| r.len() == 2);
    assert_eq!(by_model(&lines, "no-usage-model")["usage"], nulls);
    let stdout: Vec<serde_json::Value> = gw
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(by_model(&stdout, "no-usage-model")["usage"], nulls);

    // Tokens are counted for the reported usage only: none for the unknown one.
    let m = gw.metrics();
    let tokens = |model: &str, kind: &str| {
        m.get(
            "portcullis_llm_tokens_total",
            &[("provider", "local"), ("model", model), ("type", kind)],
        )
    };
    assert_eq!(tokens("usage-model", "input"), Some(3.0));
    for kind in ["input", "output", "cached_input", "reasoning"] {
        assert_eq!(tokens("no-usage-model", kind), None, "{kind}:\n{}", m.0);
    }
}

#[test]
fn sdks_that_stop_at_the_terminal_event_are_complete_and_mid_stream_closes_are_aborts() {
    // The origin sends every event, terminal one included, and keeps the response open
    // (`hold-open...`), or stops after the first events (`hold-mid...`). The SDKs read
    // to the terminal event (or the first text) and close.
    let origin = TlsOrigin::start();
    let gw = provider_gateway(&origin);
    let ca = gateway_ca(&gw);
    let script = r#"
import sys, json, httpx, openai, anthropic
proxy, ca, base = sys.argv[1:4]
hc = lambda: httpx.Client(proxy=proxy, verify=ca)
oa = openai.OpenAI(base_url=base + "/v1", api_key="x", http_client=hc(), max_retries=0)
an = anthropic.Anthropic(base_url=base, api_key="x", http_client=hc(), max_retries=0)
msgs = [{"role": "user", "content": "hi"}]
out = {}

def openai_text(model, **kw):
    text = []
    with oa.chat.completions.create(model=model, messages=msgs, stream=True, **kw) as s:
        for c in s:
            if c.choices and c.choices[0].delta.content:
                text.append(c.choices[0].delta.content)
            # The last chunk before [DONE]: usage when asked for, else the finish reason.
            if c.usage is not None or (not kw and c.choices and c.choices[0].finish_reason):
                break
    return "".join(text)

out["openai_usage"] = openai_text("hold-open-usage", stream_options={"include_usage": True})
out["openai_plain"] = openai_text("hold-open-plain")
text = []
with an.messages.create(model="hold-open-claude", max_tokens=64, messages=msgs, stream=True) as s:
    for e in s:
        if e.type == "content_block_delta":
            text.append(e.delta.text)
        if e.type == "message_stop":
            break
out["anthropic"] = "".join(text)

# Genuine aborts: the first text arrives, the rest never does; the client gives up.
with oa.chat.completions.create(model="hold-mid-gpt", messages=msgs, stream=True) as s:
    for c in s:
        out["openai_first"] = c.choices[0].delta.content
        break
with an.messages.create(model="hold-mid-claude", max_tokens=64, messages=msgs, stream=True) as s:
    for e in s:
        if e.type == "content_block_delta":
            out["anthropic_first"] = e.delta.text
            break
print(json.dumps(out))
"#;
    let out = run_python(
        script,
        &[
            gw.proxy_url(),
            ca,
            format!("https://localhost:{}", origin.port()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"openai_usage": "Hello from origin", "openai_plain": "Hello from origin",
            "anthropic": "Hello from origin", "openai_first": "Hello", "anthropic_first": "Hello"})
    );

    let key = gw.create_api_key("default", "viewer");
    let records = gw.eventually(
        "five records in /v1/decisions",
        || decisions(&gw, &key),
        |r| r.len() == 5,
    );
    let null = serde_json::Value::Null;
    let r = by_model(&records, "hold-open-usage");
    assert_eq!(
        (&r["error"], &r["status"]),
        (&null, &serde_json::json!(200)),
        "{r}"
    );
    assert_eq!(
        r["usage"],
        serde_json::json!({"input_tokens": 11, "output_tokens": 5, "cached_input_tokens": 4,
            "reasoning_tokens": 0, "total_tokens": 16, "source": "provider"})
    );
    let r = by_model(&records, "hold-open-plain");
    assert_eq!(r["error"], null, "{r}");
    assert_eq!(
        r["usage"],
        serde_json::from_str::<serde_json::Value>(NULL_USAGE).expect("json")
    );
    let r = by_model(&records, "hold-open-claude");
    assert_eq!(r["error"], null, "{r}");
    assert_eq!(
        r["usage"],
        serde_json::json!({"input_tokens": 13, "output_tokens": 7, "cached_input_tokens": 2,
            "reasoning_tokens": 0, "total_tokens": 20, "source": "provider"})
    );
    let r = by_model(&records, "hold-mid-gpt");
    assert_eq!(r["error"], "client_aborted", "{r}");
    assert_eq!(r["usage"]["source"], "missing");
    let r = by_model(&records, "hold-mid-claude");
    assert_eq!(r["error"], "client_aborted", "{r}");
    // What message_start reported is kept (the stream was cut: the reservation is not
    // settled with it).
    assert_eq!(r["usage"]["input_tokens"], 13, "{r}");
    assert_eq!(r["usage"]["output_tokens"], 1, "{r}");
    assert_eq!(origin.requests(), 5);
}

#[test]
fn one_provider_entry_intercepts_classifies_and_meters_its_host() {
    let origin = TlsOrigin::start();
    let port = origin.port();
    let defaults = portcullis_tls::DEFAULT_INTERCEPT_HOSTS.len();
    // `tls.intercept` unset, set to another host, and the defaults dropped: the provider's
    // host is intercepted in every case.
    for (tls_lines, banner) in [
        (
            "",
            format!("intercept={}hosts(defaults,localhost)", defaults + 1),
        ),
        (
            "intercept = [\"git.example.com\"]\n",
            format!(
                "intercept={}hosts(defaults,git.example.com,localhost)",
                defaults + 2
            ),
        ),
        (
            "intercept_defaults = false\n",
            "intercept=1hosts(localhost)".to_owned(),
        ),
    ] {
        let gw = gateway(
            port,
            &format!(
                "{tls_lines}upstream_ca = [{:?}]\n\n[[llm.providers]]\nname = \"local\"\nhost = \"localhost:{port}\"\n",
                origin.ca_pem.display().to_string()
            ),
        );
        assert!(gw.banner.contains(&banner), "{banner} not in {}", gw.banner);
        // The client trusts only the gateway CA: only an intercepted tunnel succeeds.
        let ca = gateway_ca(&gw);
        let out = curl(&[
            "-x",
            &gw.proxy_url(),
            "--cacert",
            &ca,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model":"one-entry","messages":[{"role":"user","content":"hi"}]}"#,
            &origin.url("/v1/chat/completions"),
        ]);
        let v: serde_json::Value =
            serde_json::from_slice(&ok_stdout(&out)).expect("completion json");
        assert_eq!(
            v["choices"][0]["message"]["content"], "Hello from origin",
            "{tls_lines}"
        );
        let records = gw.eventually(
            "the request's record",
            || jsonl_records(&gw),
            |r| r.len() == 1,
        );
        let r = &records[0];
        assert_eq!(r["tls_intercepted"], true, "{r}");
        assert_eq!(r["provider"], "local", "{r}");
        assert_eq!(r["api"], "chat.completions", "{r}");
        assert_eq!(r["model"], "one-entry", "{r}");
        assert_eq!(r["error"], serde_json::Value::Null, "{r}");
        assert_eq!(
            r["usage"],
            serde_json::json!({"input_tokens": 3, "output_tokens": 3, "cached_input_tokens": 0,
                "reasoning_tokens": 0, "total_tokens": 6, "source": "provider"}),
            "{tls_lines}"
        );
    }
    assert_eq!(origin.requests(), 3);

    // passthrough still wins, and says so at start.
    let gw = gateway(
        port,
        &format!(
            "passthrough = [\"localhost\"]\nupstream_ca = [{:?}]\n\n[[llm.providers]]\nname = \"local\"\nhost = \"localhost:{port}\"\n",
            origin.ca_pem.display().to_string()
        ),
    );
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        &origin.ca_pem.display().to_string(),
        &origin.url("/v1/models"),
    ]);
    ok_stdout(&out);
    wait_until("the passthrough warning", || {
        gw.stderr().contains("llm provider `local` (localhost:")
    });
    assert!(
        gw.stderr().contains("is in tls.passthrough"),
        "{}",
        gw.stderr()
    );
}

/// An HTTPS origin whose server certificate is a self-signed CA certificate (for
/// `localhost`), and that certificate's PEM file.
fn ca_certificate_origin() -> (crate::common::server::TestServer, tempfile::TempDir, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("ca-as-server.pem");
    std::fs::write(&pem, cert.pem()).expect("write pem");
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .expect("server config");
    let handler: crate::common::server::Handler = std::sync::Arc::new(|_| {
        Box::pin(async {
            http::Response::new(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::from_static(b"must not be reached"),
            )))
        })
    });
    let server = crate::common::server::TestServer::start(
        Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg))),
        handler,
    );
    (server, dir, pem.display().to_string())
}

#[test]
fn an_upstream_serving_a_ca_certificate_gets_a_502_that_says_how_to_fix_it() {
    let (origin, _dir, pem) = ca_certificate_origin();
    // The operator trusted the certificate as a CA, as one would for a self-signed server.
    let gw = gateway(
        origin.port(),
        &format!("intercept = [\"localhost\"]\nupstream_ca = [{pem:?}]\n"),
    );
    let ca = gateway_ca(&gw);
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        &ca,
        "-w",
        "\n%{http_code}",
        &format!("https://localhost:{}/v1/models", origin.port()),
    ]);
    let text = String::from_utf8_lossy(&ok_stdout(&out)).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status");
    assert_eq!(code, "502", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["code"], "upstream_tls_error", "{body}");
    assert_eq!(
        v["detail"],
        format!(
            "TLS with localhost:{} failed: the upstream presented a CA certificate as its \
             server certificate; issue a leaf certificate for localhost signed by that CA and \
             add the CA to tls.upstream_ca",
            origin.port()
        ),
        "{body}"
    );
    assert_eq!(origin.requests(), 0);
}
