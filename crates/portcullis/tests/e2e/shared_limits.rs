//! Shared limits (issue 14): three gateway processes sharing one store and one Redis enforce
//! one `rpm` and one `tpm` budget between them, a replica killed with SIGKILL gives its
//! concurrency slots back within the lease time, and a Redis outage applies
//! `limits.on_redis_error` (local, deny, allow) visibly, until Redis is back.

use crate::common::*;
use crate::limits::LlmOrigin;
use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// `[limits]` on a Redis with a prefix of this test's own, plus `extra` lines.
fn redis_limits(url: &str, test: &str, extra: &str) -> String {
    format!(
        "[limits]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{}\"\n{extra}\n",
        unique_redis_prefix(test)
    )
}

fn get_echo(gw: &Gateway, origin: &Origin) -> RawResponse {
    proxy_send(
        gw.proxy,
        "GET",
        &origin.url("/echo"),
        Some(&Fleet::bot_auth()),
        &[],
    )
}

#[test]
fn three_replicas_admit_exactly_rpm_between_them() {
    let origin = Origin::start();
    let fleet = Fleet::start(
        3,
        FleetOpts {
            ports: vec![origin.addr.port()],
            rest: redis_limits(&test_redis_url(), "rpm", "rpm = 30"),
            ..FleetOpts::default()
        },
    );
    for gw in &fleet.gateways {
        assert!(gw.banner.contains("limits=redis(redis://"), "{}", gw.banner);
    }
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for gw in &fleet.gateways {
            let (admitted, refused, origin) = (admitted.clone(), refused.clone(), &origin);
            s.spawn(move || {
                for _ in 0..40 {
                    let r = get_echo(gw, origin);
                    match r.status {
                        200 => {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        429 => {
                            let v = r.assert_error(429, "rate_limited");
                            assert_eq!(v["limit"], "rpm");
                            assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("unexpected {other}: {r:?}"),
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let admitted = admitted.load(Ordering::SeqCst);
    // GCRA: a burst of 30, then one every 2 s; the hammering normally ends well inside 2 s.
    let refill = elapsed.as_secs() / 2;
    assert!(
        (30..=30 + refill).contains(&admitted),
        "{admitted} admitted across the replicas in {elapsed:?}"
    );
    assert_eq!(admitted + refused.load(Ordering::SeqCst), 120);
    // Each replica counted its own refusals; together they are every refusal.
    let counted: f64 = fleet
        .gateways
        .iter()
        .map(|g| {
            g.metrics().value(
                "portcullis_rate_limited_total",
                &[("agent", "bot"), ("limit", "rpm")],
            )
        })
        .sum();
    assert_eq!(counted as u64, refused.load(Ordering::SeqCst));
}

/// One streaming chat completion through `gw` (max_tokens 150): status and the usage the
/// provider reported (0 when refused).
fn stream_chat(gw: &Gateway, origin: &LlmOrigin) -> (u16, u64) {
    let body = r#"{"model":"m","max_tokens":150,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", origin.port());
    let mut req = format!(
        "POST {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nProxy-Authorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        origin.port(),
        Fleet::bot_auth(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    let r = send_raw(gw.proxy, &req);
    if r.status != 200 {
        return (r.status, 0);
    }
    let text = String::from_utf8_lossy(&r.body);
    let usage = text
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v["usage"]["total_tokens"].as_u64())
        .unwrap_or(0);
    (200, usage)
}

#[test]
fn thirty_streams_over_three_replicas_never_overshoot_the_token_budget() {
    const TPM: u64 = 2_000;
    let origin = LlmOrigin::start();
    let port = origin.port();
    let fleet = Fleet::start(
        3,
        FleetOpts {
            ports: vec![port],
            rest: format!(
                "[[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{port}\"\n\n{}",
                redis_limits(&test_redis_url(), "tpm", &format!("tpm = {TPM}"))
            ),
            ..FleetOpts::default()
        },
    );
    let results: Vec<(u16, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let (gw, origin) = (&fleet.gateways[i % 3], &origin);
                s.spawn(move || stream_chat(gw, origin))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stream thread"))
            .collect()
    });
    let ok: Vec<u64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let refused = results.iter().filter(|r| r.0 == 429).count();
    assert_eq!(ok.len() + refused, 30, "{results:?}");
    assert!(!ok.is_empty() && refused > 0, "{results:?}");
    assert!(ok.iter().all(|&u| u == 175), "usage reported: {ok:?}");
    let recorded: u64 = ok.iter().sum();
    assert!(recorded <= TPM, "{recorded} tokens recorded > tpm {TPM}");
}

/// Opens `/sse` through `gw` and returns once its first event arrived: the request is in
/// flight (holding a concurrency slot) until the connection closes.
fn open_stream(gw: &Gateway, origin: &Origin) -> std::net::TcpStream {
    let mut s = connect(gw.proxy);
    s.write_all(&proxy_request(
        "GET",
        &origin.url("/sse"),
        Some(&Fleet::bot_auth()),
        &[],
    ))
    .expect("write");
    let mut seen = Vec::new();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let n = r.read(&mut byte).expect("read stream");
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    s
}

#[test]
fn a_killed_replica_gives_its_slots_back_within_the_lease() {
    let origin = Origin::start();
    let mut fleet = Fleet::start(
        2,
        FleetOpts {
            ports: vec![origin.addr.port()],
            rest: redis_limits(
                &test_redis_url(),
                "lease",
                "max_concurrent = 2\nredis_lease = \"2s\"",
            ),
            ..FleetOpts::default()
        },
    );
    let a = &fleet.gateways[0];
    let _s1 = open_stream(a, &origin);
    let _s2 = open_stream(a, &origin);
    let b = &fleet.gateways[1];
    let r = get_echo(b, &origin);
    let v = r.assert_error(429, "rate_limited");
    assert_eq!(
        v["limit"], "concurrent",
        "A's two streams hold the shared slots"
    );

    sigkill(a);
    // A renewed its leases until it died; they expire within 2 s and B admits again.
    let ok = b.eventually(
        "the dead replica's slots come back",
        || get_echo(b, &origin).status,
        |s| *s == 200,
    );
    assert_eq!(ok, 200);
    fleet.gateways.remove(0);
}

/// A replica on a Redis of the test's own with `on_redis_error = mode` and rpm = 2.
fn outage_gateway(redis: &RedisServer, origin: &Origin, mode: &str) -> Fleet {
    Fleet::start(
        1,
        FleetOpts {
            ports: vec![origin.addr.port()],
            rest: redis_limits(
                &redis.url,
                "outage",
                &format!("rpm = 2\non_redis_error = \"{mode}\"\nredis_timeout = \"200ms\""),
            ),
            ..FleetOpts::default()
        },
    )
}

fn limits_ready(gw: &Gateway) -> serde_json::Value {
    let r = gw.admin_get("/readyz");
    assert_eq!(
        r.status, 200,
        "a degraded limits backend keeps the replica ready"
    );
    r.json()["components"]["limits"].clone()
}

fn degraded_gauge(gw: &Gateway) -> f64 {
    gw.metrics()
        .value("portcullis_limits_backend_degraded", &[])
}

/// Stops Redis under a running replica, checks what `mode` does, starts Redis again and
/// checks the recovery.
fn outage(mode: &str, while_down: impl Fn(&Gateway, &Origin)) {
    let origin = Origin::start();
    let mut redis = RedisServer::start();
    let fleet = outage_gateway(&redis, &origin, mode);
    let gw = &fleet.gateways[0];
    assert_eq!(get_echo(gw, &origin).status, 200);
    assert_eq!(limits_ready(gw)["detail"]["state"], "ok");
    assert_eq!(degraded_gauge(gw), 0.0);

    redis.stop();
    while_down(gw, &origin);
    let detail = limits_ready(gw)["detail"].clone();
    assert_eq!(detail["backend"], "redis");
    assert_eq!(detail["state"], "degraded", "{detail}");
    let reason = detail["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("on_redis_error = {mode}")),
        "{reason}"
    );
    assert_eq!(degraded_gauge(gw), 1.0);
    assert!(
        gw.metrics()
            .value("portcullis_limits_backend_errors_total", &[])
            >= 1.0
    );
    let warned = |g: &Gateway| g.stderr().matches("limits backend unavailable").count();
    assert_eq!(warned(gw), 1, "one log line per outage");

    redis.resume();
    gw.eventually(
        "the replica reconnects to Redis",
        || limits_ready(gw)["detail"]["state"].clone(),
        |s| s == "ok",
    );
    assert_eq!(degraded_gauge(gw), 0.0);
    assert_eq!(
        gw.stderr()
            .matches("limits backend reachable again")
            .count(),
        1
    );
    // Shared limits again: Redis restarted empty, so a fresh burst of 2.
    let r = get_echo(gw, &origin);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(warned(gw), 1);
}

#[test]
fn redis_down_with_local_falls_back_to_per_replica_limits() {
    outage("local", |gw, origin| {
        // This replica's own limiter: a fresh burst of 2, then refusals.
        for _ in 0..2 {
            let r = get_echo(gw, origin);
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
        }
        let r = get_echo(gw, origin);
        let v = r.assert_error(429, "rate_limited");
        assert_eq!(v["limit"], "rpm");
    });
}

#[test]
fn redis_down_with_deny_refuses_with_503() {
    outage("deny", |gw, origin| {
        for _ in 0..3 {
            let r = get_echo(gw, origin);
            let v = r.assert_error(503, "limits_unavailable");
            assert_eq!(r.header("retry-after"), Some("1"));
            let detail = v["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("on_redis_error = deny"), "{detail}");
        }
    });
}

#[test]
fn redis_down_with_allow_admits_without_limits() {
    outage("allow", |gw, origin| {
        for _ in 0..5 {
            let r = get_echo(gw, origin);
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("x-ratelimit-limit"), None, "no limit applied");
        }
    });
}

#[test]
fn the_policy_input_sees_the_shared_request_count() {
    let origin = Origin::start();
    // Denies once the agent made 3 requests in the last minute, on any replica.
    let policy = "package portcullis.policy.budget\nimport rego.v1\n\nallow := true\n\n\
                  deny contains \"too many requests this minute\" if input.usage.requests_last_minute >= 3\n";
    let fleet = Fleet::start(
        3,
        FleetOpts {
            ports: vec![origin.addr.port()],
            rest: redis_limits(&test_redis_url(), "usage", ""),
            files: vec![(
                "policies/budget.rego".to_owned(),
                policy.as_bytes().to_vec(),
            )],
            ..FleetOpts::default()
        },
    );
    for gw in &fleet.gateways {
        assert_eq!(get_echo(gw, &origin).status, 200);
    }
    for gw in &fleet.gateways {
        let r = get_echo(gw, &origin);
        let v = r.assert_error(403, "policy_denied");
        assert_eq!(v["detail"], "too many requests this minute");
    }
}
