//! End-to-end: decisions that hold at the edges of the data plane. Path spellings, the first
//! bytes of intercepted tunnels, upgrade tokens, framing on every entry path, stalled bodies
//! against concurrency slots, timeouts inside tunnels and headers an origin must not forge —
//! each with the real gateway, a real origin and raw clients.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lets the demo agent reach loopback origins; the guard denies `/echo/forbidden...`.
const POLICIES: &[(&str, &str)] = &[
    (
        "policies/allow_loopback.rego",
        r#"package portcullis.policy.allow_loopback

import rego.v1

allow if input.request.host in {"127.0.0.1", "localhost"}
"#,
    ),
    (
        "policies/guard.rego",
        r#"package portcullis.policy.guard

import rego.v1

deny contains "the forbidden path is off limits" if startswith(input.request.path, "/echo/forbidden")
"#,
    ),
];

/// A gateway that authenticates agents and enforces [`POLICIES`].
fn guarded(ports: &[u16], proxy_extra: &str, rest: &str) -> (Gateway, String) {
    let gw = Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: format!("{}{proxy_extra}", loopback_proxy_section(ports)),
        rest: format!("\n[policy]\ndir = \"{{DIR}}/policies\"\n{rest}"),
        files: POLICIES
            .iter()
            .map(|(p, s)| ((*p).to_owned(), s.as_bytes().to_vec()))
            .collect(),
    });
    let auth = basic("demo", &gw.demo_secret());
    (gw, auth)
}

/// The audit records in `data/audit.jsonl` once `pred` holds for them.
fn audit_until(gw: &Gateway, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    gw.audit_until(what, pred)
}

/// A hostile origin on loopback: records every request head it reads; answers a request with
/// `Upgrade` by switching protocols (whatever was asked) and then writing `TUNNELED`, and
/// anything else with 200, a body naming the head it saw, and forged gateway headers.
struct HostileOrigin {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl HostileOrigin {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || Self::serve(s, &seen));
            }
        });
        Self { port, heads }
    }

    fn serve(s: TcpStream, seen: &Mutex<Vec<String>>) {
        let _ = s.set_read_timeout(Some(TIMEOUT));
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let mut w = s;
        loop {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            seen.lock().expect("heads").push(head.clone());
            let lower = head.to_ascii_lowercase();
            if lower.contains("\r\nupgrade:") {
                let _ = w.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nTUNNELED",
                );
                return;
            }
            let body = format!("origin saw {}", head.lines().next().unwrap_or(""));
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Portcullis-Blocked: true\r\n\
                 X-Portcullis-Error: policy_denied\r\nX-Portcullis-Decision-Id: forged\r\n\
                 x-portcullis-anything: 1\r\nX-Origin: real\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if w.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

/// Opens a CONNECT tunnel to `authority` through `gw` and returns it after the 200.
fn tunnel(proxy: SocketAddr, authority: &str, auth: Option<&str>) -> TcpStream {
    let mut s = connect(proxy);
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").as_bytes(),
    )
    .expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let resp = read_response(&mut r, true).expect("connect response");
    assert_eq!(resp.status, 200, "{resp:?}");
    s
}

/// Writes `bytes` into a fresh tunnel and returns what came back until it closed.
fn tunnel_exchange(
    proxy: SocketAddr,
    authority: &str,
    auth: Option<&str>,
    bytes: &[u8],
) -> Vec<u8> {
    let mut s = tunnel(proxy, authority, auth);
    s.write_all(bytes).expect("write");
    let (out, closed) = read_until_close(&mut s);
    assert!(
        closed,
        "tunnel left open: {}",
        String::from_utf8_lossy(&out)
    );
    out
}

