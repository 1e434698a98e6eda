//! Budget alerts (issue 18) through the real gateway: LLM calls against a small
//! `tokens_per_day` fire each threshold exactly once to a local webhook receiver that checks
//! the HMAC signature; a failing webhook is retried and a hanging one never holds traffic;
//! two replicas sharing Redis fire once between them; each alert is in the audit trail; a
//! tenant's dollar budget fires in dollars.

use crate::common::server::{OBody, TestServer};
use crate::common::*;
use crate::limits::LlmOrigin;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

const SECRET: &str = "alert-signing-secret-0123456789";
const BUDGET: u64 = 1000;

/// HMAC-SHA256 as RFC 2104 defines it, written here so the test does not trust the code it
/// checks.
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    /// 500 to the first request, then 204.
    FailFirst,
    Hang,
}

/// A webhook receiver on 127.0.0.1:0: keeps every POST whose signature is valid (and counts
/// the others), answers as `mode` says.
struct Receiver {
    server: TestServer,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    bad_signatures: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start(mode: Mode) -> Self {
        Self::serve(mode, None)
    }

    /// An HTTPS receiver for `localhost` whose leaf a fresh test CA issued; the CA's PEM is
    /// written to `ca_dir`.
    fn start_tls(mode: Mode, ca_dir: &std::path::Path) -> (Self, std::path::PathBuf) {
        use portcullis_ca::{mint_leaf, server_config_for, CertificateAuthority};
        let ca = CertificateAuthority::generate("Alerts Test CA").expect("CA");
        let paths = ca.write(ca_dir).expect("write CA");
        let leaf = mint_leaf(&ca, "localhost").expect("leaf");
        let cfg = server_config_for(leaf, &[b"http/1.1".to_vec()]).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        (Self::serve(mode, Some(acceptor)), paths.cert)
    }

    fn serve(mode: Mode, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(0));
        let (g, b) = (got.clone(), bad.clone());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = TestServer::start(
            acceptor,
            Arc::new(move |req: Request<Incoming>| {
                let (g, b) = (g.clone(), b.clone());
                let nth = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    let sig = req
                        .headers()
                        .get("x-portcullis-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let want = format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), &body));
                    match serde_json::from_slice(&body) {
                        Ok(v) if sig.as_deref() == Some(want.as_str()) => {
                            g.lock().expect("lock").push(v)
                        }
                        _ => *b.lock().expect("lock") += 1,
                    }
                    let status = match mode {
                        Mode::Ok => 204,
                        Mode::Fail => 500,
                        Mode::FailFirst if nth == 0 => 500,
                        Mode::FailFirst => 204,
                        Mode::Hang => std::future::pending::<u16>().await,
                    };
                    let mut r: Response<OBody> = Response::new(Full::new(Bytes::new()).boxed());
                    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    r
                })
            }),
        );
        Self {
            server,
            got,
            bad_signatures: bad,
        }
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        self.got.lock().expect("lock").clone()
    }

    fn thresholds(&self) -> Vec<f64> {
        self.alerts()
            .iter()
            .filter_map(|a| a["threshold"].as_f64())
            .collect()
    }
}

/// `[alerts]` with one JSON webhook to `hook` signed with [`SECRET`] (from a file), plus
/// `extra` lines in the webhook.
fn alerts_section(hook: &Receiver, extra: &str) -> String {
    format!(
        "[alerts]\nthresholds = [1.0, 0.5, 0.8]\n\n[[alerts.webhooks]]\nname = \"ops\"\n\
         url = \"http://127.0.0.1:{}/hooks/portcullis\"\nformat = \"json\"\n\
         secret_file = \"{{DIR}}/alert.key\"\n{extra}\n",
        hook.server.port()
    )
}

fn fleet(n: usize, origin: &LlmOrigin, limits: &str, alerts: &str) -> Fleet {
    let port = origin.port();
    Fleet::start(
        n,
        FleetOpts {
            ports: vec![port],
            rest: format!(
                "[[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{port}\"\n\n\
                 [limits]\ntokens_per_day = {BUDGET}\n{limits}\n\n{alerts}"
            ),
            files: vec![("alert.key".to_owned(), format!("{SECRET}\n").into_bytes())],
            ..FleetOpts::default()
        },
    )
}

