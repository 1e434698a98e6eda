//! End-to-end: the admin listener and metrics, the connect timeout, graceful
//! shutdown, configuration errors and the command line of the real binary.

use crate::common::*;
use std::io::{BufReader, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

fn portcullis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_LOG")
        .output()
        .expect("run portcullis")
}

#[test]
fn admin_health_readiness_and_metrics_match_the_traffic() {
    let origin = Origin::start();
    let p = origin.port();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gw = Gateway::start_for(&[p, dead]);
    assert!(gw.banner.starts_with("portcullis 0.1.0 "), "{}", gw.banner);
    assert!(gw.banner.contains("auth=DISABLED"), "{}", gw.banner);

    let h = gw.admin_get("/healthz");
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let r = gw.admin_get("/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], "ready");
    let m = gw.metrics();
    assert_eq!(
        m.get("portcullis_build_info", &[("version", "0.1.0")]),
        Some(1.0)
    );
    assert_eq!(m.get("portcullis_connections_active", &[]), Some(0.0));
    assert_eq!(
        m.get("portcullis_tunnels_active", &[("intercepted", "false")]),
        Some(0.0)
    );
    assert_eq!(m.value("portcullis_requests_total", &[]), 0.0);

    // Five forwarded requests on one curl connection.
    let urls: Vec<String> = (0..5).map(|i| origin.url(&format!("/echo/{i}"))).collect();
    let mut args = vec![
        "-x".to_owned(),
        gw.proxy_url(),
        "-o".to_owned(),
        "/dev/null".to_owned(),
    ];
    for u in &urls {
        args.push(u.clone());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(curl(&argv).status.success());
    assert_eq!(origin.requests(), 5);
    // One refused (port), one upstream failure (closed port).
    let r = send_raw(
        gw.proxy,
        b"GET http://127.0.0.1:25/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    r.assert_error(403, "port_not_allowed");
    let req =
        format!("GET http://127.0.0.1:{dead}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    send_raw(gw.proxy, req.as_bytes()).assert_error(502, "upstream_unreachable");

    let m = gw.metrics_until("seven requests recorded, connections closed", |m| {
        m.value("portcullis_requests_total", &[]) >= 7.0
            && m.value("portcullis_connections_active", &[]) == 0.0
    });
    let allow = [
        ("agent", "anonymous"),
        ("verdict", "allow"),
        ("provider", "none"),
    ];
    // The forwarded five plus the upstream failure (policy allowed it).
    assert_eq!(m.value("portcullis_requests_total", &allow), 6.0, "{}", m.0);
    let deny = [
        ("agent", "anonymous"),
        ("verdict", "deny"),
        ("provider", "none"),
    ];
    assert_eq!(m.value("portcullis_requests_total", &deny), 1.0, "{}", m.0);
    assert_eq!(m.value("portcullis_requests_total", &[]), 7.0);
    assert_eq!(
        m.value(
            "portcullis_request_duration_seconds_count",
            &[("provider", "none")]
        ),
        7.0
    );
    assert_eq!(
        m.value("portcullis_upstream_errors_total", &[("kind", "connect")]),
        1.0
    );
    assert_eq!(
        m.value(
            "portcullis_requests_refused_total",
            &[("code", "port_not_allowed")]
        ),
        1.0
    );
    for name in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds",
        "portcullis_connections_active",
        "portcullis_tunnels_active",
        "portcullis_upstream_errors_total",
        "portcullis_build_info",
    ] {
        assert!(m.0.contains(&format!("# TYPE {name} ")), "{name} missing");
    }

    // The admin API is read-only and answers JSON errors.
    let r = send_raw(
        gw.admin,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let r = gw.admin_get("/nope");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[test]
fn connect_timeout_answers_504() {
    use socket2::{Domain, Socket, Type};
    // A listener with a backlog of 0 that never accepts: once its queue is
    // full, further SYNs go unanswered and connects hang until they time out.
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    let mut saturated = false;
    // A connect that hangs is only seen by its timeout (a loopback connect that will
    // succeed does so at once).
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => {
                saturated = true;
                break;
            }
        }
    }
    assert!(
        saturated,
        "could not fill the accept queue of a backlog-0 listener"
    );

    // Real: the connect never completes, so the gateway's timer must fire; any length works.
    let gw = Gateway::start(
        &format!(
            "{}connect_timeout = \"250ms\"\n",
            loopback_proxy_section(&[addr.port()])
        ),
        "",
    );
    let req = format!("GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let r = send_raw(gw.proxy, req.as_bytes());
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.reason, "Upstream Timeout");
    let r = send_raw(
        gw.proxy,
        format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    );
    r.assert_error(504, "upstream_timeout");
    assert_eq!(r.reason, "Upstream Timeout");
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_upstream_errors_total",
            &[("kind", "connect_timeout")]
        ),
        2.0
    );
    drop(fillers);
}

#[test]
fn sigterm_drains_an_in_flight_stream_refuses_new_connections_and_exits_0() {
    let origin = Origin::start();
    let p = origin.port();
    let mut gw = Gateway::start(
        &format!("{}shutdown_grace = \"20s\"\n", loopback_proxy_section(&[p])),
        "",
    );
    let mut s = connect(gw.proxy);
    let req = format!("GET http://127.0.0.1:{p}/sse HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    // Read the head and the first event (one chunk) before signalling.
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    let first = SSE_EVENTS[0].as_bytes();
    let deadline = Instant::now() + TIMEOUT;
    let mut byte = [0u8; 1];
    while !head.windows(first.len()).any(|w| w == first) {
        assert!(Instant::now() < deadline, "first event never arrived");
        r.read_exact(&mut byte).expect("read stream");
        head.push(byte[0]);
    }

    gw.sigterm();
    // New connections are refused once the listener is closed.
    wait_until("the proxy listener is closed", || {
        std::net::TcpStream::connect_timeout(&gw.proxy, Duration::from_secs(1)).is_err()
    });
    // The admin listener reports the drain.
    let ready = gw.admin_get("/readyz");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.json()["status"], "draining");

    // The in-flight response completes in full.
    origin.release();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("read rest");
    head.extend_from_slice(&rest);
    let text = String::from_utf8(head).expect("utf-8");
    let body_start = text.find("\r\n\r\n").expect("end of head") + 4;
    let mut dechunked = String::new();
    let mut body = &text[body_start..];
    for _ in 0..100 {
        let (size, after) = body.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if n == 0 {
            break;
        }
        dechunked.push_str(&after[..n]);
        body = &after[n + 2..];
    }
    assert_eq!(dechunked, SSE_EVENTS.concat());

    let status = gw.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn invalid_configs_exit_2_and_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[proxy]\nlisten_addr = \"127.0.0.1:1\"\n",
            "proxy.listen_addr",
        ),
        ("[proxy]\nallowed_ports = [\"x\"]\n", "proxy.allowed_ports"),
        (
            "[proxy]\nallow_private = [\"10.0.0.0/33\"]\n",
            "proxy.allow_private",
        ),
        (
            "[proxy]\nidle_timeout = \"10 parsecs\"\n",
            "proxy.idle_timeout",
        ),
        ("[proxy]\nmax_connections = 0\n", "proxy.max_connections"),
        ("[proxy]\nmax_header_bytes = 10\n", "proxy.max_header_bytes"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[nope]\n", "nope"),
        ("[proxy\n", "(document)"),
        // Checks that need a domain crate's logic run in the binary, not in the config crate.
        ("[tls]\nintercept = [\"a.*.com\"]\n", "tls.intercept"),
        ("[limits]\ntpm = 0\n", "limits.tpm"),
        (
            "[[llm.providers]]\nname = \"Bad Name\"\nhost = \"a.example\"\n",
            "llm.providers",
        ),
    ];
    for (i, (doc, key)) in cases.iter().enumerate() {
        let path = write_file(dir.path(), &format!("bad{i}.toml"), doc.as_bytes());
        for sub in ["serve", "check-config"] {
            let out = portcullis(&[sub, "--config", path.to_str().expect("path")]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {doc:?}: {stderr}");
            assert!(
                stderr.contains(key),
                "{sub} {doc:?}: stderr does not name {key}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "no banner for an invalid config");
        }
    }
    let out = portcullis(&["serve", "--config", "/nonexistent/portcullis.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/portcullis.toml"));

    let good = write_file(dir.path(), "good.toml", b"[proxy]\nallowed_ports = [443]\n");
    let out = portcullis(&["check-config", "--config", good.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn serve_authenticates_by_default_and_creates_the_demo_agent_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(
        dir.path(),
        "c.toml",
        b"[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let first_run = |expect_demo: bool| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        std::io::BufRead::read_line(&mut out, &mut banner).expect("banner");
        assert!(banner.contains(" auth=required "), "{banner}");
        assert!(banner.contains(" agents=1 "), "{banner}");
        let proxy = banner
            .split_whitespace()
            .find_map(|w| w.strip_prefix("proxy="))
            .expect("proxy addr")
            .to_owned();
        if expect_demo {
            let mut l1 = String::new();
            let mut l2 = String::new();
            std::io::BufRead::read_line(&mut out, &mut l1).expect("demo line");
            std::io::BufRead::read_line(&mut out, &mut l2).expect("export line");
            assert!(l1.contains("created agent `demo`"), "{l1}");
            assert!(l2.contains("export HTTP_PROXY=http://demo:"), "{l2}");
        }
        // No credentials: 407 with the Basic challenge, never a forward.
        let r = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x"])
            .arg(format!("http://{proxy}"))
            .arg("http://127.0.0.1:9/")
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&r.stdout), "407");
        let _ = child.kill();
        let _ = child.wait();
    };
    first_run(true);
    for f in ["data/portcullis.db", "data/signing.key"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} must be private, mode {mode:o}");
    }
    // Second start: same store, no new demo agent, no secret printed.
    first_run(false);
}

#[test]
fn config_from_the_environment_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_file(
        dir.path(),
        "c.toml",
        b"[proxy]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .arg("serve")
        .env("PORTCULLIS_CONFIG", &cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut line).expect("banner");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("portcullis 0.1.0 proxy=127.0.0.1:"),
        "{line}"
    );
    assert!(
        !line.contains("proxy=127.0.0.1:8080"),
        "config file ignored: {line}"
    );
}

#[test]
fn version_and_help() {
    let out = portcullis(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "portcullis 0.1.0"
    );
    let out = portcullis(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "check-config", "--version", "--help"] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    let out = portcullis(&["serve", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    let out = portcullis(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}
