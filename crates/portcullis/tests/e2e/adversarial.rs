//! End-to-end: hostile and broken requests against the real gateway. Each gets
//! the right status (with the JSON error body, `X-Portcullis-Error` and a
//! descriptive reason phrase wherever the gateway answers) and never reaches
//! the origin, which counts every connection it accepts.

use crate::common::*;
use std::io::{BufReader, Write};
use std::net::TcpListener;

/// Sends one request head (plus `body`) on a fresh connection; reads one response.
fn raw(gw: &Gateway, head: &str, body: &[u8]) -> RawResponse {
    let mut req = head.as_bytes().to_vec();
    req.extend_from_slice(body);
    send_raw(gw.proxy, &req)
}

fn get(gw: &Gateway, uri: &str) -> RawResponse {
    let host = uri
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    raw(
        gw,
        &format!("GET {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

fn connect_to(gw: &Gateway, authority: &str) -> RawResponse {
    raw(
        gw,
        &format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
        b"",
    )
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn private_and_obfuscated_loopback_destinations_are_forbidden_without_allow_private() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start(&format!("allowed_ports = [80, {p}]\n"), "");
    let uris = [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://127.0.0.1:{p}/echo"),
        format!("http://[::ffff:127.0.0.1]:{p}/echo"),
        format!("http://[::ffff:7f00:1]:{p}/echo"),
        format!("http://2130706433:{p}/echo"),
        format!("http://0177.0.0.1:{p}/echo"),
        format!("http://0x7f000001:{p}/echo"),
        format!("http://127.1:{p}/echo"),
        format!("http://localhost:{p}/echo"),
        format!("http://LocalHost.:{p}/echo"),
        format!("http://[::1]:{p}/echo"),
        format!("http://[64:ff9b::7f00:1]:{p}/echo"),
        format!("http://[2002:7f00:1::]:{p}/echo"),
        format!("http://0.0.0.0:{p}/echo"),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
    ];
    for uri in &uris {
        let r = get(&gw, uri);
        r.assert_error(403, "destination_forbidden");
        assert_eq!(r.reason, "Destination Forbidden", "{uri}");
    }
    let authorities = [
        "169.254.169.254:80".to_owned(),
        format!("127.0.0.1:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("2130706433:{p}"),
        format!("0177.0.0.1:{p}"),
        format!("localhost:{p}"),
        format!("[::1]:{p}"),
    ];
    for a in &authorities {
        let r = connect_to(&gw, a);
        r.assert_error(403, "destination_forbidden");
        assert_eq!(r.reason, "Destination Forbidden", "{a}");
    }
    assert_eq!(
        origin.connections(),
        0,
        "a forbidden request reached the origin"
    );
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "destination_forbidden")]
        ),
        (uris.len() + authorities.len()) as f64
    );
    assert_eq!(
        m.value("portcullis_requests_total", &[("verdict", "deny")]),
        (uris.len() + authorities.len()) as f64,
        "{}",
        m.0
    );
}

#[test]
fn allow_private_admits_mapped_and_lenient_forms_of_the_covered_address_only() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start(
        &format!("allowed_ports = [{p}]\nallow_private = [\"127.0.0.1/32\"]\n"),
        "",
    );
    for (uri, path) in [
        (
            format!("http://[::ffff:127.0.0.1]:{p}/echo/mapped"),
            "/echo/mapped",
        ),
        (
            format!("http://2130706433:{p}/echo/decimal"),
            "/echo/decimal",
        ),
        (format!("http://0177.0.0.1:{p}/echo/octal"), "/echo/octal"),
        (format!("http://127.0.0.1:{p}/echo/plain"), "/echo/plain"),
    ] {
        let r = get(&gw, &uri);
        assert_eq!(r.status, 200, "{uri}: {r:?}");
        assert_eq!(r.json()["uri"], path);
    }
    assert_eq!(origin.requests(), 4);
    // Addresses outside the CIDR stay forbidden.
    for uri in [
        format!("http://[::1]:{p}/echo"),
        format!("http://127.0.0.2:{p}/echo"),
        format!("http://[::ffff:127.0.0.2]:{p}/echo"),
        "http://169.254.169.254:{p}/".replace("{p}", &p.to_string()),
    ] {
        get(&gw, &uri).assert_error(403, "destination_forbidden");
    }
    assert_eq!(origin.requests(), 4);
}