#[test]
fn every_spelling_of_a_denied_path_is_denied_and_the_canonical_path_is_forwarded() {
    let origin = Origin::start();
    let p = origin.port();
    let (gw, auth) = guarded(&[p], "", "");
    let base = format!("http://127.0.0.1:{p}");
    let send = |path: &str| proxy_send(gw.proxy, "GET", &format!("{base}{path}"), Some(&auth), &[]);
    for path in [
        "/echo/forbidden",
        "//echo/forbidden",
        "/echo//forbidden",
        "/echo/./forbidden",
        "/./echo/forbidden",
        "/echo/x/../forbidden",
        "/echo/x/%2e%2e/forbidden",
        "/echo/x/%2E./forbidden",
        "/echo/%66orbidden",
        "/%65%63%68%6f/%66%6f%72%62%69%64%64%65%6e",
        "/echo/forbidden/.",
        "/echo/forbidden/x/..",
        "/../echo/forbidden?x=1",
        "///echo///forbidden///",
    ] {
        send(path).assert_error(403, "policy_denied");
    }
    assert_eq!(origin.requests(), 0, "no spelling reached the origin");

    // Allowed requests reach the origin with the canonical path and the query as sent.
    let r = send("/echo//ok/./a/../b%7e?q=%2e%2e&x=/../y");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uri"], "/echo/ok/b~?q=%2e%2e&x=/../y");

    // What cannot be canonicalised unambiguously is refused, before the origin.
    for (path, code) in [
        ("/echo%2fforbidden", "ambiguous_path"),
        ("/echo/%2F../forbidden", "ambiguous_path"),
        ("/echo%5cforbidden", "ambiguous_path"),
        ("/echo/%zz", "bad_path"),
        ("/echo/%", "bad_path"),
        ("/echo/%00", "bad_path"),
        ("/echo/%0d%0aX-Injected:%201", "bad_path"),
    ] {
        send(path).assert_error(400, code);
    }
    assert_eq!(origin.requests(), 1);

    // The audit trail shows the canonical path, attributed to the agent.
    let records = audit_until(&gw, "the denied spellings are audited", |rs| {
        rs.iter().filter(|r| r["verdict"] == "deny").count() >= 14
    });
    for r in records.iter().filter(|r| r["verdict"] == "deny") {
        assert!(
            r["path"] == "/echo/forbidden" || r["path"] == "/echo/forbidden/",
            "{r}"
        );
        assert_eq!(r["agent_id"], "demo", "{r}");
    }
}