/// One chat completion of agent `bot` through `gw` that the origin bills `25 + max_tokens`
/// tokens; the gateway reserves less than that (the body is short), so a budget can be used
/// up to the last token.
fn chat(gw: &Gateway, origin: &LlmOrigin, max_tokens: u64) -> RawResponse {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
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
    send_raw(gw.proxy, &req)
}

/// The origin's exact answer to [`chat`].
fn expected_body(max_tokens: u64) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello from origin"}}],
        "usage": {"prompt_tokens": 25, "completion_tokens": max_tokens,
                  "total_tokens": 25 + max_tokens},
    })
}

fn assert_ok(r: &RawResponse, max_tokens: u64) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), expected_body(max_tokens));
}

/// The audit records of kind `alert` in a gateway's JSON Lines file.
fn alert_records(gw: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gw.dir().join("data/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "alert")
        .collect()
}

fn today_utc() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let start = now - now % 86_400;
    let fmt = |s: u64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{s}"), "+%Y-%m-%dT%H:%M:%S.000Z"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    (fmt(start), fmt(start + 86_400))
}

#[test]
fn each_threshold_fires_exactly_once_with_a_signed_payload() {
    let origin = LlmOrigin::start();
    let hook = Receiver::start(Mode::Ok);
    let fleet = fleet(1, &origin, "", &alerts_section(&hook, ""));
    let gw = &fleet.gateways[0];
    // 100 tokens per call: 400 spent, below every threshold.
    for _ in 0..4 {
        assert_ok(&chat(gw, &origin, 75), 75);
    }
    // The 5th call reaches 50 %.
    assert_ok(&chat(gw, &origin, 75), 75);
    wait_until("the 50% alert arrives", || hook.alerts().len() == 1);
    for _ in 0..3 {
        assert_ok(&chat(gw, &origin, 75), 75);
    }
    wait_until("the 80% alert arrives", || hook.alerts().len() == 2);
    // 800 spent; the last 200 tokens in one call reach 100 %.
    assert_ok(&chat(gw, &origin, 175), 175);
    wait_until("the 100% alert arrives", || hook.alerts().len() == 3);
    // The budget is spent: refused, and nothing fires again.
    chat(gw, &origin, 75).assert_error(429, "rate_limited");
    gw.metrics_until("three deliveries", |m| {
        m.value(
            "portcullis_alerts_sent_total",
            &[("webhook", "ops"), ("outcome", "ok")],
        ) == 3.0
    });
    assert_eq!(hook.thresholds(), vec![0.5, 0.8, 1.0]);
    assert_eq!(*hook.bad_signatures.lock().expect("lock"), 0);
    let (start, end) = today_utc();
    let alerts = hook.alerts();
    for (a, (threshold, spent)) in alerts.iter().zip([(0.5, 500), (0.8, 800), (1.0, 1000)]) {
        let id = a["id"].as_str().expect("id").to_owned();
        let ts = a["ts"].as_str().expect("ts").to_owned();
        assert_eq!(
            *a,
            serde_json::json!({
                "type": "budget_threshold", "scope": "agent", "agent": "bot", "tenant": "acme",
                "budget": "tokens_per_day", "threshold": threshold, "spent": spent,
                "limit": BUDGET, "period": {"start": start, "end": end}, "ts": ts, "id": id,
            })
        );
    }
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_alerts_fired_total",
            &[("budget", "tokens_per_day")]
        ),
        3.0
    );
    // Every alert is audited with the id the webhook got.
    let ids: Vec<String> = alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap_or("").to_owned())
        .collect();
    wait_until("the alerts are audited", || alert_records(gw).len() == 3);
    let records = alert_records(gw);
    for (r, id) in records.iter().zip(&ids) {
        assert_eq!(
            (&r["id"], &r["agent_id"], &r["tenant"]),
            (
                &serde_json::json!(id),
                &serde_json::json!("bot"),
                &serde_json::json!("acme")
            )
        );
        let reason = r["reasons"][0].as_str().unwrap_or("");
        assert!(reason.starts_with("budget_threshold: "), "{reason}");
        assert!(reason.contains("tokens_per_day"), "{reason}");
    }
    // The secret is never in the log.
    assert!(!gw.stderr().contains(SECRET));
}

