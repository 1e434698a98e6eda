//! Data-plane rules that need no real engine: decide before answering a CONNECT, header
//! hygiene both ways, framing on a pipelined connection, one canonical path upstream.

use crate::client::send;
use crate::fakes::basic;
use crate::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_connect_is_decided_before_it_is_answered() {
    let h = Harness::start().await;
    let connect = |authority: &str| {
        format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
            basic("bot")
        )
    };
    // Policy denies port 444 (no dial is attempted: nothing listens there).
    let r = send(h.addr, connect("127.0.0.1:444").as_bytes()).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["code"], "policy_denied");
    // Allowed, but the destination refuses the connection: 502, never a 200.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let h2 = Harness::start_with(|c| c.allowed_ports.push(closed)).await;
    let r = send(h2.addr, connect(&format!("127.0.0.1:{closed}")).as_bytes()).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["code"], "upstream_unreachable");
}

#[tokio::test]
async fn hop_by_hop_and_gateway_headers_never_cross() {
    let h = Harness::start().await;
    let req = format!(
        "GET http://127.0.0.1:{}/headers HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {}\r\n\
         Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\n\
         X-Portcullis-Subagent: helper\r\nX-Portcullis-Anything: 1\r\nX-Kept: 1\r\n\r\n",
        h.origin,
        basic("bot")
    );
    let r = send(h.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.body), "host,x-kept");
    let records = h.records_until("one record", |r| !r.is_empty()).await;
    assert_eq!(records[0].subagent.as_deref(), Some("helper"));
}

#[tokio::test]
async fn framing_is_checked_on_every_pipelined_head() {
    let h = Harness::start().await;
    let o = h.origin;
    let auth = basic("bot");
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let pipelined = format!(
        "POST http://127.0.0.1:{o}/one HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {auth}\r\n\
         Content-Length: 3\r\n\r\nabc\
         POST http://127.0.0.1:{o}/two HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"
    );
    s.write_all(pipelined.as_bytes()).await.expect("write");
    let mut responses = crate::client::Responses::new(&mut s);
    let first = responses.next().await.expect("first");
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, b"ok POST /one".as_slice())
    );
    let second = responses.next().await.expect("second");
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["code"], "ambiguous_framing");
    assert_eq!(second.header("connection"), Some("close"));
    let records = h.records_until("two records", |r| r.len() == 2).await;
    assert!(records
        .iter()
        .any(|r| r.error.as_deref() == Some("ambiguous_framing")));
}

#[tokio::test]
async fn a_streamed_event_is_written_as_soon_as_it_arrives() {
    // The origin sends one event, a second 50 ms later, then holds the stream open without a
    // third. Frames already buffered are written together, but nothing waits for more: the
    // second event must reach the client while the origin is still silent.
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(
        format!(
            "GET http://127.0.0.1:{}/events HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {}\r\n\r\n",
            h.origin,
            basic("bot")
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut seen = Vec::new();
    let read = tokio::time::timeout(crate::TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"data: two\n\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(
        read.is_ok(),
        "the second event was held back waiting for more: {text:?}"
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Chunked framing of exactly the two events, nothing else yet.
    assert!(
        text.ends_with("\r\n\r\nB\r\ndata: one\n\n\r\nB\r\ndata: two\n\n\r\n"),
        "{text:?}"
    );
}

#[tokio::test]
async fn an_agents_own_tool_call_limit_refuses_the_call_over_it() {
    // `mcp.calls_per_minute` is unset in the harness; agent `one_tool_call` has its own limit
    // of 1 a minute (the limits phase answers it). Its first call reaches the server, the
    // second is refused before it does and recorded as rate limited.
    let h = Harness::start().await;
    let call = |id: u32| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/a"}}}}}}"#
        );
        let mut req = format!(
            "POST http://localhost:{}/mcp HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Mcp-Method: tools/call\r\nMcp-Name: read_file\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            h.origin,
            basic("one_tool_call"),
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        req
    };
    let first = send(h.addr, &call(1)).await;
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, b"ok POST /mcp".as_slice()),
        "{first:?}"
    );
    let second = send(h.addr, &call(2)).await;
    assert_eq!(second.status, 429, "{second:?}");
    let v = second.json();
    assert_eq!(
        (v["code"].as_str(), v["limit"].as_str()),
        (Some("rate_limited"), Some("mcp_calls_per_minute")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("of 1 exceeded"),
        "the agent's own limit, not a default: {v}"
    );
    // Another agent is not limited by it.
    let other = {
        let mut r = call(3);
        let text = String::from_utf8_lossy(&r).replace(&basic("one_tool_call"), &basic("bot"));
        r = text.into_bytes();
        send(h.addr, &r).await
    };
    assert_eq!(other.status, 200, "{other:?}");
    let records = h.records_until("three records", |r| r.len() >= 3).await;
    let limited: Vec<_> = records
        .iter()
        .filter(|r| r.verdict == portcullis_core::Verdict::RateLimited)
        .collect();
    assert_eq!(limited.len(), 1, "{records:#?}");
    assert_eq!(limited[0].agent_id, "one_tool_call");
    assert_eq!(limited[0].status, Some(429));
}
