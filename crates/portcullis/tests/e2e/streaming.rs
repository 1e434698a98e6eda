//! End-to-end: the real gateway between real clients (curl, Python requests,
//! websocket-client, a raw socket) and a local origin. Bodies, SSE, CONNECT,
//! WebSocket, keep-alive and hop-by-hop header hygiene.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn stdout_of(out: &std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

fn header_block(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("header dump")
        .to_ascii_lowercase()
}

#[test]
fn ten_megabyte_downloads_arrive_byte_exact_with_content_length_and_chunked() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let want = big_body();
    for (route, framing) in [
        ("/big/cl", format!("content-length: {BIG_LEN}")),
        ("/big/chunked", "transfer-encoding: chunked".to_owned()),
    ] {
        let body = dir.path().join("body");
        let head = dir.path().join("head");
        let out = curl(&[
            "-x",
            &gw.proxy_url(),
            "-o",
            body.to_str().expect("path"),
            "-D",
            head.to_str().expect("path"),
            "-w",
            "%{http_code}",
            &origin.url(route),
        ]);
        assert_eq!(stdout_of(&out), b"200");
        let got = std::fs::read(&body).expect("downloaded body");
        assert_eq!(got.len(), BIG_LEN, "{route}");
        assert_eq!(sha256_hex(&got), sha256_hex(&want), "{route}");
        assert!(got == want, "{route}: bytes differ");
        let h = header_block(&head);
        assert!(h.contains(&framing), "{route}: {h}");
    }
    assert_eq!(origin.requests(), 2);
}

#[test]
fn ten_megabyte_uploads_arrive_intact_streamed_and_chunked() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let body = big_body();
    let file = write_file(dir.path(), "upload.bin", &body);
    let data = format!("@{}", file.display());
    let want_sha = sha256_hex(&body);

    // Content-Length upload: the origin sees the same Content-Length and bytes.
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "-X",
        "POST",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &data,
        &origin.url("/echo/upload"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&stdout_of(&out)).expect("echo json");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], BIG_LEN);
    assert_eq!(v["body_sha256"], want_sha);
    let cl: Vec<&str> = header_values(&v, "content-length");
    assert_eq!(cl, vec![BIG_LEN.to_string().as_str()]);

    // Chunked upload (curl streams the file with Transfer-Encoding: chunked).
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "-X",
        "PUT",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &data,
        &origin.url("/echo/upload"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&stdout_of(&out)).expect("echo json");
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["body_len"], BIG_LEN);
    assert_eq!(v["body_sha256"], want_sha);
}

fn header_values<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().expect("value"))
        .collect()
}

