//! Spend (issue 18) through the real gateway: each LLM record's `cost_usd` from the shipped
//! price table and `[[llm.prices]]` (cached and reasoning tokens priced), `null` when the
//! usage or the price is missing, the totals in `/v1/decisions` and the CLI, the
//! `portcullis_llm_cost_usd_total` metric, and concurrent streams against a small
//! `usd_per_day` that never overshoot it.

use crate::common::server::{OBody, TestServer};
use crate::common::*;
use crate::limits::LlmOrigin;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;

/// An OpenAI-compatible origin whose usage has cached and reasoning tokens: 1000 prompt
/// tokens (400 cached) and 500 completion tokens (200 reasoning). A request with
/// `"user": "no-usage"` gets an answer without usage.
fn detailed_origin() -> TestServer {
    TestServer::start(None, Arc::new(|req| Box::pin(detailed(req))))
}

async fn detailed(req: Request<Incoming>) -> Response<OBody> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut doc = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": v["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "priced"}}],
    });
    if v["user"] != "no-usage" {
        doc["usage"] = json!({
            "prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 200},
        });
    }
    let mut r = Response::new(Full::new(Bytes::from(doc.to_string())).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("ct"));
    r
}

/// A gateway whose provider `provider` is the origin on `port`, with `rest` appended.
fn gateway(port: u16, provider: &str, rest: &str) -> Gateway {
    let policy = format!(
        "package portcullis.policy.llm\nimport rego.v1\n\nallow if input.llm.provider == \"{provider}\"\n"
    );
    Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\n\
             [[llm.providers]]\nname = \"{provider}\"\nhost = \"127.0.0.1:{port}\"\n{rest}\n"
        ),
        files: vec![("policies/llm.rego".to_owned(), policy.into_bytes())],
    })
}

/// One chat completion through the gateway with curl: (status, body as JSON).
fn chat(gw: &Gateway, port: u16, body: &Value) -> (u16, Value) {
    let proxy = format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy);
    let out = curl(&[
        "-s",
        "-i",
        "-x",
        &proxy,
        "-H",
        "content-type: application/json",
        "-d",
        &body.to_string(),
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
    ]);
    let mut r = std::io::BufReader::new(&out.stdout[..]);
    let resp = read_response(&mut r, false).expect("curl response");
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json)
}

/// The demo agent's records, newest first, and the page's totals, once `n` are stored.
fn decisions(gw: &Gateway, key: &str, n: usize) -> Value {
    gw.eventually(
        "the records are in the audit trail",
        || {
            let r = gw.admin_call(
                "GET",
                "/v1/decisions?agent_id=demo&limit=200",
                Some(key),
                None,
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()
        },
        |v| v["decisions"].as_array().map(Vec::len) == Some(n),
    )
}

fn by_model<'a>(v: &'a Value, model: &str) -> Vec<&'a Value> {
    v["decisions"]
        .as_array()
        .map(|a| a.iter().filter(|d| d["model"] == model).collect())
        .unwrap_or_default()
}

