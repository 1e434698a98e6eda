//! OpenTelemetry (issue 18) through the real gateway and a local OTLP/HTTP collector: GenAI
//! spans for JSON and streaming chat calls inside an intercepted tunnel with the audit
//! record's exact token counts, the client's `traceparent` continued, `propagate` on and off
//! as the origin sees it, the GenAI metrics, and a dead collector that changes nothing for
//! the client while the dropped counter rises.

use crate::common::otlp::{
    dead_endpoint, histogram_points, kv, span_attr, Collector, Metric, Span,
};
use crate::common::tls_origin::TlsOrigin;
use crate::common::*;
use serde_json::Value;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("traceparent: 00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// A gateway intercepting `localhost` (the TLS origin, also an OpenAI-compatible provider)
/// with `[telemetry]` lines.
fn gateway(origin: &TlsOrigin, telemetry: &str) -> Gateway {
    let port = origin.port();
    Gateway::start(
        &format!("allowed_ports = [{port}]\nallow_private = [\"127.0.0.1/32\"]\n"),
        &format!(
            "\n[tls]\nintercept = [\"localhost\"]\nupstream_ca = [{:?}]\n\n\
             [[llm.providers]]\nname = \"local\"\nhost = \"localhost:{port}\"\n\n\
             [telemetry]\n{telemetry}\n",
            origin.ca_pem.display().to_string()
        ),
    )
}

fn telemetry_to(endpoint: &str, propagate: bool) -> String {
    format!("otlp_endpoint = \"{endpoint}\"\nexport_interval = \"100ms\"\npropagate = {propagate}\nservice_name = \"gw-e2e\"\n")
}

fn ca(gw: &Gateway) -> String {
    gw.dir().join("data/ca/ca.pem").display().to_string()
}

/// curl through the gateway, trusting its CA; stdout (curl must succeed).
fn curl_ok(gw: &Gateway, args: &[&str]) -> Vec<u8> {
    let (proxy, ca) = (gw.proxy_url(), ca(gw));
    let mut all = vec!["-x", proxy.as_str(), "--cacert", ca.as_str()];
    all.extend_from_slice(args);
    let out = curl(&all);
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn chat(gw: &Gateway, origin: &TlsOrigin, stream: bool, extra: &[&str]) -> Vec<u8> {
    let body = if stream {
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#
    };
    let url = origin.url("/v1/chat/completions");
    let mut args = vec!["-H", "content-type: application/json", "-d", body];
    for e in extra {
        args.extend_from_slice(&["-H", e]);
    }
    args.push(&url);
    curl_ok(gw, &args)
}

/// The HTTP records (not the tunnels) once `n` of them are written.
fn http_records(gw: &Gateway, n: usize) -> Vec<Value> {
    gw.audit_until(&format!("{n} http records"), |rs| {
        rs.iter().filter(|r| r["kind"] == "http").count() >= n
    })
    .into_iter()
    .filter(|r| r["kind"] == "http")
    .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The span whose id is the record's `trace.span_id`.
fn span_of<'a>(spans: &'a [Span], record: &Value) -> &'a Span {
    let id = record["trace"]["span_id"].as_str().expect("record trace");
    spans
        .iter()
        .find(|s| hex(&s.span_id) == id)
        .unwrap_or_else(|| panic!("no span {id} for {record}"))
}

fn has_span(spans: &[Span], record: &Value) -> bool {
    let id = record["trace"]["span_id"].as_str().unwrap_or("-");
    spans.iter().any(|s| hex(&s.span_id) == id)
}

/// The GenAI attributes equal the audit record's fields, tokens exactly.
fn assert_genai_span(span: &Span, r: &Value) {
    let a = |k: &str| span_attr(span, k);
    let num = |k: &str| r["usage"][k].as_u64().map(|n| n.to_string());
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.kind, 3, "CLIENT");
    assert_eq!(a("gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(a("gen_ai.provider.name").as_deref(), Some("local"));
    assert_eq!(a("gen_ai.request.model").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(a("gen_ai.usage.input_tokens"), num("input_tokens"));
    assert_eq!(a("gen_ai.usage.output_tokens"), num("output_tokens"));
    assert_eq!(
        a("gen_ai.usage.cache_read.input_tokens"),
        num("cached_input_tokens")
    );
    assert_eq!(a("server.address").as_deref(), Some("localhost"));
    assert_eq!(a("server.port"), r["port"].as_u64().map(|p| p.to_string()));
    assert_eq!(a("http.request.method").as_deref(), Some("POST"));
    assert_eq!(a("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(a("portcullis.verdict").as_deref(), Some("allow"));
    assert_eq!(
        a("portcullis.agent"),
        r["agent_id"].as_str().map(str::to_owned)
    );
    assert_eq!(
        a("portcullis.record_id"),
        r["id"].as_str().map(str::to_owned)
    );
    assert_eq!(a("portcullis.rate_limit").as_deref(), Some("passed"));
    assert_eq!(a("error.type"), None);
    assert_eq!(
        hex(&span.trace_id),
        r["trace"]["trace_id"].as_str().unwrap()
    );
    // The record's timing, in nanoseconds.
    let latency = r["latency_ms"].as_u64().unwrap();
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        latency * 1_000_000
    );
}

#[test]
fn genai_spans_for_json_and_streaming_calls_carry_the_records_token_counts() {
    let collector = Collector::start();
    let origin = TlsOrigin::start();
    let gw = gateway(&origin, &telemetry_to(&collector.endpoint(), false));
    // The banner's telemetry line (read from stdout by another thread: bounded wait).
    wait_until("the banner names the collector", || {
        gw.stdout_lines()
            .iter()
            .any(|l| l.starts_with("telemetry: otlp=") && l.contains(&collector.endpoint()))
    });
    let json: Value = serde_json::from_slice(&chat(&gw, &origin, false, &[&client_traceparent()]))
        .expect("chat json");
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Hello from origin"
    );
    let sse = String::from_utf8(chat(&gw, &origin, true, &[])).expect("sse");
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");

    let records = http_records(&gw, 2);
    let spans = collector.spans_until("both calls exported", |s| {
        records.iter().all(|r| has_span(s, r))
    });
    let (json_rec, sse_rec) = (&records[0], &records[1]);
    assert_eq!(json_rec["stream"], false);
    assert_eq!(sse_rec["stream"], true);
    // Exact counts as the origin reported them, equal to the records'.
    assert_eq!(json_rec["usage"]["input_tokens"], 3);
    assert_eq!(sse_rec["usage"]["input_tokens"], 11);
    assert_eq!(sse_rec["usage"]["output_tokens"], 5);
    assert_eq!(sse_rec["usage"]["cached_input_tokens"], 4);
    for r in &records {
        assert_genai_span(span_of(&spans, r), r);
    }

    // The client's trace is continued: same trace id, the client's span as parent.
    assert_eq!(json_rec["trace"]["trace_id"], CLIENT_TRACE);
    assert_eq!(json_rec["trace"]["parent_span_id"], CLIENT_SPAN);
    let js = span_of(&spans, json_rec);
    assert_eq!(hex(&js.parent_span_id), CLIENT_SPAN);
    assert_ne!(hex(&js.span_id), CLIENT_SPAN);
    // Without one, a new trace and no parent.
    assert_ne!(sse_rec["trace"]["trace_id"], CLIENT_TRACE);
    assert_eq!(sse_rec["trace"]["parent_span_id"], Value::Null);
    assert!(span_of(&spans, sse_rec).parent_span_id.is_empty());

    // The tunnel is a plain CONNECT span, not a GenAI one.
    let tunnels = gw.audit_until("tunnel records", |rs| {
        rs.iter().filter(|r| r["kind"] == "tunnel").count() >= 2
    });
    let t = tunnels.iter().find(|r| r["kind"] == "tunnel").unwrap();
    let spans = collector.spans_until("tunnel span", |s| has_span(s, t));
    let ts = span_of(&spans, t);
    assert_eq!(ts.name, "CONNECT");
    assert_eq!(span_attr(ts, "gen_ai.operation.name"), None);

    // GenAI metrics: both calls' input tokens (3 + 11) and output tokens (3 + 5).
    let metrics = collector.metrics_until("token usage of both calls", |ms| {
        token_sum(ms, "input") == Some(14.0) && token_sum(ms, "output") == Some(8.0)
    });
    let duration = metrics
        .iter()
        .rev()
        .find(|m| m.name == "gen_ai.client.operation.duration")
        .expect("duration metric");
    assert_eq!(duration.unit, "s");
    let p = &histogram_points(duration)[0];
    assert_eq!(p.count, 2);
    assert_eq!(
        kv(&p.attributes, "gen_ai.provider.name").as_deref(),
        Some("local")
    );
    assert_eq!(collector.bad_requests(), 0);
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_telemetry_dropped_total",
            &[("signal", "traces")]
        ),
        0.0
    );
}

/// The latest export's `gen_ai.client.token.usage` sum for `token_type`.
fn token_sum(metrics: &[Metric], token_type: &str) -> Option<f64> {
    let m = metrics
        .iter()
        .rev()
        .find(|m| m.name == "gen_ai.client.token.usage")?;
    histogram_points(m)
        .iter()
        .find(|p| kv(&p.attributes, "gen_ai.token.type").as_deref() == Some(token_type))
        .and_then(|p| p.sum)
}

/// What the origin's echo saw: `(name, value)` pairs in order.
fn echo_headers(body: &[u8]) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(body).expect("echo json");
    v["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap_or_default().to_owned(),
                h[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn traceparents(h: &[(String, String)]) -> Vec<String> {
    h.iter()
        .filter(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn propagate_sends_the_gateway_span_upstream_inside_the_tunnel() {
    let collector = Collector::start();
    let origin = TlsOrigin::start();
    let gw = gateway(&origin, &telemetry_to(&collector.endpoint(), true));
    let url = origin.url("/echo/p");
    let with = echo_headers(&curl_ok(&gw, &["-H", &client_traceparent(), &url]));
    let without = echo_headers(&curl_ok(&gw, &[&url]));
    let records = http_records(&gw, 2);
    let (r1, r2) = (&records[0], &records[1]);
    // Continued: the client's trace, the gateway's span as the upstream parent.
    let span1 = r1["trace"]["span_id"].as_str().unwrap();
    assert_eq!(
        traceparents(&with),
        [format!("00-{CLIENT_TRACE}-{span1}-01")]
    );
    assert_eq!(r1["trace"]["parent_span_id"], CLIENT_SPAN);
    // A new trace: still sent, naming the gateway's span.
    let (trace2, span2) = (
        r2["trace"]["trace_id"].as_str().unwrap(),
        r2["trace"]["span_id"].as_str().unwrap(),
    );
    assert_eq!(traceparents(&without), [format!("00-{trace2}-{span2}-01")]);
    // A malformed traceparent is replaced by a new trace's.
    let bad = echo_headers(&curl_ok(
        &gw,
        &["-H", "traceparent: 00-XYZ-00f067aa0ba902b7-01", &url],
    ));
    let r3 = &http_records(&gw, 3)[2];
    assert_eq!(r3["trace"]["parent_span_id"], Value::Null);
    assert_eq!(
        traceparents(&bad),
        [format!(
            "00-{}-{}-01",
            r3["trace"]["trace_id"].as_str().unwrap(),
            r3["trace"]["span_id"].as_str().unwrap()
        )]
    );
    // The plain request is a plain HTTP client span.
    let spans = collector.spans_until("the echo spans", |s| has_span(s, r1));
    let s = span_of(&spans, r1);
    assert_eq!(s.name, "GET");
    assert_eq!(
        span_attr(s, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(span_attr(s, "gen_ai.operation.name"), None);
}

#[test]
fn without_propagate_the_upstream_request_is_exactly_as_with_telemetry_off() {
    let collector = Collector::start();
    let origin = TlsOrigin::start();
    let on = gateway(&origin, &telemetry_to(&collector.endpoint(), false));
    let off = gateway(&origin, "");
    let url = origin.url("/echo/same");
    let args = ["-H", &client_traceparent(), "-H", "x-probe: 1", &url];
    let seen_on = echo_headers(&curl_ok(&on, &args));
    let seen_off = echo_headers(&curl_ok(&off, &args));
    assert_eq!(seen_on, seen_off);
    assert_eq!(
        traceparents(&seen_on),
        [format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")]
    );
    let plain = echo_headers(&curl_ok(&on, &[&url]));
    assert!(traceparents(&plain).is_empty(), "{plain:?}");
    // Telemetry off: records carry no trace.
    let r = &http_records(&off, 1)[0];
    assert_eq!(r["trace"], Value::Null);
    assert!(http_records(&on, 2).iter().all(|r| r["trace"].is_object()));
}

#[test]
fn a_dead_collector_leaves_traffic_untouched_and_counts_dropped_spans() {
    let origin = TlsOrigin::start();
    let gw = gateway(&origin, &telemetry_to(&dead_endpoint(), false));
    let url = origin.url("/big");
    for _ in 0..3 {
        let out = curl(&[
            "-x",
            &gw.proxy_url(),
            "--cacert",
            &ca(&gw),
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, code) = out.stdout.split_at(out.stdout.len() - 4);
        assert_eq!(code, b"\n200");
        assert_eq!(body.len(), BIG_LEN);
        assert_eq!(sha256_hex(body), sha256_hex(&big_body()));
    }
    let json: Value = serde_json::from_slice(&chat(&gw, &origin, false, &[])).expect("chat json");
    assert_eq!(json["usage"]["prompt_tokens"], 3);
    // Three downloads, one chat, and their tunnels: every span dropped and counted.
    let m = gw.metrics_until("spans dropped", |m| {
        m.value(
            "portcullis_telemetry_dropped_total",
            &[("signal", "traces"), ("reason", "export_failed")],
        ) >= 4.0
    });
    assert_eq!(
        m.value(
            "portcullis_telemetry_exported_total",
            &[("signal", "traces")]
        ),
        0.0
    );
}