#[test]
fn encoded_slashes_can_be_kept_by_configuration() {
    let origin = Origin::start();
    let p = origin.port();
    let (gw, auth) = guarded(&[p], "allow_encoded_slashes = true\n", "");
    let r = proxy_send(
        gw.proxy,
        "GET",
        &format!("http://127.0.0.1:{p}/echo/a%2fb/./c"),
        Some(&auth),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uri"], "/echo/a%2Fb/c");
    // Kept separators never split a segment: this is not /echo/forbidden.
    let r = proxy_send(
        gw.proxy,
        "GET",
        &format!("http://127.0.0.1:{p}/echo/x%2f..%2fforbidden"),
        Some(&auth),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["uri"], "/echo/x%2F..%2Fforbidden");
}

#[test]
fn path_spellings_inside_intercepted_tunnels_over_h1_and_h2() {
    let origin = crate::common::tls_origin::TlsOrigin::start();
    let p = origin.port();
    let (gw, _) = guarded(
        &[p],
        "",
        &format!(
            "\n[tls]\nintercept = [\"localhost\"]\nupstream_ca = [{:?}]\n",
            origin.ca_pem.display().to_string()
        ),
    );
    let secret = gw.demo_secret();
    let proxy = format!("http://demo:{secret}@{}", gw.proxy);
    let ca = gw.dir().join("data/ca/ca.pem").display().to_string();
    for version in ["--http1.1", "--http2"] {
        for path in [
            "/echo/forbidden",
            "//echo/forbidden",
            "/echo/./forbidden",
            "/echo/x/%2e%2e/forbidden",
            "/echo/%66orbidden",
        ] {
            let out = curl(&[
                version,
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-x",
                &proxy,
                "--cacert",
                &ca,
                &format!("https://localhost:{p}{path}"),
            ]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "403",
                "{version} {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = curl(&[
            version,
            "--path-as-is",
            "-x",
            &proxy,
            "--cacert",
            &ca,
            &format!("https://localhost:{p}/echo//ok/%2e/x"),
        ]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{version}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(
            v["uri"].as_str().is_some_and(|u| u.ends_with("/echo/ok/x")),
            "{version}: {v}"
        );
        let out = curl(&[
            version,
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            "--cacert",
            &ca,
            &format!("https://localhost:{p}/echo%2fforbidden"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "400", "{version}");
    }
    assert_eq!(origin.requests(), 2, "only the two allowed requests");
}

#[test]
fn nothing_on_an_intercepted_tunnel_is_spliced_past_policy() {
    let origin = Origin::start();
    let p = origin.port();
    let (gw, auth) = guarded(&[p], "", "\n[tls]\nintercept = [\"localhost\"]\n");
    let authority = format!("localhost:{p}");
    let host = format!("Host: {authority}\r\nConnection: close\r\n");
    let long_query = "q".repeat(9 * 1024);
    // Shapes the first-bytes sniffer does not call HTTP: each goes to the HTTP parser, which
    // either serves it through policy (denied here: the path is forbidden) or refuses it.
    let served: Vec<Vec<u8>> = vec![
        format!("\r\nGET /echo/forbidden HTTP/1.1\r\n{host}\r\n").into_bytes(),
        format!("\r\n\r\nGET /echo/forbidden HTTP/1.1\r\n{host}\r\n").into_bytes(),
        format!("GET /echo/forbidden?{long_query} HTTP/1.1\r\n{host}\r\n").into_bytes(),
    ];
    for bytes in &served {
        let out = tunnel_exchange(gw.proxy, &authority, Some(&auth), bytes);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains("policy_denied"), "{text}");
    }
    let refused_by_parser: Vec<Vec<u8>> = vec![
        format!("GET\t/echo HTTP/1.1\r\n{host}\r\n").into_bytes(),
        format!("GET  /echo HTTP/1.1\r\n{host}\r\n").into_bytes(),
        b"GET /echo\r\n".to_vec(),
        b"GET /echo HTTP/0.9\r\n\r\n".to_vec(),
        b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
        b"PING\r\n".to_vec(),
    ];
    for bytes in &refused_by_parser {
        let out = tunnel_exchange(gw.proxy, &authority, Some(&auth), bytes);
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{:?}: {text}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Neither TLS nor anything HTTP could start with: closed, nothing answered.
    let closed: Vec<Vec<u8>> = vec![
        b"\x00\x01garbage\r\n\r\n".to_vec(),
        vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], // a TLS alert record
        vec![0x17, 0x03, 0x03, 0x00, 0x01, 0x00],       // TLS application data
        b"\xffSMB".to_vec(),
    ];
    for bytes in &closed {
        let out = tunnel_exchange(gw.proxy, &authority, Some(&auth), bytes);
        assert!(
            out.is_empty(),
            "{bytes:?}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    // Nothing reached the origin as a request, and nothing it would have answered came back
    // (each CONNECT dialed it once before the 200, as every CONNECT does).
    assert_eq!(origin.requests(), 0, "nothing reached the origin");
    let m = gw.metrics_until("closed tunnels counted", |m| {
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "tunnel_protocol_refused")],
        ) == closed.len() as f64
    });
    assert!(
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "policy_denied")]
        ) >= served.len() as f64
    );
    let records = audit_until(&gw, "tunnel records", |rs| {
        rs.iter()
            .filter(|r| r["kind"] == "tunnel" && r["error"] == "tunnel_protocol_refused")
            .count()
            == closed.len()
    });
    assert!(records
        .iter()
        .filter(|r| r["kind"] == "tunnel" && r["error"] == "tunnel_protocol_refused")
        .all(|r| r["agent_id"] == "demo"));
    assert!(
        records
            .iter()
            .filter(|r| r["kind"] == "tunnel" && r["error"] == "malformed_request")
            .count()
            >= 4,
        "parser refusals are recorded on the tunnel"
    );
}

#[test]
fn a_host_opted_into_splicing_unknown_protocols_is_spliced() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start(
        &loopback_proxy_section(&[p]),
        "\n[tls]\nintercept = [\"localhost\"]\nsplice_unknown = [\"localhost\"]\n",
    );
    assert!(
        gw.banner.contains("splice_unknown=(localhost"),
        "{}",
        gw.banner
    );
    let out = tunnel_exchange(
        gw.proxy,
        &format!("localhost:{p}"),
        None,
        b"\x00\x01garbage\r\n\r\n",
    );
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "the origin answered its own 400: {}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(origin.connections(), 1);
}