#[test]
fn the_gateways_own_listeners_are_refused_even_with_allow_private() {
    let (pp, ap) = (closed_port(), closed_port());
    let gw = Gateway::start_on(
        &format!("127.0.0.1:{pp}"),
        &format!("127.0.0.1:{ap}"),
        &format!("allowed_ports = [{pp}, {ap}]\nallow_private = [\"127.0.0.0/8\", \"::1/128\"]\n"),
        "",
    );
    assert_eq!((gw.proxy.port(), gw.admin.port()), (pp, ap));
    for uri in [
        format!("http://127.0.0.1:{ap}/metrics"),
        format!("http://localhost:{ap}/metrics"),
        format!("http://[::ffff:127.0.0.1]:{ap}/metrics"),
        format!("http://2130706433:{ap}/metrics"),
        format!("http://127.0.0.1:{pp}/healthz"),
    ] {
        let v = get(&gw, &uri).assert_error(403, "destination_forbidden");
        assert!(
            v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("own listeners")),
            "{uri}: {v}"
        );
    }
    for a in [format!("127.0.0.1:{ap}"), format!("localhost:{pp}")] {
        connect_to(&gw, &a).assert_error(403, "destination_forbidden");
    }
}

#[test]
fn ports_outside_allowed_ports_are_refused_before_any_lookup() {
    let origin = Origin::start();
    let gw = Gateway::start_for(&[origin.port()]);
    for uri in [
        "http://127.0.0.1:25/".to_owned(),
        "http://no-such-host.invalid:25/".to_owned(),
        "http://example.com/".to_owned(),
    ] {
        let r = get(&gw, &uri);
        r.assert_error(403, "port_not_allowed");
        assert_eq!(r.reason, "Port Not Allowed");
    }
    let r = connect_to(&gw, "127.0.0.1:25");
    r.assert_error(403, "port_not_allowed");
    assert_eq!(r.reason, "Port Not Allowed");
    connect_to(&gw, "smtp.example.com:25").assert_error(403, "port_not_allowed");
    assert_eq!(origin.connections(), 0);
}

#[test]
fn bad_connect_authorities_are_400() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    let cases = [
        "127.0.0.1".to_owned(),
        "127.0.0.1:".to_owned(),
        "127.0.0.1:0".to_owned(),
        "127.0.0.1:99999".to_owned(),
        "127.0.0.1:8x".to_owned(),
        format!("user:pw@127.0.0.1:{p}"),
        format!("[::1:{p}"),
        format!("exa$mple.com:{p}"),
        format!("http://127.0.0.1:{p}/"),
        "/just/a/path".to_owned(),
        "*".to_owned(),
    ];
    for a in &cases {
        let r = connect_to(&gw, a);
        assert_eq!(r.status, 400, "CONNECT {a}: {r:?}");
        if let Some(code) = r.header("x-portcullis-error").map(str::to_owned) {
            r.assert_error(400, &code);
        }
    }
    // The gateway's own answers carry JSON and a code.
    connect_to(&gw, "127.0.0.1").assert_error(400, "bad_target");
    connect_to(&gw, &format!("user:pw@127.0.0.1:{p}")).assert_error(400, "credentials_in_url");
    assert_eq!(origin.connections(), 0);
}

#[test]
fn unsupported_targets_are_400() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    get(&gw, &format!("https://127.0.0.1:{p}/echo")).assert_error(400, "unsupported_scheme");
    get(&gw, &format!("ftp://127.0.0.1:{p}/echo")).assert_error(400, "unsupported_scheme");
    get(&gw, &format!("http://user:pw@127.0.0.1:{p}/echo")).assert_error(400, "credentials_in_url");
    assert_eq!(origin.connections(), 0);
}

