//! A local OTLP/HTTP collector for the telemetry tests: the telemetry crate's receiver on
//! its own runtime, queried synchronously (every wait bounded by [`TIMEOUT`]).

use super::util::TIMEOUT;
use portcullis_telemetry::testing::Receiver;

pub use portcullis_telemetry::testing::{attr as span_attr, histogram_points, kv, Metric, Span};

/// A collector on `127.0.0.1:0`, stopped when dropped.
pub struct Collector {
    rx: Receiver,
    rt: Option<tokio::runtime::Runtime>,
}

impl Collector {
    /// Binds and serves.
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("collector runtime");
        let rx = rt.block_on(Receiver::start()).expect("bind collector");
        Self { rx, rt: Some(rt) }
    }

    /// The `telemetry.otlp_endpoint` value.
    pub fn endpoint(&self) -> String {
        self.rx.endpoint()
    }

    /// The spans received once `pred` holds for them (panics after [`TIMEOUT`]).
    pub fn spans_until(&self, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let rt = self.rt.as_ref().expect("runtime");
        let spans = rt.block_on(self.rx.wait_spans(TIMEOUT, &pred));
        assert!(pred(&spans), "spans never satisfied {what}: {spans:#?}");
        spans
    }

    /// The metrics received once `pred` holds for them (panics after [`TIMEOUT`]).
    pub fn metrics_until(&self, what: &str, pred: impl Fn(&[Metric]) -> bool) -> Vec<Metric> {
        let rt = self.rt.as_ref().expect("runtime");
        let m = rt.block_on(self.rx.wait_metrics(TIMEOUT, &pred));
        assert!(pred(&m), "metrics never satisfied {what}: {m:#?}");
        m
    }

    /// Exports that were not decodable OTLP.
    pub fn bad_requests(&self) -> usize {
        self.rx.bad_requests()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// An `http://` endpoint nothing listens on (a port bound, then closed).
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}