#[test]
fn only_allowed_upgrades_are_relayed() {
    let origin = HostileOrigin::start();
    let p = origin.port;
    let gw = Gateway::start(&loopback_proxy_section(&[p]), "");
    let url = format!("http://127.0.0.1:{p}/up");
    for (upgrade, connection) in [
        ("h2c", "Upgrade, HTTP2-Settings"),
        ("H2C", "upgrade"),
        ("websocket2", "upgrade"),
        ("TLS/1.2", "Upgrade"),
        ("h2c, foo", "keep-alive, Upgrade"),
    ] {
        let before = origin.heads().len();
        let r = proxy_send(
            gw.proxy,
            "GET",
            &url,
            None,
            &[
                &format!("Connection: {connection}"),
                &format!("Upgrade: {upgrade}"),
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            ],
        );
        // Forwarded as an ordinary request: no Upgrade reached the origin, no 101 came back.
        assert_eq!(r.status, 200, "{upgrade}: {r:?}");
        let head = origin.heads()[before].to_ascii_lowercase();
        assert!(!head.contains("upgrade"), "{upgrade}: {head}");
        assert!(!head.contains("http2-settings"), "{upgrade}: {head}");
    }
    // An allowed token among others: only it is offered; the origin switching to something
    // else (h2c) is refused rather than relayed as a blind tunnel.
    let before = origin.heads().len();
    let r = proxy_send(
        gw.proxy,
        "GET",
        &url,
        None,
        &[
            "Connection: Upgrade",
            "Upgrade: h2c, WebSocket",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ],
    );
    r.assert_error(502, "upstream_bad_upgrade");
    let head = origin.heads()[before].to_ascii_lowercase();
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(!r.body.windows(8).any(|w| w == b"TUNNELED"));
}

#[test]
fn origins_cannot_forge_gateway_headers() {
    let origin = HostileOrigin::start();
    let p = origin.port;
    let gw = Gateway::start(
        &loopback_proxy_section(&[p]),
        "\n[tls]\nintercept = [\"localhost\"]\n",
    );
    let check = |r: &RawResponse| {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-origin"), Some("real"));
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.starts_with("x-portcullis-")),
            "{:?}",
            r.headers
        );
    };
    check(&proxy_send(
        gw.proxy,
        "GET",
        &format!("http://127.0.0.1:{p}/"),
        None,
        &[],
    ));
    // The same inside an intercepted (plaintext) tunnel.
    let mut s = tunnel(gw.proxy, &format!("localhost:{p}"), None);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n").as_bytes())
        .expect("write");
    let mut r = BufReader::new(s);
    check(&read_response(&mut r, false).expect("response"));
}

#[test]
fn ambiguous_framing_is_refused_on_every_entry_path() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start(
        &loopback_proxy_section(&[p]),
        "\n[tls]\nintercept = [\"localhost\"]\n",
    );
    let cl_te = |target: &str, host: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
    };
    let te_cl = |target: &str, host: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 5\r\n\r\n0\r\n\r\n"
        )
    };
    let dup_cl = |target: &str, host: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\
             Content-Length: 2\r\n\r\nok"
        )
    };
    let first = |target: &str, host: &str| {
        format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc")
    };
    type Shape = fn(&str, &str) -> String;
    let shapes: [(Shape, &str); 3] = [
        (cl_te, "ambiguous_framing"),
        (te_cl, "ambiguous_framing"),
        (dup_cl, "bad_content_length"),
    ];
    let abs = format!("http://127.0.0.1:{p}/echo");
    let host = format!("127.0.0.1:{p}");
    let inner_host = format!("localhost:{p}");
    for (shape, code) in shapes {
        // Lone, on the listener.
        let r = send_raw(gw.proxy, shape(&abs, &host).as_bytes());
        r.assert_error(400, code);
        // Pipelined behind a request with a body, on the listener.
        let mut s = connect(gw.proxy);
        s.write_all(format!("{}{}", first(&abs, &host), shape(&abs, &host)).as_bytes())
            .expect("write");
        let mut rd = BufReader::new(s.try_clone().expect("clone"));
        assert_eq!(read_response(&mut rd, false).expect("first").status, 200);
        read_response(&mut rd, false)
            .expect("second")
            .assert_error(400, code);
        // Inside an intercepted tunnel, lone and pipelined.
        for bytes in [
            shape("/echo", &inner_host),
            format!(
                "{}{}",
                first("/echo", &inner_host),
                shape("/echo", &inner_host)
            ),
        ] {
            let mut s = tunnel(gw.proxy, &inner_host, None);
            s.write_all(bytes.as_bytes()).expect("write");
            let mut rd = BufReader::new(s.try_clone().expect("clone"));
            let mut r = read_response(&mut rd, false).expect("response");
            if r.status == 200 {
                r = read_response(&mut rd, false).expect("second");
            }
            r.assert_error(400, code);
            assert_eq!(r.header("connection"), Some("close"));
        }
    }
    assert_eq!(
        origin.requests(),
        6,
        "only the 6 well-framed first requests"
    );
}