fn header_names(echo: &serde_json::Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h[0].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn sse_first_event_reaches_curl_before_the_origin_finishes() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "60", "-x", &gw.proxy_url()])
        .arg(origin.url("/sse"))
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let mut out = child.stdout.take().expect("stdout");
    let first = SSE_EVENTS[0].as_bytes();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: the origin holds the stream open until released, and curl's
    // --max-time ends it in the worst case.
    while got.len() < first.len() {
        let n = out.read(&mut buf).expect("read curl stdout");
        assert!(n > 0, "curl ended before the first event: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, first, "exactly the first event, nothing more yet");
    // The origin has not finished: it is waiting for us.
    origin.release();
    out.read_to_end(&mut got).expect("read rest");
    let status = child.wait().expect("curl exit");
    assert!(status.success(), "curl: {status}");
    assert_eq!(String::from_utf8(got).expect("utf-8"), SSE_EVENTS.concat());
}

const PY_SSE: &str = r#"
import sys, requests
proxy, url = sys.argv[1], sys.argv[2]
s = requests.Session()
s.trust_env = False
r = s.get(url, proxies={"http": proxy}, stream=True, timeout=30)
assert r.status_code == 200, r.status_code
assert r.headers["content-type"] == "text/event-stream", r.headers
got = b""
it = r.iter_content(chunk_size=None)
for chunk in it:
    got += chunk
    if got.endswith(b"\n\n"):
        break
sys.stdout.write("FIRST " + got.hex() + "\n")
sys.stdout.flush()
for chunk in it:
    got += chunk
sys.stdout.write("ALL " + got.hex() + "\n")
sys.stdout.flush()
"#;

#[test]
fn sse_first_event_reaches_python_requests_before_the_origin_finishes() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let mut child = Command::new(python())
        .arg("-c")
        .arg(PY_SSE)
        .arg(gw.proxy_url())
        .arg(origin.url("/sse"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("first line").expect("utf-8");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(first, format!("FIRST {}", hex(SSE_EVENTS[0].as_bytes())));
    origin.release();
    let all = lines.next().expect("second line").expect("utf-8");
    assert_eq!(all, format!("ALL {}", hex(SSE_EVENTS.concat().as_bytes())));
    assert!(child.wait().expect("exit").success());
}

#[test]
fn connect_passthrough_to_tls_origin_with_curl_cacert() {
    let origin = Origin::start_tls();
    let gw = Gateway::start_for(&[origin.port()]);
    let pem = origin.cert_pem.clone().expect("pem");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let before = gw.metrics();
    assert_eq!(
        before.get("portcullis_tunnels_active", &[("intercepted", "false")]),
        Some(0.0)
    );
    let url = format!("https://localhost:{}/big/cl", origin.port());
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        pem.to_str().expect("path"),
        "-o",
        body.to_str().expect("path"),
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(stdout_of(&out), b"200");
    let got = std::fs::read(&body).expect("body");
    assert!(
        got == big_body(),
        "tunnelled bytes differ ({} bytes)",
        got.len()
    );

    // A small exchange too: the origin saw a TLS request for /echo.
    let url = format!("https://localhost:{}/echo/tls", origin.port());
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "--cacert",
        pem.to_str().expect("path"),
        &url,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&stdout_of(&out)).expect("json");
    assert_eq!(v["uri"], "/echo/tls");
    assert_eq!(origin.requests(), 2);

    // Both tunnels closed; their bytes were counted (the TLS download is larger
    // than its plaintext).
    let m = gw.metrics_until("tunnels closed and counted", |m| {
        m.value("portcullis_tunnels_active", &[]) == 0.0
            && m.value(
                "portcullis_tunnel_bytes_total",
                &[("direction", "downstream")],
            ) > BIG_LEN as f64
    });
    assert!(
        m.value(
            "portcullis_tunnel_bytes_total",
            &[("direction", "upstream")]
        ) > 0.0
    );
    assert_eq!(
        m.value("portcullis_requests_total", &[("agent", "anonymous")]),
        2.0,
        "{}",
        m.0
    );
}

#[test]
fn connect_to_the_tls_origin_with_a_raw_socket_answers_200_then_splices() {
    let origin = Origin::start_tls();
    let gw = Gateway::start_for(&[origin.port()]);
    let mut s = connect(gw.proxy);
    let req = format!(
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
        p = origin.port()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, true).expect("connect response");
    assert_eq!(resp.status, 200, "{resp:?}");
    // The origin accepted exactly one TCP connection before the 200 was sent.
    wait_until("the origin accepted the tunnel's connection", || {
        origin.connections() == 1
    });
    // Raw bytes pass through untouched: a TLS ClientHello-ish garbage record is
    // forwarded and the origin's TLS stack answers with an alert, then closes.
    r.get_mut()
        .write_all(b"\x16\x03\x01\x00\x05hello")
        .expect("write");
    let (bytes, closed) = read_until_close(r.get_mut());
    assert!(closed, "tunnel must close when the origin closes");
    assert!(
        bytes.first() == Some(&0x15) || bytes.is_empty(),
        "expected a TLS alert or nothing, got {bytes:?}"
    );
    // Half-close: the origin's EOF reached us, but the tunnel stays open until
    // our side closes too.
    assert_eq!(gw.metrics().value("portcullis_tunnels_active", &[]), 1.0);
    drop(r);
    gw.metrics_until("tunnel closed", |m| {
        m.value("portcullis_tunnels_active", &[]) == 0.0
    });
}

#[test]
fn websocket_echo_through_absolute_form_upgrade() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let mut s = connect(gw.proxy);
    let req = format!(
        "GET http://127.0.0.1:{p}/ws HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n",
        p = origin.port()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, true).expect("101");
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(resp
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket")));
    let frames: [(u8, Vec<u8>); 3] = [
        (1, b"hello through portcullis".to_vec()),
        (2, (0..70_000u32).map(|i| (i % 251) as u8).collect()),
        (1, "ünïcödé ✓".as_bytes().to_vec()),
    ];
    for (i, (op, payload)) in frames.iter().enumerate() {
        let mask = [0x12, 0x34, 0x56, (i as u8) ^ 0x78];
        r.get_mut()
            .write_all(&ws_frame(*op, payload, Some(mask)))
            .expect("write frame");
        let want = ws_frame(*op, payload, None);
        let mut got = vec![0u8; want.len()];
        r.read_exact(&mut got).expect("read echo");
        assert!(got == want, "frame {i} echoed differently");
    }
    r.get_mut()
        .write_all(&ws_frame(8, &[0x03, 0xe8], Some([1, 2, 3, 4])))
        .expect("close");
    let mut got = [0u8; 4];
    r.read_exact(&mut got).expect("close echo");
    assert_eq!(got, [0x88, 0x02, 0x03, 0xe8]);
    assert_eq!(origin.requests(), 1);
}

const PY_WS: &str = r#"
import sys, websocket
host, port, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ws = websocket.create_connection(url, http_proxy_host=host, http_proxy_port=port, proxy_type="http", timeout=30)
ws.send("hello via CONNECT")
a = ws.recv()
ws.send_binary(bytes(range(256)) * 300)
b = ws.recv()
ws.close()
print(a)
print(len(b), b == bytes(range(256)) * 300)
"#;

#[test]
fn websocket_echo_through_connect_with_websocket_client() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let out = run_python(
        PY_WS,
        &[
            gw.proxy.ip().to_string(),
            gw.proxy.port().to_string(),
            origin.url("/ws").replace("http://", "ws://"),
        ],
    );
    assert_eq!(out, "hello via CONNECT\n76800 True\n");
    gw.metrics_until("tunnel closed", |m| {
        m.value("portcullis_tunnels_active", &[]) == 0.0
    });
}

