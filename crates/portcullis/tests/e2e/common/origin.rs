//! The plain origin: a local HTTP (or TLS) server on `127.0.0.1:0` with echo, big-body,
//! SSE and WebSocket routes, counting the requests and connections it receives.

use super::server::OBody;
use super::util::{big_body, sha256_hex, BIG_LEN};
use super::ws::ws_upgrade;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Semaphore;

/// The SSE events the origin sends on `/sse`: the first immediately, the rest
/// only after [`Origin::release`].
pub const SSE_EVENTS: [&str; 3] = [
    "id: 1\nevent: message\ndata: {\"n\":1,\"text\":\"first\"}\n\n",
    "id: 2\nevent: message\ndata: {\"n\":2,\"text\":\"second\"}\n\n",
    "id: 3\nevent: done\ndata: [DONE]\n\n",
];

struct OriginState {
    requests: AtomicUsize,
    connections: AtomicUsize,
    gate: Semaphore,
}

/// A local origin on `127.0.0.1:0` (plain HTTP or TLS) with test routes:
///
/// - `/echo*` (any method): JSON `{method, uri, headers: [[name, value]...],
///   body_len, body_sha256, peer}` describing what it received.
/// - `/big/cl`, `/big/chunked`: [`big_body`] with Content-Length / chunked.
/// - `/sse`: `text/event-stream`, first event at once, the rest after [`Origin::release`].
/// - `/ws`: WebSocket handshake and a frame-level echo.
pub struct Origin {
    /// Listening address.
    pub addr: SocketAddr,
    /// PEM file of the self-signed certificate (TLS origins).
    pub cert_pem: Option<PathBuf>,
    state: Arc<OriginState>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl Origin {
    /// A plain HTTP origin.
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// A TLS origin with a self-signed certificate for `localhost` and 127.0.0.1.
    pub fn start_tls() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("origin runtime");
        let state = Arc::new(OriginState {
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let (acceptor, dir, cert_pem) = if tls {
            let (acc, dir, pem) = tls_acceptor();
            (Some(acc), Some(dir), Some(pem))
        } else {
            (None, None, None)
        };
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = {
                        let st = st.clone();
                        service_fn(move |req| route(st.clone(), peer, req))
                    };
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(tls), svc)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            cert_pem,
            state,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// The origin's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests the origin has received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// TCP connections the origin has accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Lets one gated stream (`/sse`) continue past its first event.
    pub fn release(&self) {
        self.state.gate.add_permits(1);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, tempfile::TempDir, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("self-signed cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("origin.pem");
    std::fs::write(&pem, ck.cert.pem()).expect("write pem");
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .expect("key der");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), dir, pem)
}

pub(super) fn full_body(b: impl Into<Bytes>) -> OBody {
    Full::new(b.into()).boxed()
}

async fn route(
    st: Arc<OriginState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<OBody>, Infallible> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let resp = if path.starts_with("/echo") {
        echo(peer, req).await
    } else if path == "/big/cl" {
        let mut r = Response::new(SliceBody::new(big_body(), true).boxed());
        r.headers_mut()
            .insert("content-length", BIG_LEN.to_string().parse().expect("cl"));
        r
    } else if path == "/big/chunked" {
        Response::new(SliceBody::new(big_body(), false).boxed())
    } else if path == "/sse" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let st = st.clone();
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(SSE_EVENTS[0].as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            match st.gate.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return,
            }
            for e in &SSE_EVENTS[1..] {
                if tx.send(Bytes::from_static(e.as_bytes())).await.is_err() {
                    return;
                }
            }
        });
        let mut r = Response::new(ChannelBody { rx }.boxed());
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().expect("ct"));
        r.headers_mut()
            .insert("cache-control", "no-cache".parse().expect("cc"));
        r
    } else if path == "/ws" {
        ws_upgrade(req)
    } else {
        let mut r = Response::new(full_body("no such route\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Response<OBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut r = Response::new(full_body(format!("body error: {e}\n")));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let v = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": sha256_hex(&body),
        "peer": peer.to_string(),
    });
    let mut r = Response::new(full_body(serde_json::to_vec(&v).expect("json")));
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("ct"));
    r
}

/// A body handing out `data` in 64 KiB frames; `exact` gives it a known length
/// (Content-Length), otherwise hyper sends it chunked.
struct SliceBody {
    data: Bytes,
    exact: bool,
}

impl SliceBody {
    fn new(data: Bytes, exact: bool) -> Self {
        Self { data, exact }
    }
}

impl Body for SliceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(64 * 1024);
        let chunk = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

/// A body fed by a channel; ends when the sender is dropped.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