#[test]
fn records_carry_their_exact_cost_and_the_totals_add_up() {
    let origin = detailed_origin();
    let port = origin.addr.port();
    // The local origin is named `openai` so the shipped table prices gpt-4o; the config
    // replaces the shipped gpt-4o-mini* entry.
    let gw = gateway(
        port,
        "openai",
        "[[llm.prices]]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini*\"\ninput = 1.0\noutput = 2.0\n",
    );
    let ask = |model: &str, user: &str| {
        let (status, body) = chat(
            &gw,
            port,
            &json!({"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "priced");
    };
    ask("gpt-4o", "a");
    ask("gpt-4o-mini", "a");
    ask("gpt-4o", "no-usage");
    ask("mystery-model", "a");

    let key = gw.create_api_key("default", "viewer");
    let v = decisions(&gw, &key, 4);
    // gpt-4o (shipped: $2.50 input, $1.25 cached, $10 output and reasoning):
    // 600 × 2.50 + 400 × 1.25 + 300 × 10 + 200 × 10 = 7000 µ$.
    let priced: Vec<_> = by_model(&v, "gpt-4o")
        .into_iter()
        .filter(|d| d["usage"]["source"] == "provider")
        .collect();
    assert_eq!(priced.len(), 1, "{v}");
    assert_eq!(priced[0]["cost_usd"], json!(0.007), "{v}");
    assert_eq!(priced[0]["usage"]["cached_input_tokens"], 400, "{v}");
    assert_eq!(priced[0]["usage"]["reasoning_tokens"], 200, "{v}");
    // gpt-4o-mini (configured: $1 input and cached, $2 output and reasoning):
    // 1000 × 1 + 500 × 2 = 2000 µ$.
    let mini = by_model(&v, "gpt-4o-mini");
    assert_eq!(mini[0]["cost_usd"], json!(0.002), "{v}");
    // Missing usage and an unknown model: null, never zero.
    let missing: Vec<_> = by_model(&v, "gpt-4o")
        .into_iter()
        .filter(|d| d["usage"]["source"] == "missing")
        .collect();
    assert_eq!(missing.len(), 1, "{v}");
    assert!(missing[0]["cost_usd"].is_null(), "{v}");
    let unknown = by_model(&v, "mystery-model");
    assert!(unknown[0]["cost_usd"].is_null(), "{v}");
    assert_eq!(unknown[0]["usage"]["total_tokens"], 1500, "{v}");
    // The page's totals: the exact sum of the priced records.
    assert_eq!(v["cost_usd"], json!(0.009), "{v}");
    assert_eq!(v["priced"], 2, "{v}");

    // /v1/spend groups the same totals, dearest first; unpriced records count but add nothing.
    let r = gw.admin_call("GET", "/v1/spend?by=model&agent_id=demo", Some(&key), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let spend = r.json();
    assert_eq!(spend["by"], "model", "{spend}");
    assert_eq!(spend["cost_usd"], json!(0.009), "{spend}");
    assert_eq!(
        (spend["priced"].as_u64(), spend["records"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(
        spend["groups"],
        json!([
            {"key": "gpt-4o", "records": 2, "priced": 1, "cost_usd": 0.007},
            {"key": "gpt-4o-mini", "records": 1, "priced": 1, "cost_usd": 0.002},
            {"key": "mystery-model", "records": 1, "priced": 0, "cost_usd": null},
        ]),
        "{spend}"
    );
    for bad in [
        "/v1/spend?by=color",
        "/v1/spend?by=model&by=agent",
        "/v1/spend?colour=red",
    ] {
        let r = gw.admin_call("GET", bad, Some(&key), None);
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(gw.admin_call("GET", "/v1/spend", None, None).status, 401);

    // The CLI shows the cost column and the total.
    let table = gw.cli_ok(&["audit", "query", "--agent-id", "demo"]);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("COST")),
        "{table}"
    );
    assert!(table.contains(" $0.007 "), "{table}");
    assert!(table.contains(" $0.002 "), "{table}");
    assert!(
        table.contains("cost $0.009 over 2 priced records"),
        "{table}"
    );

    // The metric counts dollars per agent, provider and model.
    let m = gw.metrics_until("the cost is counted", |m| {
        m.get(
            "portcullis_llm_cost_usd_total",
            &[
                ("agent", "demo"),
                ("provider", "openai"),
                ("model", "gpt-4o-mini"),
            ],
        )
        .is_some()
    });
    let cost = |model| {
        m.value(
            "portcullis_llm_cost_usd_total",
            &[("agent", "demo"), ("provider", "openai"), ("model", model)],
        )
    };
    assert!((cost("gpt-4o") - 0.007).abs() < 1e-12, "{}", cost("gpt-4o"));
    assert!((cost("gpt-4o-mini") - 0.002).abs() < 1e-12);
    assert_eq!(
        m.get(
            "portcullis_llm_cost_usd_total",
            &[
                ("agent", "demo"),
                ("provider", "openai"),
                ("model", "mystery-model")
            ],
        ),
        None,
        "an unpriced call adds no zero"
    );
}

/// Concurrent streams against $0.001 a day at $1 per million tokens (1 µ$ a token): each
/// reserves its prompt estimate and `max_tokens`, settles at 25 + 100 tokens; the admitted
/// ones never cost more than the budget and the others get 429 `usd_per_day`.
#[test]
fn concurrent_streams_never_overshoot_a_daily_dollar_budget() {
    const STREAMS: usize = 16;
    let origin = LlmOrigin::start();
    let port = origin.port();
    let gw = gateway(
        port,
        "local",
        "[limits]\nusd_per_day = 0.001\n\
         [[llm.prices]]\nprovider = \"local\"\nmodel = \"gpt-4o-mini\"\ninput = 1.0\noutput = 1.0\n",
    );
    // A 200-character prompt: the estimate (body bytes / 4) is above the 25 prompt tokens
    // the origin reports, so no stream costs more than it reserved.
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "x".repeat(200)}]});
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..STREAMS)
            .map(|_| {
                s.spawn(|| {
                    let proxy = format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy);
                    let out = curl(&[
                        "-s",
                        "-i",
                        "-N",
                        "--raw",
                        "-x",
                        &proxy,
                        "-H",
                        "content-type: application/json",
                        "-d",
                        &body.to_string(),
                        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
                    ]);
                    let mut r = std::io::BufReader::new(&out.stdout[..]);
                    let resp = read_response(&mut r, false).expect("curl response");
                    (resp.status, resp.body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<Value> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| serde_json::from_slice(b).unwrap_or(Value::Null))
        .collect();
    assert_eq!(ok + refused.len(), STREAMS, "only 200 or 429");
    // 16 × 125 µ$ is twice the budget: at least half are refused, however they interleave.
    assert!(ok >= 1 && refused.len() >= STREAMS / 2, "{ok} admitted");
    for r in &refused {
        assert_eq!(r["code"], "rate_limited", "{r}");
        assert_eq!(r["limit"], "usd_per_day", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("daily dollar budget of $0.001")),
            "{r}"
        );
    }
    let key = gw.create_api_key("default", "viewer");
    let v = decisions(&gw, &key, STREAMS);
    let admitted: Vec<&Value> = v["decisions"]
        .as_array()
        .map(|a| a.iter().filter(|d| d["verdict"] == "allow").collect())
        .unwrap_or_default();
    assert_eq!(admitted.len(), ok, "{v}");
    for d in &admitted {
        assert_eq!(
            d["cost_usd"],
            json!(0.000125),
            "25 + 100 tokens at 1 µ$: {d}"
        );
    }
    let spent = v["cost_usd"].as_f64().expect("a total");
    assert!(spent <= 0.001 + 1e-12, "spent {spent} > $0.001: {v}");
    assert_eq!(v["priced"].as_u64(), Some(ok as u64), "{v}");
}

/// Per-agent dollar budgets set through the admin API and the CLI,
/// and an unpriced model refused where a dollar budget applies.
#[test]
fn agent_dollar_budgets_through_the_api_and_the_cli() {
    let origin = LlmOrigin::start();
    let port = origin.port();
    let gw = gateway(
        port,
        "local",
        "[[llm.prices]]\nprovider = \"local\"\nmodel = \"gpt-4o-mini\"\ninput = 1.0\noutput = 1.0\n",
    );
    // 25 prompt + 50 completion tokens at 1 µ$ each: 75 µ$ per call; ~120 µ$ reserved.
    let ask = |model: &str| {
        chat(
            &gw,
            port,
            &json!({"model": model, "max_tokens": 50,
                    "messages": [{"role": "user", "content": "x".repeat(200)}]}),
        )
    };
    assert_eq!(
        ask("unpriced-model").0,
        200,
        "no dollar budget: unpriced calls pass"
    );

    let key = gw.create_api_key("default", "admin");
    let put = |body: Value| gw.admin_call("PUT", "/v1/agents/demo/config", Some(&key), Some(&body));
    let r = put(json!({"limits": {"usd_per_day": 0.0002}}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["limits"]["usd_per_day"], json!(0.0002));
    for bad in [
        json!({"limits": {"usd_per_day": 0}}),
        json!({"limits": {"usd_per_day": "1"}}),
    ] {
        let r = put(bad.clone());
        assert_eq!(r.status, 422, "{bad}");
        assert_eq!(
            r.json()["errors"][0]["field"],
            "limits.usd_per_day",
            "{bad}"
        );
    }
    // 75 settled, then 75 + 120 reserved fits in 200 µ$, then the third does not.
    assert_eq!(ask("gpt-4o-mini").0, 200);
    assert_eq!(ask("gpt-4o-mini").0, 200);
    let (status, body) = ask("gpt-4o-mini");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["limit"], "usd_per_day", "{body}");
    // An unpriced model cannot be sized against the budget: refused, saying why.
    let (status, body) = ask("unpriced-model");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["limit"], "usd_per_day", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("[[llm.prices]]")),
        "{body}"
    );

    // The CLI: a monthly budget in dollars; the daily one back to the (unlimited) default.
    for bad in [
        "--usd-per-month=-1",
        "--usd-per-month=lots",
        "--usd-per-month=0",
    ] {
        let out = gw.cli(&["agent", "set", "demo", bad]);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--usd-per-month: expected a positive number"),
            "{bad}: {err}"
        );
    }
    gw.cli_ok(&[
        "agent",
        "set",
        "demo",
        "--usd-per-day",
        "default",
        "--usd-per-month",
        "$0.00035",
    ]);
    let shown: Value = serde_json::from_str(gw.cli_ok(&["agent", "show", "demo"]).trim())
        .expect("agent show prints JSON");
    assert_eq!(shown["limits"]["usd_per_month"], json!(0.00035), "{shown}");
    assert!(shown["limits"].get("usd_per_day").is_none(), "{shown}");
    // The store change reaches the running gateway on its next poll: the daily budget that
    // refused is gone, so a call passes again (spend this month: 150 µ$ + this one).
    gw.eventually(
        "the CLI's change applies",
        || ask("gpt-4o-mini").0,
        |s| *s == 200,
    );
    // The monthly budget (350 µ$) stops the calls after at most two more.
    let refused = (0..4)
        .map(|_| ask("gpt-4o-mini"))
        .find(|(s, _)| *s == 429)
        .expect("the monthly budget refuses");
    assert_eq!(refused.1["limit"], "usd_per_month", "{}", refused.1);
}