#[test]
fn smuggling_and_ambiguous_framing_never_reach_the_origin() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    let line = format!("POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n");
    // A second request hidden in the body: if framing were misread, it would
    // reach the origin as a separate request.
    let smuggled =
        format!("0\r\n\r\nGET http://127.0.0.1:{p}/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "duplicate different CL",
            "Content-Length: 5\r\nContent-Length: 6\r\n".into(),
            None,
        ),
        ("CL list", "Content-Length: 5, 5\r\n".into(), None),
        ("CL sign", "Content-Length: +5\r\n".into(), None),
        ("CL hex", "Content-Length: 0x5\r\n".into(), None),
        ("CL negative", "Content-Length: -1\r\n".into(), None),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n".into(),
            Some("bad_transfer_encoding"),
        ),
        (
            "TE xchunked",
            "Transfer-Encoding: xchunked\r\n".into(),
            Some("bad_transfer_encoding"),
        ),
        (
            "TE identity",
            "Transfer-Encoding: identity\r\n".into(),
            Some("bad_transfer_encoding"),
        ),
        (
            "TE twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".into(),
            Some("bad_transfer_encoding"),
        ),
        (
            "TE space before colon",
            "Transfer-Encoding : chunked\r\n".into(),
            None,
        ),
        (
            "TE obs-fold",
            "X-A: b\r\n Transfer-Encoding: chunked\r\n".into(),
            None,
        ),
        (
            "TE tab name",
            "Transfer-Encoding\t: chunked\r\n".into(),
            None,
        ),
    ];
    for (name, headers, code) in &cases {
        let head = format!("{line}{headers}\r\n");
        let mut s = connect(gw.proxy);
        s.write_all(head.as_bytes()).expect("write head");
        s.write_all(smuggled.as_bytes()).expect("write body");
        let mut br = BufReader::new(s);
        let r = read_response(&mut br, false).expect("response");
        // Nothing after the refusal is parsed as another request: the
        // connection is closed.
        let (rest, closed) = read_until_close(br.get_mut());
        assert!(
            closed && rest.is_empty(),
            "{name}: connection kept open after a framing error: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(
            (400..500).contains(&r.status),
            "{name}: status {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        // Either the gateway answers (JSON with the expected code), or hyper
        // refused the head while parsing (a bare 400 and a closed connection).
        match r.header("x-portcullis-error").map(str::to_owned) {
            Some(c) => {
                let want = code.unwrap_or(c.as_str());
                r.assert_error(400, want);
            }
            None => {
                assert_eq!(r.status, 400, "{name}: {r:?}");
                assert_eq!(r.header("connection"), Some("close"), "{name}");
            }
        }
        assert_eq!(origin.connections(), 0, "{name} reached the origin: {r:?}");
    }
    assert_eq!(
        origin.connections(),
        0,
        "a malformed request reached the origin"
    );
}

#[test]
fn header_limits_answer_431() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    let line = format!("GET http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n");

    // Slightly over 64 KiB: the gateway's own JSON 431.
    let big = format!("{line}X-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let r = raw(&gw, &big, b"");
    r.assert_error(431, "headers_too_large");
    // Far over: refused while parsing (hyper's own 431, possibly without a body).
    let huge = format!("{line}X-Big: {}\r\n\r\n", "a".repeat(300 * 1024));
    let r = raw(&gw, &huge, b"");
    assert_eq!(r.status, 431, "{r:?}");

    // More headers than proxy.max_headers (100).
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(&gw, &format!("{line}{many}\r\n"), b"");
    r.assert_error(431, "headers_too_many");
    let lots: String = (0..400).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(&gw, &format!("{line}{lots}\r\n"), b"");
    assert_eq!(r.status, 431, "{r:?}");

    // Just under the limits passes.
    let ok: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(&gw, &format!("{line}{ok}Connection: close\r\n\r\n"), b"");
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests(), 1);
}

