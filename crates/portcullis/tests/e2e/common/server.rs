//! A small HTTP/1.1 test server: one worker thread, `127.0.0.1:0`, optionally TLS, counting
//! requests, stopped when dropped. The origins of the end-to-end tests are handlers on it.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A response body of a test origin.
pub type OBody = BoxBody<Bytes, Infallible>;

/// What answers each request.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<OBody>> + Send>>
        + Send
        + Sync,
>;

/// A running test server.
pub struct TestServer {
    /// Listening address.
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Serves `handler`, over TLS when `acceptor` is given.
    pub fn start(acceptor: Option<tokio_rustls::TlsAcceptor>, handler: Handler) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind test server");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, n, handler) = (acceptor.clone(), n.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        n.fetch_add(1, Ordering::SeqCst);
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            rt: Some(rt),
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