/// `[limits.tenants."<tenant>"]`: all of a tenant's agents share its dollar budget.
#[test]
fn a_tenant_budget_is_shared_by_its_agents() {
    let origin = LlmOrigin::start();
    let port = origin.port();
    let gw = gateway(
        port,
        "local",
        "[limits.tenants.default]\nusd_per_month = 0.0002\n\
         [[llm.prices]]\nprovider = \"local\"\nmodel = \"gpt-4o-mini\"\ninput = 1.0\noutput = 1.0\n",
    );
    let other = gw.create_agent("other_bot", "default", &[]);
    // The new agent reaches the running gateway on its next poll.
    let ask = |agent: &str, secret: &str| {
        let proxy = format!("http://{agent}:{secret}@{}", gw.proxy);
        let out = curl(&[
            "-s",
            "-i",
            "-x",
            &proxy,
            "-H",
            "content-type: application/json",
            "-d",
            &json!({"model": "gpt-4o-mini", "max_tokens": 50,
                    "messages": [{"role": "user", "content": "x".repeat(200)}]})
            .to_string(),
            &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        ]);
        let mut r = std::io::BufReader::new(&out.stdout[..]);
        let resp = read_response(&mut r, false).expect("curl response");
        (
            resp.status,
            serde_json::from_slice::<Value>(&resp.body).unwrap_or(Value::Null),
        )
    };
    let demo = gw.demo_secret();
    assert_eq!(ask("demo", &demo).0, 200);
    gw.eventually(
        "the new agent is known",
        || ask("other_bot", &other).0,
        |s| *s == 200,
    );
    let (status, body) = ask("demo", &demo);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["limit"], "usd_per_month", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("tenant monthly dollar budget")),
        "{body}"
    );
}