#[test]
fn keep_alive_reuses_client_and_upstream_connections() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);

    // curl: two URLs in one invocation reuse the proxy connection.
    let out = curl(&[
        "-x",
        &gw.proxy_url(),
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        &origin.url("/echo/1"),
        &origin.url("/echo/2"),
    ]);
    assert_eq!(String::from_utf8(stdout_of(&out)).expect("utf-8"), "1 0 ");
    assert_eq!(origin.connections(), 1, "upstream connection pooled");

    // A raw client: three requests on one socket, answered in order.
    let mut s = connect(gw.proxy);
    for i in 0..3 {
        let req = format!(
            "GET http://127.0.0.1:{p}/echo/raw{i} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
            p = origin.port()
        );
        s.write_all(req.as_bytes()).expect("write");
    }
    let mut r = BufReader::new(s);
    for i in 0..3 {
        let resp = read_response(&mut r, false).expect("response");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["uri"], format!("/echo/raw{i}"));
    }
    assert_eq!(
        origin.connections(),
        1,
        "still the one pooled upstream connection"
    );

    // Python requests.Session: same upstream peer both times.
    let script = r#"
import sys, requests
proxy, url = sys.argv[1], sys.argv[2]
s = requests.Session()
s.trust_env = False
peers = []
for i in range(2):
    r = s.get(url + str(i), proxies={"http": proxy}, timeout=30)
    assert r.status_code == 200, r.status_code
    peers.append(r.json()["peer"])
print(peers[0] == peers[1])
"#;
    let out = run_python(script, &[gw.proxy_url(), origin.url("/echo/py")]);
    assert_eq!(out, "True\n");
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.requests(), 7);
}

#[test]
fn hop_by_hop_and_gateway_headers_never_reach_the_origin() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let body = br#"{"hello":"x"}"#;
    let req = format!(
        "POST http://127.0.0.1:{p}/echo/h HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\n\
         Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: s3cret\r\n\
         TE: gzip, trailers\r\nTrailer: X-Checksum\r\nX-Portcullis-Subagent: sub\r\n\
         X-PORTCULLIS-Anything: x\r\nAccept-Encoding: gzip, br;q=0.5\r\n\
         Content-Type: application/json\r\nX-End-To-End: kept\r\nContent-Length: {}\r\n\r\n",
        body.len(),
        p = origin.port()
    );
    let mut s = connect(gw.proxy);
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let resp = read_response(&mut BufReader::new(s), false).expect("response");
    assert_eq!(resp.status, 200);
    let v = resp.json();
    let names = header_names(&v);
    for banned in [
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "x-hop-secret",
        "te",
        "trailer",
        "x-portcullis-subagent",
        "x-portcullis-anything",
        "x-forwarded-for",
        "forwarded",
        "via",
    ] {
        assert!(
            !names.iter().any(|n| n == banned),
            "{banned} reached the origin: {names:?}"
        );
    }
    for c in header_values(&v, "connection") {
        assert!(!c.to_ascii_lowercase().contains("x-hop-secret"), "{c}");
    }
    assert_eq!(header_values(&v, "accept-encoding"), vec!["gzip, br;q=0.5"]);
    assert_eq!(header_values(&v, "content-length"), vec!["13"]);
    assert_eq!(header_values(&v, "x-end-to-end"), vec!["kept"]);
    assert_eq!(header_values(&v, "content-type"), vec!["application/json"]);
    assert_eq!(
        header_values(&v, "host"),
        vec![format!("127.0.0.1:{}", origin.port()).as_str()]
    );
    assert_eq!(v["uri"], "/echo/h", "origin-form upstream");
    assert_eq!(v["body_sha256"], sha256_hex(body));

    // `TE: trailers` alone is end-to-end-safe and survives.
    let req = format!(
        "GET http://127.0.0.1:{p}/echo/te HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nTE: trailers\r\n\r\n",
        p = origin.port()
    );
    let v = send_raw(gw.proxy, req.as_bytes()).json();
    assert_eq!(header_values(&v, "te"), vec!["trailers"]);
}