#[test]
fn framing_inside_an_intercepted_tls_tunnel() {
    let origin = crate::common::tls_origin::TlsOrigin::start();
    let p = origin.port();
    let gw = Gateway::start(
        &loopback_proxy_section(&[p]),
        &format!(
            "\n[tls]\nintercept = [\"localhost\"]\nupstream_ca = [{:?}]\n",
            origin.ca_pem.display().to_string()
        ),
    );
    let ca = gw.dir().join("data/ca/ca.pem").display().to_string();
    let script = r#"
import socket, ssl, sys
proxy_host, proxy_port, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((proxy_host, proxy_port), timeout=20)
s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
assert buf.startswith(b"HTTP/1.1 200"), buf
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
t = ctx.wrap_socket(s, server_hostname="localhost")
host = f"localhost:{port}"
t.sendall((f"POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc"
           f"POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
           f"Content-Length: 5\r\n\r\n0\r\n\r\n").encode())
out = b""
while True:
    try:
        d = t.recv(65536)
    except (ssl.SSLError, ConnectionError):
        break
    if not d:
        break
    out += d
sys.stdout.write(out.decode("latin-1"))
"#;
    let out = run_python(
        script,
        &[
            gw.proxy.ip().to_string(),
            gw.proxy.port().to_string(),
            p.to_string(),
            ca,
        ],
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("HTTP/1.1 400 Ambiguous Framing") && out.contains("ambiguous_framing"),
        "{out}"
    );
    assert_eq!(origin.requests(), 1);
}

#[test]
fn stalled_bodies_hold_concurrency_slots_and_are_cut() {
    let origin = Origin::start();
    let p = origin.port();
    // An LLM provider on another port: its JSON bodies are buffered for classification.
    let llm = Origin::start();
    let lp = llm.port();
    let (gw, auth) = guarded(
        &[p, lp],
        // Real: the timer must fire in the binary, yet not before the third request is
        // refused while both uploads stall (hence not shorter).
        "body_read_timeout = \"1s\"\n",
        &format!(
            "\n[limits]\nmax_concurrent = 2\n\n[[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{lp}\"\n"
        ),
    );
    // Uploads that stall after 1000 of 400,000 bytes.
    let stall = |p: u16, path: &str| {
        let mut s = connect(gw.proxy);
        s.write_all(
            format!(
                "POST http://127.0.0.1:{p}{path} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
                 Proxy-Authorization: {auth}\r\nContent-Type: application/json\r\n\
                 Content-Length: 400000\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("head");
        s.write_all(&[b' '; 1000]).expect("part of the body");
        s
    };
    let third = || {
        proxy_send(
            gw.proxy,
            "GET",
            &format!("http://127.0.0.1:{p}/echo/third"),
            Some(&auth),
            &[],
        )
    };
    // Two streamed uploads, each admitted (its head reached the origin) before the next.
    let a = stall(p, "/echo/one");
    wait_until("the first upload is forwarded", || origin.requests() == 1);
    let b = stall(p, "/echo/two");
    wait_until("the second upload is forwarded", || origin.requests() == 2);
    // Both hold a slot while they stall: a third request is refused.
    let refused = third();
    refused.assert_error(429, "rate_limited");
    assert_eq!(refused.json()["limit"], "concurrent");
    // The stalled bodies are cut with 408 and recorded; the slots come back.
    for s in [a, b] {
        let mut r = BufReader::new(s);
        read_response(&mut r, false)
            .expect("408")
            .assert_error(408, "body_read_timeout");
    }
    assert_eq!(third().status, 200, "slots are free again");
    // A body buffered for classification (an LLM call) is cut the same way.
    let c = stall(lp, "/v1/chat/completions");
    read_response(&mut BufReader::new(c), false)
        .expect("408")
        .assert_error(408, "body_read_timeout");
    assert_eq!(llm.requests(), 0);
    let records = audit_until(&gw, "timeouts recorded", |rs| {
        rs.iter()
            .filter(|r| r["error"] == "body_read_timeout")
            .count()
            == 3
    });
    assert!(records
        .iter()
        .filter(|r| r["error"] == "body_read_timeout")
        .all(|r| r["status"] == 408 && r["agent_id"] == "demo"));
}

#[test]
fn a_slow_head_inside_an_intercepted_tunnel_is_cut_after_header_read_timeout() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start(
        &format!(
            "{}header_read_timeout = \"500ms\"\nidle_timeout = \"300s\"\n",
            loopback_proxy_section(&[p])
        ),
        "\n[tls]\nintercept = [\"localhost\"]\n",
    );
    let mut s = tunnel(gw.proxy, &format!("localhost:{p}"), None);
    // A request head that never ends (a full request line, then a trickle).
    s.write_all(format!("GET /echo HTTP/1.1\r\nHost: localhost:{p}\r\n").as_bytes())
        .expect("write");
    let (_, closed) = read_until_close(&mut s);
    assert!(
        closed,
        "cut well before the 300 s idle timeout (read timeout is 20 s)"
    );
    gw.metrics_until("header timeout counted", |m| {
        m.value(
            "portcullis_connections_rejected_total",
            &[("reason", "header_timeout")],
        ) >= 1.0
    });
    // An idle tunnel between requests is not cut by the head timer.
    let mut s = tunnel(gw.proxy, &format!("localhost:{p}"), None);
    s.write_all(format!("GET /echo HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n").as_bytes())
        .expect("write");
    let mut rd = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut rd, false).expect("first").status, 200);
    // Real idle time is the claim under test: twice the head timeout, with no head pending.
    std::thread::sleep(Duration::from_millis(1000));
    s.write_all(format!("GET /echo HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n").as_bytes())
        .expect("write after idling past the head timeout");
    assert_eq!(read_response(&mut rd, false).expect("second").status, 200);
}

