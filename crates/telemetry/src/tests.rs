//! The exporter against a local receiver: spans and metrics arrive decoded, a full queue
//! and a dead collector drop and count, shutdown flushes.

use super::*;
use crate::testing::{attr, Receiver};
use portcullis_core::{RequestKind, TraceContext, Usage, Verdict};

fn settings(endpoint: String, queue_size: usize) -> TelemetrySettings {
    TelemetrySettings {
        endpoint,
        service_name: "gw-test".into(),
        resource_attributes: [("deployment.environment".to_owned(), "test".to_owned())]
            .into_iter()
            .collect(),
        queue_size,
        batch_size: queue_size.min(64),
        export_interval: Duration::from_secs(600),
        export_timeout: Duration::from_secs(5),
    }
}

fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("rec{i}"),
        1_700_000_000_000,
        "acme",
        "bot",
        RequestKind::Http,
        Verdict::Allow,
    );
    r.method = Some("POST".into());
    r.provider = Some("openai".into());
    r.api = Some("chat.completions".into());
    r.model = Some("gpt-4o".into());
    r.status = Some(200);
    r.latency_ms = 10;
    r.usage = Some(Usage::provider(100 + i, 7, 0, 0));
    r.trace = Some(TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: format!("{:016x}", i + 1),
        parent_span_id: None,
    });
    r
}

/// A port nothing listens on (bound, then closed).
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[tokio::test]
async fn spans_and_metrics_reach_the_collector_on_shutdown() {
    let rx = Receiver::start().await.unwrap();
    let m = TelemetryMetrics::unregistered().unwrap();
    let (t, task) = Telemetry::start(settings(rx.endpoint(), 128), m.clone()).unwrap();
    for i in 0..3 {
        t.record(&record(i));
    }
    t.shutdown(Duration::from_secs(10)).await;
    let spans = rx.spans();
    assert_eq!(spans.len(), 3);
    let mut inputs: Vec<String> = spans
        .iter()
        .map(|s| attr(s, "gen_ai.usage.input_tokens").unwrap())
        .collect();
    inputs.sort();
    assert_eq!(inputs, ["100", "101", "102"]);
    let res = &rx.resources()[0];
    let keys: Vec<(&str, String)> = res
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value)))
        .collect();
    assert!(keys
        .iter()
        .any(|(k, v)| *k == "service.name" && v.contains("gw-test")));
    assert!(keys.iter().any(|(k, _)| *k == "deployment.environment"));
    let names: Vec<String> = rx.metrics().iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        names,
        [
            "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration"
        ]
    );
    assert_eq!(m.exported_total("traces"), 3);
    assert_eq!(m.dropped_total("traces"), 0);
    assert_eq!(rx.bad_requests(), 0);
    drop(t);
    task.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let m = TelemetryMetrics::unregistered().unwrap();
    let (t, _task) = Telemetry::start(settings(dead_endpoint(), 4), m.clone()).unwrap();
    // The export task has not run yet (single-threaded runtime, no await): the queue holds 4.
    for i in 0..10 {
        t.record(&record(i));
    }
    assert_eq!(m.dropped_total("traces"), 6);
}

#[tokio::test]
async fn a_dead_collector_costs_dropped_spans() {
    let m = TelemetryMetrics::unregistered().unwrap();
    let (t, _task) = Telemetry::start(settings(dead_endpoint(), 16), m.clone()).unwrap();
    for i in 0..5 {
        t.record(&record(i));
    }
    t.shutdown(Duration::from_secs(10)).await;
    assert_eq!(m.dropped_total("traces"), 5);
    assert_eq!(m.exported_total("traces"), 0);
    // Metrics are counted dropped too (two series of tokens, one of duration).
    assert_eq!(m.dropped_total("metrics"), 3);
}

#[tokio::test]
async fn a_collector_refusing_the_export_is_a_drop_not_an_error() {
    // The receiver answers 400 to an unknown path: a base path that is not a collector.
    let rx = Receiver::start().await.unwrap();
    let m = TelemetryMetrics::unregistered().unwrap();
    let (t, _task) =
        Telemetry::start(settings(format!("{}/nope", rx.endpoint()), 16), m.clone()).unwrap();
    t.record(&record(1));
    t.shutdown(Duration::from_secs(10)).await;
    assert_eq!(m.dropped_total("traces"), 1);
    assert_eq!(
        rx.bad_requests(),
        2,
        "one trace and one metrics export, no retry of a 400"
    );
}