#[test]
fn python_requests_proxy_credentials_do_not_reach_the_origin() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let script = r#"
import sys, json, requests
proxy, url = sys.argv[1], sys.argv[2]
s = requests.Session()
s.trust_env = False
r = s.post(url, proxies={"http": proxy}, json={"k": "v"}, headers={"Accept-Encoding": "identity"}, timeout=30)
assert r.status_code == 200, r.status_code
print(json.dumps(r.json()))
"#;
    let proxy = format!("http://agent:s3cret@{}", gw.proxy);
    let out = run_python(script, &[proxy, origin.url("/echo/py")]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let names = header_names(&v);
    assert!(
        !names.iter().any(|n| n == "proxy-authorization"),
        "Proxy-Authorization reached the origin: {names:?}"
    );
    assert_eq!(header_values(&v, "accept-encoding"), vec!["identity"]);
    assert_eq!(header_values(&v, "content-length"), vec!["10"]);
    assert_eq!(v["method"], "POST");
}

#[test]
fn plaintext_connect_tunnel_bytes_are_counted_exactly() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    let mut s = connect(gw.proxy);
    let p = origin.port();
    s.write_all(
        format!("CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, true).expect("200").status, 200);
    let inner =
        format!("GET /big/chunked HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n");
    r.get_mut()
        .write_all(inner.as_bytes())
        .expect("write inner");
    let mut down = Vec::new();
    r.read_to_end(&mut down).expect("read tunnel");
    drop(r);
    // The inner response is the origin's, byte for byte (de-chunked body).
    let resp = read_response(&mut &down[..], false).expect("inner response");
    assert_eq!(resp.status, 200);
    assert!(resp.body == big_body(), "tunnelled body differs");
    let m = gw.metrics_until("tunnel closed", |m| {
        m.value("portcullis_tunnels_active", &[]) == 0.0
            && m.value(
                "portcullis_tunnel_bytes_total",
                &[("direction", "downstream")],
            ) > 0.0
    });
    assert_eq!(
        m.value(
            "portcullis_tunnel_bytes_total",
            &[("direction", "upstream")]
        ),
        inner.len() as f64
    );
    assert_eq!(
        m.value(
            "portcullis_tunnel_bytes_total",
            &[("direction", "downstream")]
        ),
        down.len() as f64
    );
}

const PY_DOWNLOAD: &str = r#"
import sys, hashlib, requests
proxy, base, pem = sys.argv[1], sys.argv[2], sys.argv[3]
s = requests.Session()
s.trust_env = False
for path in ("/big/cl", "/big/chunked"):
    r = s.get(base + path, proxies={"http": proxy}, timeout=60)
    assert r.status_code == 200, r.status_code
    print(path, len(r.content), hashlib.sha256(r.content).hexdigest())
tls = sys.argv[4]
r = s.get(tls + "/big/cl", proxies={"https": proxy}, verify=pem, timeout=60)
assert r.status_code == 200, r.status_code
print("tls", len(r.content), hashlib.sha256(r.content).hexdigest())
"#;

#[test]
fn python_requests_downloads_ten_megabytes_plain_and_through_connect() {
    let origin = Origin::start();
    let tls = Origin::start_tls();
    let gw = Gateway::start_for(&[origin.port(), tls.port()]);
    let out = run_python(
        PY_DOWNLOAD,
        &[
            gw.proxy_url(),
            format!("http://127.0.0.1:{}", origin.port()),
            tls.cert_pem
                .as_ref()
                .expect("pem")
                .to_str()
                .expect("path")
                .to_owned(),
            format!("https://localhost:{}", tls.port()),
        ],
    );
    let sha = sha256_hex(&big_body());
    assert_eq!(
        out,
        format!("/big/cl {BIG_LEN} {sha}\n/big/chunked {BIG_LEN} {sha}\ntls {BIG_LEN} {sha}\n")
    );
}
