//! A loopback origin and raw clients (bytes in, one parsed response out).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts an origin on `127.0.0.1:0` answering `ok METHOD PATH` (after reading the body);
/// returns its port.
pub async fn origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut line = format!("ok {} {}", req.method(), req.uri().path());
                    if req.uri().path() == "/headers" {
                        let mut names: Vec<&str> =
                            req.headers().keys().map(|k| k.as_str()).collect();
                        names.sort_unstable();
                        line = names.join(",");
                    }
                    let stream = req.uri().path() == "/stream";
                    let events = req.uri().path() == "/events";
                    let _ = req.into_body().collect().await;
                    if events {
                        // Two server-sent events 50 ms apart, then nothing (never a third):
                        // a proxy that waits for more before writing never delivers the second.
                        let two = futures_util::StreamExt::then(
                            futures_util::stream::iter(["data: one\n\n", "data: two\n\n"]),
                            |event| async move {
                                if event.ends_with("two\n\n") {
                                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                }
                                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(event)))
                            },
                        );
                        let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(
                            two,
                            futures_util::stream::pending(),
                        ));
                        return Ok::<_, Infallible>(Response::new(body.boxed()));
                    }
                    if stream {
                        // One frame now, then nothing: the client decides when it ends.
                        let first = futures_util::stream::once(async move {
                            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(line)))
                        });
                        let body = http_body_util::StreamBody::new(futures_util::StreamExt::chain(
                            first,
                            futures_util::stream::pending(),
                        ));
                        return Ok::<_, Infallible>(Response::new(body.boxed()));
                    }
                    Ok(Response::new(Full::new(Bytes::from(line)).boxed()))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// First value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `bytes` on a fresh connection to `addr` and reads one response.
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_response(&mut s).await.expect("response")
}

/// Reads one response (head, then a `Content-Length` body); `None` when the peer closed first.
/// Bytes after it are lost: use [`Responses`] for several responses on one connection.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Option<Resp> {
    Responses::new(s).next().await
}

/// Responses read one after another off one connection.
pub struct Responses<'a, S> {
    s: &'a mut S,
    buf: Vec<u8>,
}

impl<'a, S: AsyncRead + Unpin> Responses<'a, S> {
    /// Reads responses from `s`.
    pub fn new(s: &'a mut S) -> Self {
        Self { s, buf: Vec::new() }
    }

    /// The next response; `None` when the peer closed first.
    pub async fn next(&mut self) -> Option<Resp> {
        let deadline = tokio::time::Instant::now() + crate::TIMEOUT;
        loop {
            if let Some((resp, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(resp);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Err(_) => panic!("no response within {:?}", crate::TIMEOUT),
            }
        }
    }
}

/// A complete response at the start of `buf` and how many bytes it took.
fn parse(buf: &[u8]) -> Option<(Resp, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = parsed.parse(buf).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = buf.get(n..n + len)?.to_vec();
    let resp = Resp {
        status: parsed.code.unwrap_or(0),
        headers,
        body,
    };
    Some((resp, n + len))
}

/// Opens a CONNECT tunnel to `authority` (with `auth`) and returns it after the 200.
pub async fn tunnel(addr: SocketAddr, authority: &str, auth: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {auth}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let r = read_response(&mut s).await.expect("CONNECT answer");
    assert_eq!(r.status, 200, "{r:?}");
    s
}

/// A TLS client session over `io` for `sni`, trusting `trusted`.
pub async fn tls<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    sni: &str,
    trusted: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<IO>> {
    let cfg = std::sync::Arc::new(crate::client_config(Some(trusted)));
    let name = portcullis_tls::rustls::pki_types::ServerName::try_from(sni.to_owned())
        .expect("server name");
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, io)
        .await
}

/// Reads until the peer closes (bounded); returns what arrived.
pub async fn until_closed<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::TIMEOUT, s.read_to_end(&mut out)).await;
    out
}