#[test]
fn refusals_inside_a_tunnel_are_attributed_to_its_agent() {
    let origin = Origin::start();
    let p = origin.port();
    let (gw, auth) = guarded(&[p], "", "\n[tls]\nintercept = [\"localhost\"]\n");
    let mut s = tunnel(gw.proxy, &format!("localhost:{p}"), Some(&auth));
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .expect("write");
    let mut rd = BufReader::new(s.try_clone().expect("clone"));
    read_response(&mut rd, false)
        .expect("response")
        .assert_error(403, "host_mismatch");
    s.write_all(format!("CONNECT other:443 HTTP/1.1\r\nHost: localhost:{p}\r\n\r\n").as_bytes())
        .expect("write");
    read_response(&mut rd, false)
        .expect("response")
        .assert_error(400, "bad_method");
    let records = audit_until(&gw, "attributed refusals", |rs| {
        rs.iter()
            .filter(|r| r["error"] == "host_mismatch" || r["error"] == "bad_method")
            .count()
            == 2
    });
    for r in records
        .iter()
        .filter(|r| r["error"] == "host_mismatch" || r["error"] == "bad_method")
    {
        assert_eq!(r["agent_id"], "demo", "{r}");
        assert_eq!(r["tenant"], "default", "{r}");
    }
    assert_eq!(origin.requests(), 0);
}

#[test]
fn the_ssrf_guard_answers_before_policy_for_address_literals() {
    let origin = Origin::start();
    let p = origin.port();
    let (gw, auth) = guarded(&[80, 443, p], "", "");
    // Policy would deny these hosts too; the guard's answer is the one that says why.
    proxy_send(
        gw.proxy,
        "GET",
        "http://169.254.169.254/latest/meta-data/",
        Some(&auth),
        &[],
    )
    .assert_error(403, "destination_forbidden");
    proxy_send(
        gw.proxy,
        "GET",
        "http://[::ffff:a9fe:a9fe]/",
        Some(&auth),
        &[],
    )
    .assert_error(403, "destination_forbidden");
    let r = send_raw(
        gw.proxy,
        format!(
            "CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\
             Proxy-Authorization: {auth}\r\n\r\n"
        )
        .as_bytes(),
    );
    r.assert_error(403, "destination_forbidden");
    // A lenient spelling of an allowed private address is the address: allowed, and policy
    // sees the canonical host.
    let r = proxy_send(
        gw.proxy,
        "GET",
        &format!("http://0x7f000001:{p}/echo"),
        Some(&auth),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Without credentials, authentication still comes first.
    proxy_send(gw.proxy, "GET", "http://169.254.169.254/", None, &[])
        .assert_error(407, "proxy_auth_required");
}