#[test]
fn a_tenant_dollar_budget_fires_in_dollars() {
    let origin = LlmOrigin::start();
    let hook = Receiver::start(Mode::Ok);
    // gpt-4o-mini: $0.15/M input, $0.60/M output. The origin bills 25 + 75 tokens a call:
    // 25 × 0.15 + 75 × 0.60 = 48.75 µ$, 49 µ$ rounded up. The tenant has 180 µ$ a day.
    let limits = "\n[limits.tenants.acme]\nusd_per_day = 0.00018\n\n[[llm.prices]]\n\
                  provider = \"local\"\nmodel = \"gpt-4o-mini\"\ninput = 0.15\noutput = 0.60";
    let fleet = fleet(1, &origin, limits, &alerts_section(&hook, ""));
    let gw = &fleet.gateways[0];
    assert_ok(&chat(gw, &origin, 75), 75);
    // 98 µ$ (54 %): 50 %.
    assert_ok(&chat(gw, &origin, 75), 75);
    wait_until("the 50% alert arrives", || hook.alerts().len() == 1);
    // 147 µ$ (82 %): 80 %.
    assert_ok(&chat(gw, &origin, 75), 75);
    wait_until("the 80% alert arrives", || hook.alerts().len() == 2);
    // 147 spent + 45 reserved do not fit in 180: refused before 100 %, nothing more fires.
    let refused = chat(gw, &origin, 75);
    refused.assert_error(429, "rate_limited");
    assert_eq!(refused.json()["limit"], "usd_per_day");
    let (start, end) = today_utc();
    let alerts = hook.alerts();
    for (a, (threshold, spent)) in alerts.iter().zip([(0.5, 0.000098), (0.8, 0.000147)]) {
        let id = a["id"].as_str().expect("id").to_owned();
        let ts = a["ts"].as_str().expect("ts").to_owned();
        assert_eq!(
            *a,
            serde_json::json!({
                "type": "budget_threshold", "scope": "tenant", "agent": null, "tenant": "acme",
                "budget": "usd_per_day", "threshold": threshold, "spent": spent,
                "limit": 0.00018, "period": {"start": start, "end": end}, "ts": ts, "id": id,
            })
        );
    }
    assert_eq!(*hook.bad_signatures.lock().expect("lock"), 0);
    wait_until("the alerts are audited", || alert_records(gw).len() == 2);
    let reasons: Vec<String> = alert_records(gw)
        .iter()
        .map(|r| {
            assert_eq!((&r["agent_id"], &r["tenant"]), (&"".into(), &"acme".into()));
            r["reasons"][0].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(
        reasons,
        [
            format!(
                "budget_threshold: Portcullis: tenant acme reached 50% of its usd_per_day \
                 budget: 0.000098 of 0.00018 (period {start} to {end})"
            ),
            format!(
                "budget_threshold: Portcullis: tenant acme reached 80% of its usd_per_day \
                 budget: 0.000147 of 0.00018 (period {start} to {end})"
            ),
        ]
    );
    // The agent's token budget (100 of 1000 a call) reached no threshold.
    let m = gw.metrics();
    assert_eq!(
        m.value(
            "portcullis_alerts_fired_total",
            &[("budget", "usd_per_day")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "portcullis_alerts_fired_total",
            &[("budget", "tokens_per_day")]
        ),
        0.0
    );
}

#[test]
fn a_failing_webhook_is_retried_and_traffic_is_unaffected() {
    let origin = LlmOrigin::start();
    let hook = Receiver::start(Mode::Fail);
    let fleet = fleet(
        1,
        &origin,
        "",
        &alerts_section(&hook, "max_retries = 2\nretry_backoff = \"20ms\""),
    );
    let gw = &fleet.gateways[0];
    // 500 tokens at once: the 50 % alert.
    assert_ok(&chat(gw, &origin, 475), 475);
    for _ in 0..3 {
        assert_ok(&chat(gw, &origin, 25), 25);
    }
    gw.metrics_until("the delivery gave up", |m| {
        m.value(
            "portcullis_alerts_sent_total",
            &[("webhook", "ops"), ("outcome", "failed")],
        ) == 1.0
    });
    // One attempt and two retries, each signed, of the same alert.
    assert_eq!(hook.server.requests(), 3);
    let alerts = hook.alerts();
    assert_eq!(alerts.len(), 3);
    assert!(alerts.iter().all(|a| a == &alerts[0]), "{alerts:?}");
    assert_eq!(alerts[0]["threshold"], 0.5);
}

#[test]
fn a_hanging_webhook_never_holds_a_proxied_response() {
    let origin = LlmOrigin::start();
    let hook = Receiver::start(Mode::Hang);
    let mut fleet = fleet(
        1,
        &origin,
        "",
        &alerts_section(&hook, "timeout = \"300s\"\nmax_retries = 0"),
    );
    let gw = &fleet.gateways[0];
    // 850 tokens: the 50 % and 80 % alerts; the first delivery hangs.
    assert_ok(&chat(gw, &origin, 825), 825);
    wait_until("the webhook holds the first delivery", || {
        hook.server.requests() == 1
    });
    // Meanwhile traffic flows, byte for byte, and crosses 100 % too.
    for _ in 0..3 {
        assert_ok(&chat(gw, &origin, 25), 25);
    }
    gw.metrics_until("three alerts fired", |m| {
        m.value(
            "portcullis_alerts_fired_total",
            &[("budget", "tokens_per_day")],
        ) == 3.0
    });
    chat(gw, &origin, 25).assert_error(429, "rate_limited");
    // The webhook is still stuck on the first alert: delivery waits, requests do not.
    assert_eq!(hook.server.requests(), 1);
    assert_eq!(
        gw.metrics().value(
            "portcullis_alerts_sent_total",
            &[("webhook", "ops"), ("outcome", "ok")]
        ),
        0.0
    );
    // Nor does shutdown wait for it beyond its bound.
    let gw = &mut fleet.gateways[0];
    gw.sigterm();
    let st = gw.wait_exit(TIMEOUT);
    assert!(st.success(), "{st}");
}

#[test]
fn alerts_fired_just_before_shutdown_are_delivered() {
    let origin = LlmOrigin::start();
    // The first attempt fails and is retried after a backoff: only a shutdown that waits
    // for the queue delivers all three.
    let hook = Receiver::start(Mode::FailFirst);
    let mut fleet = fleet(
        1,
        &origin,
        "",
        &alerts_section(&hook, "retry_backoff = \"600ms\""),
    );
    assert_ok(&chat(&fleet.gateways[0], &origin, 975), 975);
    let gw = &mut fleet.gateways[0];
    gw.sigterm();
    let st = gw.wait_exit(TIMEOUT);
    assert!(st.success(), "{st}");
    assert_eq!(hook.thresholds(), vec![0.5, 0.5, 0.8, 1.0]);
}

#[test]
fn two_replicas_sharing_redis_fire_each_threshold_once() {
    let url = test_redis_url();
    let origin = LlmOrigin::start();
    let hook = Receiver::start(Mode::Ok);
    let limits = format!(
        "backend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{}\"",
        unique_redis_prefix("alerts")
    );
    let fleet = fleet(2, &origin, &limits, &alerts_section(&hook, ""));
    // 100 tokens a call, alternating replicas: each sees every threshold crossed, the one
    // that claims it first in Redis fires it, the other counts a deduplication.
    let fired = || -> f64 {
        fleet
            .gateways
            .iter()
            .map(|g| {
                g.metrics().value(
                    "portcullis_alerts_fired_total",
                    &[("budget", "tokens_per_day")],
                )
            })
            .sum()
    };
    for (calls, (from, to), alerts) in [(5, (0, 5), 1), (3, (5, 8), 2), (2, (8, 10), 3)] {
        assert_eq!(to - from, calls);
        for i in from..to {
            assert_ok(&chat(&fleet.gateways[i % 2], &origin, 75), 75);
        }
        wait_until("the alert is delivered", || hook.alerts().len() == alerts);
    }
    wait_until("three alerts fired between the replicas", || fired() == 3.0);
    // Calls 6 and 9 crossed thresholds already fired by the other replica.
    let deduplicated = || -> f64 {
        fleet
            .gateways
            .iter()
            .map(|g| {
                g.metrics()
                    .value("portcullis_alerts_deduplicated_total", &[])
            })
            .sum()
    };
    wait_until("the other replica saw each claim taken", || {
        deduplicated() == 2.0
    });
    chat(&fleet.gateways[0], &origin, 75).assert_error(429, "rate_limited");
    assert_eq!(hook.thresholds(), vec![0.5, 0.8, 1.0]);
    let spent: Vec<u64> = hook
        .alerts()
        .iter()
        .filter_map(|a| a["spent"].as_u64())
        .collect();
    assert_eq!(spent, vec![500, 800, 1000]);
    assert_eq!(fired(), 3.0);
}

#[test]
fn an_https_slack_webhook_gets_one_signed_line() {
    let origin = LlmOrigin::start();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let (hook, ca) = Receiver::start_tls(Mode::Ok, ca_dir.path());
    let alerts = format!(
        "[tls]\nupstream_ca = [{:?}]\n\n[alerts]\n\n[[alerts.webhooks]]\nname = \"team_chat\"\n\
         url = \"https://localhost:{}/services/T0/B0/XXXX\"\nformat = \"slack\"\n\
         secret_file = \"{{DIR}}/alert.key\"\n",
        ca.display().to_string(),
        hook.server.port()
    );
    let fleet = fleet(1, &origin, "", &alerts);
    let gw = &fleet.gateways[0];
    assert_ok(&chat(gw, &origin, 475), 475);
    wait_until("the Slack message arrives", || hook.alerts().len() == 1);
    let (start, end) = today_utc();
    assert_eq!(
        hook.alerts()[0],
        serde_json::json!({"text": format!(
            "Portcullis: agent bot (tenant acme) reached 50% of its tokens_per_day budget: \
             500 of 1000 (period {start} to {end})"
        )})
    );
    gw.metrics_until("the delivery is counted", |m| {
        m.value(
            "portcullis_alerts_sent_total",
            &[("webhook", "team_chat"), ("outcome", "ok")],
        ) == 1.0
    });
    // The URL (a Slack URL is a credential) is never logged.
    assert!(!gw.stderr().contains("XXXX"));
}

/// Runs `portcullis serve` with `alerts` appended to a minimal config, expecting it to exit
/// (bounded): the exit code and stderr.
fn serve_fails(alerts: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_file(
        dir.path(),
        "portcullis.toml",
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{alerts}"
        )
        .as_bytes(),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["serve", "--config", &cfg.display().to_string()])
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_E2E_UNSET_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("portcullis serve kept running with an invalid [alerts]");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status.code(), err)
}

#[test]
fn a_missing_secret_or_a_bad_threshold_stops_the_start_naming_the_key() {
    // A secret that cannot be read stops the start (1); an invalid document is a config
    // error (2), as for every section.
    let hook = "[[alerts.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\n";
    let (code, err) = serve_fails(&format!(
        "[alerts]\n{hook}secret_env = \"PORTCULLIS_E2E_UNSET_SECRET\"\n"
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("alerts.webhooks[0].secret_env"), "{err}");
    assert!(
        err.contains("PORTCULLIS_E2E_UNSET_SECRET is not set"),
        "{err}"
    );
    let (code, err) = serve_fails(&format!(
        "[alerts]\n{hook}secret_file = \"/nonexistent/alert.key\"\n"
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("alerts.webhooks[0].secret_file"), "{err}");
    let (code, err) = serve_fails(&format!(
        "[alerts]\nthresholds = [0.5, 0]\n{hook}secret_env = \"X\"\n"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("alerts.thresholds"), "{err}");
    let (code, err) = serve_fails(
        "[alerts]\n[[alerts.webhooks]]\nname = \"ops\"\nurl = \"ftp://h/\"\nsecret_env = \"X\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("alerts.webhooks[0].url"), "{err}");
}
