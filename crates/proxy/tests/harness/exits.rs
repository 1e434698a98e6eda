//! One record per exchange, whatever way it ends: answered, streamed to its end, abandoned by
//! the client, a panic in a phase, a spliced tunnel closing.

use crate::client::{read_response, send, tunnel};
use crate::fakes::basic;
use crate::Harness;
use portcullis_core::{RequestKind, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn get(target: &str, auth: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {auth}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn a_forwarded_request_is_recorded_once_when_its_body_ends() {
    let h = Harness::start().await;
    let r = send(
        h.addr,
        &get(
            &format!("http://127.0.0.1:{}/a/./b", h.origin),
            &basic("bot"),
        ),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"ok GET /a/b".as_slice())
    );
    let records = h.records_until("one record", |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let rec = &records[0];
    assert_eq!(
        (rec.kind, rec.verdict, rec.status),
        (RequestKind::Http, Verdict::Allow, Some(200))
    );
    assert_eq!(rec.path.as_deref(), Some("/a/b"));
    assert_eq!(rec.bytes_out, 11);
    assert_eq!(rec.error, None);
    assert!(rec.upstream_ttfb_ms.is_some());
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_recorded_as_aborted() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(&get(
        &format!("http://127.0.0.1:{}/stream", h.origin),
        &basic("bot"),
    ))
    .await
    .expect("write");
    // The head and the first frame arrive; then the client leaves.
    let mut first = [0u8; 64];
    let n = s.read(&mut first).await.expect("read");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    let records = h
        .records_until("the aborted record", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].error.as_deref(), Some("client_aborted"));
    assert_eq!(records[0].verdict, Verdict::Allow);
}

#[tokio::test]
async fn a_panic_in_a_phase_still_leaves_one_record() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(&get(
        &format!("http://127.0.0.1:{}/panic", h.origin),
        &basic("bot"),
    ))
    .await
    .expect("write");
    // The connection's task died with the panic: no answer.
    assert!(read_response(&mut s).await.is_none());
    let records = h
        .records_until("the record of the panicked exchange", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].error.as_deref(), Some("internal_error"));
    assert_eq!(records[0].agent_id, "bot");
    // The gateway keeps serving.
    let r = send(
        h.addr,
        &get(&format!("http://127.0.0.1:{}/a", h.origin), &basic("bot")),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_spliced_tunnel_is_recorded_once_when_it_closes() {
    let h = Harness::start().await;
    // 127.0.0.1 is not intercepted (only `localhost` is): the tunnel is spliced.
    let mut s = tunnel(h.addr, &format!("127.0.0.1:{}", h.origin), &basic("bot")).await;
    s.write_all(b"GET /through HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let r = read_response(&mut s)
        .await
        .expect("origin answer through the splice");
    assert_eq!(r.body, b"ok GET /through");
    drop(s);
    let records = h
        .records_until("the tunnel record", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let t = &records[0];
    assert_eq!(
        (t.kind, t.status, t.verdict),
        (RequestKind::Tunnel, Some(200), Verdict::Allow)
    );
    assert!(t.bytes_in > 0 && t.bytes_out > 0, "{t:?}");
    assert!(!t.tls_intercepted);
}

#[tokio::test]
async fn an_intercepted_tunnel_records_each_request_and_itself() {
    let h = Harness::start().await;
    let s = tunnel(h.addr, &format!("localhost:{}", h.origin), &basic("bot")).await;
    let mut t = crate::client::tls(s, "localhost", &h.leaf_der)
        .await
        .expect("TLS");
    for path in ["/one", "/two"] {
        t.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
                h.origin
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        // The upstream speaks plain HTTP here, so the https request fails upstream (TLS):
        // what matters is one record per request.
        let r = read_response(&mut t).await.expect("answer");
        assert_eq!(r.status, 502, "{r:?}");
    }
    drop(t);
    let records = h
        .records_until("two requests and the tunnel", |r| r.len() == 3)
        .await;
    let inner: Vec<_> = records
        .iter()
        .filter(|r| r.kind == RequestKind::Http)
        .collect();
    assert_eq!(inner.len(), 2);
    assert!(inner
        .iter()
        .all(|r| r.tls_intercepted && r.agent_id == "bot"));
    let tunnel = records
        .iter()
        .find(|r| r.kind == RequestKind::Tunnel)
        .expect("tunnel record");
    assert!(tunnel.tls_intercepted);
}
