//! Every refusal cause, table-driven over `Cause::ALL`: each is provoked through the real
//! listener and must be answered as its cause says and recorded exactly once with the cause's
//! verdict and code. A new cause without a scenario here does not compile.

use crate::client::{read_response, send, tls, tunnel, until_closed};
use crate::fakes::basic;
use crate::Harness;
use portcullis_core::Verdict;
use portcullis_proxy::refusal::Cause;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What a provoked refusal must look like.
struct Expect {
    /// The status answered, when an answer is possible.
    status: Option<u16>,
    /// The code answered and recorded.
    code: &'static str,
    /// The verdict recorded.
    verdict: Verdict,
}

fn get(target: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

fn expect(status: u16, code: &'static str, verdict: Verdict) -> Vec<Expect> {
    vec![Expect {
        status: Some(status),
        code,
        verdict,
    }]
}

/// Provokes `cause` once (or once per variant of it) and says what must have happened.
async fn provoke(h: &Harness, cause: Cause) -> Vec<Expect> {
    let o = h.origin;
    let bot = basic("bot");
    let answered = |r: crate::client::Resp, e: Vec<Expect>| {
        assert_eq!(Some(r.status), e[0].status, "{cause:?}: {r:?}");
        assert_eq!(r.header("x-portcullis-error"), Some(e[0].code), "{cause:?}");
        assert_eq!(r.json()["code"], e[0].code, "{cause:?}");
        e
    };
    let url = |path: &str| format!("http://127.0.0.1:{o}{path}");
    match cause {
        Cause::Auth => {
            let mut all = Vec::new();
            for (auth, status, code, verdict) in [
                (None, 407, "proxy_auth_required", Verdict::Error),
                (
                    Some(basic("disabled")),
                    403,
                    "agent_disabled",
                    Verdict::Deny,
                ),
                (
                    Some(basic("throttled")),
                    429,
                    "auth_throttled",
                    Verdict::Error,
                ),
            ] {
                let r = send(h.addr, &get(&url("/a"), auth.as_deref())).await;
                all.extend(answered(r, expect(status, code, verdict)));
            }
            all
        }
        Cause::Malformed => {
            let r = send(h.addr, &get(&url("/a%2fb"), Some(&bot))).await;
            answered(r, expect(400, "ambiguous_path", Verdict::Error))
        }
        Cause::Port => {
            let r = send(h.addr, &get("http://127.0.0.1:25/", Some(&bot))).await;
            answered(r, expect(403, "port_not_allowed", Verdict::Deny))
        }
        Cause::Destination => {
            let r = send(h.addr, &get("http://10.0.0.1/", Some(&bot))).await;
            answered(r, expect(403, "destination_forbidden", Verdict::Deny))
        }
        Cause::HostMismatch => {
            let mut s = tunnel(h.addr, &format!("localhost:{o}"), &bot).await;
            s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                .await
                .expect("write");
            let r = read_response(&mut s).await.expect("answer");
            answered(r, expect(403, "host_mismatch", Verdict::Deny))
        }
        Cause::Policy => {
            let r = send(h.addr, &get(&url("/deny"), Some(&bot))).await;
            assert!(r.header("x-portcullis-decision-id").is_some(), "{r:?}");
            answered(r, expect(403, "policy_denied", Verdict::Deny))
        }
        Cause::Limited => {
            let r = send(h.addr, &get(&url("/a"), Some(&basic("limited")))).await;
            assert_eq!(r.header("retry-after"), Some("30"));
            answered(r, expect(429, "rate_limited", Verdict::RateLimited))
        }
        Cause::LimitsUnavailable => {
            let r = send(h.addr, &get(&url("/a"), Some(&basic("unlimitable")))).await;
            assert_eq!(r.header("retry-after"), Some("1"));
            let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
            assert!(detail.contains("on_redis_error = deny"), "{detail}");
            answered(r, expect(503, "limits_unavailable", Verdict::Error))
        }
        Cause::AuditUnavailable => {
            h.recorder
                .down
                .store(true, std::sync::atomic::Ordering::Release);
            let r = send(h.addr, &get(&url("/a"), Some(&bot))).await;
            h.recorder
                .down
                .store(false, std::sync::atomic::Ordering::Release);
            answered(r, expect(503, "audit_unavailable", Verdict::Allow))
        }
        Cause::CredentialUnavailable => {
            let s = tunnel(h.addr, &format!("localhost:{o}"), &basic("keyed")).await;
            let mut t = tls(s, "localhost", &h.leaf_der).await.expect("TLS");
            t.write_all(format!("GET / HTTP/1.1\r\nHost: localhost:{o}\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let r = read_response(&mut t).await.expect("answer");
            answered(r, expect(503, "credential_unavailable", Verdict::Allow))
        }
        Cause::Upstream => {
            let closed = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").port()
            };
            let h2 = Harness::start_with(|c| c.allowed_ports.push(closed)).await;
            let r = send(
                h2.addr,
                &get(&format!("http://127.0.0.1:{closed}/"), Some(&bot)),
            )
            .await;
            let e = answered(r, expect(502, "upstream_unreachable", Verdict::Allow));
            // The refusal was recorded by that harness: check it there.
            check(&h2, Cause::Upstream, &e).await;
            Vec::new()
        }
        Cause::NotFound => {
            let r = send(
                h.addr,
                b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            answered(r, expect(404, "not_found", Verdict::Error))
        }
        Cause::SniMismatch => {
            let s = tunnel(h.addr, &format!("localhost:{o}"), &bot).await;
            assert!(tls(s, "other.example", &h.leaf_der).await.is_err());
            vec![Expect {
                status: None,
                code: "sni_mismatch",
                verdict: Verdict::Deny,
            }]
        }
        Cause::TunnelProtocol => {
            let mut s = tunnel(h.addr, &format!("localhost:{o}"), &bot).await;
            s.write_all(b"\x00\x01binary").await.expect("write");
            assert!(until_closed(&mut s).await.is_empty());
            vec![Expect {
                status: None,
                code: "tunnel_protocol_refused",
                verdict: Verdict::Allow,
            }]
        }
        Cause::Mcp => {
            // A body to an MCP endpoint that is not JSON-RPC: a JSON-RPC error, id null.
            let body = b"not json";
            let mut req = format!(
                "POST http://localhost:{o}/mcp HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {bot}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body);
            let r = send(h.addr, &req).await;
            assert_eq!(r.status, 400, "{r:?}");
            assert_eq!(r.header("x-portcullis-error"), Some("mcp_parse_error"));
            let v = r.json();
            assert_eq!(v["jsonrpc"], "2.0", "{v}");
            assert_eq!(v["id"], serde_json::Value::Null, "{v}");
            assert_eq!(v["error"]["code"], -32700, "{v}");
            assert_eq!(v["error"]["data"]["code"], "mcp_parse_error", "{v}");
            vec![Expect {
                status: Some(400),
                code: "mcp_parse_error",
                verdict: Verdict::Error,
            }]
        }
        Cause::Overloaded => {
            let h1 = Harness::start_with(|c| c.max_connections = 1).await;
            let _held = TcpStream::connect(h1.addr).await.expect("first");
            // The first connection is accepted before the second arrives.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let r = send(h1.addr, &get(&url("/a"), Some(&bot))).await;
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.header("connection"), Some("close"));
            answered(r, expect(503, "too_many_connections", Verdict::Error));
            // No request was read: nothing to record, the rejection is counted.
            assert!(h1.records().is_empty(), "{:?}", h1.records());
            assert_eq!(
                h1.counter(
                    "portcullis_connections_rejected_total",
                    ("reason", "max_connections")
                ),
                1.0
            );
            Vec::new()
        }
    }
}

/// Exactly one record per expected refusal, with its verdict; the refused metric counted.
async fn check(h: &Harness, cause: Cause, expected: &[Expect]) {
    for e in expected {
        let records = h
            .records_until(&format!("{cause:?} {} recorded", e.code), |rs| {
                rs.iter().any(|r| r.error.as_deref() == Some(e.code))
            })
            .await;
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.error.as_deref() == Some(e.code))
            .collect();
        assert_eq!(mine.len(), 1, "{cause:?} {}: {mine:#?}", e.code);
        assert_eq!(
            mine[0].verdict, e.verdict,
            "{cause:?} {}: {:#?}",
            e.code, mine[0]
        );
        if let Some(status) = e.status {
            assert_eq!(mine[0].status, Some(status), "{cause:?}");
        }
        assert_eq!(
            h.counter("portcullis_requests_refused_total", ("code", e.code)),
            1.0,
            "{cause:?} {}",
            e.code
        );
    }
}

#[tokio::test]
async fn every_refusal_cause_is_answered_and_recorded_exactly_once() {
    for cause in Cause::ALL {
        let h = Harness::start().await;
        let expected = provoke(&h, cause).await;
        check(&h, cause, &expected).await;
    }
}

#[tokio::test]
async fn a_refusal_after_authentication_is_attributed_and_a_limit_is_a_reason() {
    let h = Harness::start().await;
    let o = h.origin;
    send(
        h.addr,
        &get(&format!("http://127.0.0.1:{o}/deny"), Some(&basic("bot"))),
    )
    .await;
    send(
        h.addr,
        &get(&format!("http://127.0.0.1:{o}/a"), Some(&basic("limited"))),
    )
    .await;
    let records = h.records_until("two records", |r| r.len() == 2).await;
    let denied = records
        .iter()
        .find(|r| r.error.as_deref() == Some("policy_denied"))
        .expect("deny");
    assert_eq!(
        (denied.agent_id.as_str(), denied.tenant.as_str()),
        ("bot", "acme")
    );
    assert_eq!(denied.policy.as_deref(), Some("fake"));
    assert_eq!(denied.reasons, ["the fake policy denies this"]);
    let limited = records
        .iter()
        .find(|r| r.error.as_deref() == Some("rate_limited"))
        .expect("429");
    assert_eq!(limited.agent_id, "limited");
    assert_eq!(
        limited.reasons,
        ["agent request rate limit (requests per minute) of 1 exceeded; retry in 30 s"]
    );
}
