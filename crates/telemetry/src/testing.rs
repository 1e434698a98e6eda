//! A local OTLP/HTTP receiver for tests and benches: decodes what the exporter posts.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub use opentelemetry_proto::tonic::metrics::v1::Metric;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// What the receiver got.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    resources: Vec<Resource>,
    metrics: Vec<Metric>,
    bad_requests: usize,
}

/// A receiver bound to `127.0.0.1:0`, serving until dropped.
pub struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Binds and serves (answers `200` to well-formed exports, `400` otherwise).
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let got = Arc::new(Mutex::new(Received::default()));
        let state = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, got, task })
    }

    /// The base URL to configure as `otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.got.lock().map(|g| g.spans.clone()).unwrap_or_default()
    }

    /// Resources of the trace exports received so far.
    pub fn resources(&self) -> Vec<Resource> {
        self.got
            .lock()
            .map(|g| g.resources.clone())
            .unwrap_or_default()
    }

    /// Metrics received so far (every export's, in order).
    pub fn metrics(&self) -> Vec<Metric> {
        self.got
            .lock()
            .map(|g| g.metrics.clone())
            .unwrap_or_default()
    }

    /// Requests that were not decodable OTLP.
    pub fn bad_requests(&self) -> usize {
        self.got.lock().map(|g| g.bad_requests).unwrap_or_default()
    }

    /// Waits (polling, at most `within`) until `pred` holds for the spans received.
    pub async fn wait_spans(&self, within: Duration, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if pred(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (polling, at most `within`) until `pred` holds for the metrics received.
    pub async fn wait_metrics(
        &self,
        within: Duration,
        pred: impl Fn(&[Metric]) -> bool,
    ) -> Vec<Metric> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = self.metrics();
            if pred(&m) || tokio::time::Instant::now() >= deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<Mutex<Received>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let ok = match path.as_str() {
        "/v1/traces" => ExportTraceServiceRequest::decode(body).ok().map(|r| {
            if let Ok(mut g) = state.lock() {
                for rs in r.resource_spans {
                    if let Some(res) = rs.resource {
                        g.resources.push(res);
                    }
                    for ss in rs.scope_spans {
                        g.spans.extend(ss.spans);
                    }
                }
            }
        }),
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body).ok().map(|r| {
            if let Ok(mut g) = state.lock() {
                for rm in r.resource_metrics {
                    for sm in rm.scope_metrics {
                        g.metrics.extend(sm.metrics);
                    }
                }
            }
        }),
        _ => None,
    };
    let status = if ok.is_some() {
        StatusCode::OK
    } else {
        if let Ok(mut g) = state.lock() {
            g.bad_requests += 1;
        }
        StatusCode::BAD_REQUEST
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    Ok(resp)
}

/// The histogram data points of `metric` (empty for another kind).
pub fn histogram_points(
    metric: &Metric,
) -> &[opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint] {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match &metric.data {
        Some(Data::Histogram(h)) => &h.data_points,
        _ => &[],
    }
}

/// An attribute's value as text in `attrs` (`None` when absent).
pub fn kv(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            Value::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

/// A span attribute's value as text (`None` when absent).
pub fn attr(span: &Span, key: &str) -> Option<String> {
    kv(&span.attributes, key)
}