#[test]
fn origin_form_requests_are_for_the_gateway_itself() {
    let gw = Gateway::start_for(&[80]);
    let r = raw(&gw, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    for head in [
        "GET / HTTP/1.1\r\nHost: gw\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n",
        "POST /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n",
        "GET /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    ] {
        raw(&gw, head, b"").assert_error(404, "not_found");
    }
}

#[test]
fn unreachable_upstreams_map_to_502() {
    let origin = Origin::start();
    let dead = closed_port();
    let gw = Gateway::start_for(&[origin.port(), dead]);
    let r = get(&gw, &format!("http://127.0.0.1:{dead}/"));
    r.assert_error(502, "upstream_unreachable");
    let r = connect_to(&gw, &format!("127.0.0.1:{dead}"));
    r.assert_error(502, "upstream_unreachable");
    assert_eq!(r.reason, "Upstream Unreachable");

    let r = get(&gw, &format!("http://no-such-host.invalid:{dead}/"));
    r.assert_error(502, "dns_failure");
    let r = connect_to(&gw, &format!("no-such-host.invalid:{dead}"));
    r.assert_error(502, "dns_failure");
    assert_eq!(r.reason, "Dns Failure");

    let m = gw.metrics();
    assert_eq!(
        m.value("portcullis_upstream_errors_total", &[("kind", "connect")]),
        2.0
    );
    assert_eq!(
        m.value("portcullis_upstream_errors_total", &[("kind", "dns")]),
        2.0
    );
}

#[test]
fn slowloris_head_is_cut_off_after_header_read_timeout() {
    let origin = Origin::start();
    let p = origin.port();
    // A real timer in the real binary; nothing legitimate races it, so it can be short.
    let gw = Gateway::start(
        &format!(
            "{}header_read_timeout = \"200ms\"\n",
            loopback_proxy_section(&[p])
        ),
        "",
    );
    let mut s = connect(gw.proxy);
    s.write_all(format!("GET http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .expect("write partial head");
    // Never finish the head; the gateway must close the connection on its own
    // (the read timeout here is far longer than header_read_timeout).
    let (bytes, closed) = read_until_close(&mut s);
    assert!(closed, "gateway kept a never-finished head open");
    assert!(
        bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 408"),
        "unexpected answer {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(origin.connections(), 0);
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_connections_rejected_total",
            &[("reason", "header_timeout")]
        ),
        1.0
    );
}

#[test]
fn connections_beyond_max_connections_get_503() {
    let gw = Gateway::start(
        &format!("{}max_connections = 2\n", loopback_proxy_section(&[80])),
        "",
    );
    let a = connect(gw.proxy);
    let b = connect(gw.proxy);
    gw.metrics_until("two connections open", |m| {
        m.value("portcullis_connections_active", &[]) == 2.0
    });
    let mut c = BufReader::new(connect(gw.proxy));
    let r = read_response(&mut c, false).expect("503");
    r.assert_error(503, "too_many_connections");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(a);
    gw.metrics_until("one connection left", |m| {
        m.value("portcullis_connections_active", &[]) == 1.0
    });
    let r = raw(&gw, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", b"");
    assert_eq!(r.status, 200);
    drop(b);
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_connections_rejected_total",
            &[("reason", "max_connections")]
        ),
        1.0
    );
}

/// CL+TE with a hidden second request in the body: refused, the connection
/// closed, and neither request reaches the origin.
#[test]
fn cl_te_requests_cannot_smuggle_a_second_request() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    let smuggled =
        format!("0\r\n\r\nGET http://127.0.0.1:{p}/echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    for headers in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
    ] {
        let mut s = connect(gw.proxy);
        let head = format!(
            "POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n{headers}\r\n"
        );
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(smuggled.as_bytes()).expect("write");
        let mut r = BufReader::new(s);
        read_response(&mut r, false)
            .expect("response")
            .assert_error(400, "ambiguous_framing");
        // No second response: the connection is closed after an ambiguous request.
        let (rest, closed) = read_until_close(r.get_mut());
        assert!(
            closed && rest.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert_eq!(origin.connections(), 0);
}

/// Equal duplicate Content-Length values are collapsed by hyper into one (RFC
/// 9112 §6.3 allows it), so gateway and origin agree on the framing.
#[test]
fn equal_duplicate_content_lengths_reach_the_origin_as_one() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    let head = format!(
        "POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"
    );
    let r = raw(&gw, &head, b"hello");
    if r.status == 200 {
        let v = r.json();
        let cl: Vec<&serde_json::Value> = v["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0] == "content-length")
            .collect();
        assert_eq!(cl.len(), 1, "{v}");
        assert_eq!(cl[0][1], "5");
        assert_eq!(v["body_sha256"], sha256_hex(b"hello"));
    } else {
        r.assert_error(400, "bad_content_length");
    }
}

/// CL+TE gets a 4xx JSON answer without contacting the upstream, in either
/// header order, also as the second request on a keep-alive connection.
#[test]
fn cl_te_requests_get_400_ambiguous_framing() {
    let origin = Origin::start();
    let p = origin.port();
    let gw = Gateway::start_for(&[p]);
    for headers in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 5\r\n",
    ] {
        let head = format!(
            "POST http://127.0.0.1:{p}/echo HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n{headers}\r\n0\r\n\r\n"
        );
        raw(&gw, &head, b"").assert_error(400, "ambiguous_framing");
    }
    assert_eq!(origin.connections(), 0);
    // A clean request first, then CL+TE on the same connection.
    let mut s = connect(gw.proxy);
    let ok = format!("GET http://127.0.0.1:{p}/echo/ok HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n");
    s.write_all(ok.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).expect("first").status, 200);
    let bad = format!(
        "POST http://127.0.0.1:{p}/echo/bad HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    r.get_mut().write_all(bad.as_bytes()).expect("write");
    read_response(&mut r, false)
        .expect("second")
        .assert_error(400, "ambiguous_framing");
    assert_eq!(origin.requests(), 1);
    // And a clean request after a clean one is not flagged.
    let mut s = connect(gw.proxy);
    s.write_all(ok.as_bytes()).expect("write");
    s.write_all(ok.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    for _ in 0..2 {
        assert_eq!(read_response(&mut r, false).expect("ok").status, 200);
    }
    assert_eq!(origin.requests(), 3);
}
