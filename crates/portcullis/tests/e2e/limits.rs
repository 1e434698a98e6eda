//! Rate limits and token budgets (issue 7) through the real gateway: an OpenAI-compatible
//! local origin declared in `[[llm.providers]]`, driven by the official `openai` SDK, httpx
//! and curl. Checks the 429 contract (body, `Retry-After`, `X-RateLimit-*`), that the SDK's
//! own retry honours `Retry-After`, that 50 concurrent streams never overshoot a per-minute
//! token budget, live limit changes (admin API and CLI), `input.usage` in policy, the audit
//! verdict and the metric.

use crate::common::server::{OBody, TestServer};
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Prompt tokens the origin reports for every request.
const PROMPT_TOKENS: u64 = 25;

/// An OpenAI-compatible origin: `POST /v1/chat/completions` answers JSON or (with
/// `"stream": true`) SSE chunks paced 40 ms apart, ending with a usage chunk and
/// `[DONE]`. Usage: 25 prompt tokens, `max_tokens` (default 16) completion tokens.
pub(crate) struct LlmOrigin(TestServer);

impl LlmOrigin {
    pub(crate) fn start() -> Self {
        Self(TestServer::start(None, Arc::new(|req| Box::pin(chat(req)))))
    }

    pub(crate) fn port(&self) -> u16 {
        self.0.port()
    }

    fn requests(&self) -> usize {
        self.0.requests()
    }
}

async fn chat(req: Request<Incoming>) -> Response<OBody> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let completion = v["max_tokens"].as_u64().unwrap_or(16);
    let model = v["model"].as_str().unwrap_or("unknown").to_owned();
    let usage = serde_json::json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
    });
    if v["stream"] != true {
        let doc = serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from origin"}}],
            "usage": usage,
        });
        let mut r = Response::new(Full::new(Bytes::from(doc.to_string())).boxed());
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("ct"));
        return r;
    }
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![
        chunk(
            serde_json::json!({"role": "assistant", "content": "Hel"}),
            serde_json::Value::Null,
        ),
        chunk(
            serde_json::json!({"content": "lo"}),
            serde_json::Value::Null,
        ),
        chunk(serde_json::json!({}), serde_json::json!("stop")),
    ];
    events.push(
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
        "created": 1, "model": model, "choices": [], "usage": usage}),
    );
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        for f in frames {
            // Real pacing, as a provider streams: keeps concurrent streams in flight together.
            tokio::time::sleep(Duration::from_millis(40)).await;
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("ct"));
    r
}

/// An authenticated gateway whose `local` provider is `origin`, with `limits` as the
/// `[limits]` section body and an optional policy file (default: allow the provider).
fn gateway(origin: &LlmOrigin, limits: &str, policy: Option<&str>) -> Gateway {
    let port = origin.port();
    let policy = policy.unwrap_or(
        "package portcullis.policy.llm\nimport rego.v1\n\nallow if input.llm.provider == \"local\"\n",
    );
    Gateway::launch(GatewayOpts {
        auth: true,
        proxy_lines: loopback_proxy_section(&[port]),
        rest: format!(
            "\n[policy]\ndir = \"{{DIR}}/policies\"\n\
             [[llm.providers]]\nname = \"local\"\nhost = \"127.0.0.1:{port}\"\n\
             [limits]\n{limits}\n"
        ),
        files: vec![("policies/llm.rego".to_owned(), policy.as_bytes().to_vec())],
    })
}

fn demo_proxy(gw: &Gateway) -> String {
    format!("http://demo:{}@{}", gw.demo_secret(), gw.proxy)
}

fn base_url(origin: &LlmOrigin) -> String {
    format!("http://127.0.0.1:{}/v1", origin.port())
}

fn json_out(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// One chat completion through the gateway with curl: (status, headers, body).
fn curl_chat(gw: &Gateway, origin: &LlmOrigin, max_tokens: u64) -> RawResponse {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let out = curl(&[
        "-s",
        "-i",
        "-x",
        &demo_proxy(gw),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &format!("{}/chat/completions", base_url(origin)),
    ]);
    let mut r = std::io::BufReader::new(&out.stdout[..]);
    read_response(&mut r, false).expect("curl response")
}

#[test]
fn openai_sdk_honours_retry_after_and_sees_rate_headers() {
    let origin = LlmOrigin::start();
    // rpm = 30: a burst of 30, then one more every 2 s.
    let gw = gateway(&origin, "rpm = 30", None);
    let script = r#"
import json, sys, time, httpx, openai
proxy, base = sys.argv[1:3]
events = []
def hook(resp):
    events.append({"t": time.monotonic(), "status": resp.status_code,
                   "headers": {k: v for k, v in resp.headers.items()
                               if k.startswith("x-ratelimit") or k in ("retry-after", "x-should-retry")}})
def client(retries):
    return openai.OpenAI(base_url=base, api_key="sdk-dummy", max_retries=retries,
                         http_client=httpx.Client(proxy=proxy, event_hooks={"response": [hook]}))
msgs = [{"role": "user", "content": "hi"}]
once = client(0)
first = once.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
first_headers = {k: first.headers.get(k) for k in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")}
out = {"first": first_headers, "first_text": first.parse().choices[0].message.content}
# Spend the burst until the gateway refuses; the SDK raises RateLimitError (no retries).
for i in range(200):
    try:
        once.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    except openai.RateLimitError as e:
        out["refused_after"] = i + 1
        out["refusal"] = {"status": e.status_code, "body": e.response.json(), "message": e.message,
                          "headers": {k: e.response.headers.get(k) for k in
                                      ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                                       "x-ratelimit-reset", "x-portcullis-error")}}
        break
# Refused again at once; the SDK's built-in retry waits Retry-After and then succeeds.
attempts = []
for _ in range(3):
    while True:
        try:
            once.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        except openai.RateLimitError:
            break
    events.clear()
    r = client(3).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
    statuses = [e["status"] for e in events]
    attempts.append(statuses)
    if statuses[:1] == [429]:
        waited = events[1]["t"] - events[0]["t"]
        out["retry"] = {"statuses": statuses, "waited": waited,
                        "retry_after": int(events[0]["headers"]["retry-after"]),
                        "ok_headers": events[-1]["headers"],
                        "text": r.parse().choices[0].message.content}
        break
out["attempts"] = attempts
out["now"] = time.time()
print(json.dumps(out))
"#;
    let v = json_out(&run_python(script, &[demo_proxy(&gw), base_url(&origin)]));
    assert_eq!(v["first_text"], "Hello from origin", "{v}");
    assert_eq!(v["first"]["x-ratelimit-limit"], "30", "{v}");
    assert_eq!(v["first"]["x-ratelimit-remaining"], "29", "{v}");
    let now = v["now"].as_f64().expect("now");
    let reset: f64 = v["first"]["x-ratelimit-reset"]
        .as_str()
        .expect("reset")
        .parse()
        .expect("reset number");
    assert!(reset > now - 10.0 && reset <= now + 61.0, "{v}");

    // The burst is 30 (more only if a refill happened while it was spent).
    let refused_after = v["refused_after"].as_u64().expect("refused");
    assert!((30..40).contains(&refused_after), "{v}");
    let r = &v["refusal"];
    assert_eq!(r["status"], 429, "{v}");
    assert_eq!(r["body"]["code"], "rate_limited", "{v}");
    assert_eq!(r["body"]["limit"], "rpm", "{v}");
    assert!(
        r["body"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("requests per minute")),
        "{v}"
    );
    let retry_after: u64 = r["headers"]["retry-after"]
        .as_str()
        .expect("retry-after")
        .parse()
        .expect("number");
    assert!((1..=2).contains(&retry_after), "{v}");
    assert_eq!(r["headers"]["x-ratelimit-limit"], "30", "{v}");
    assert_eq!(r["headers"]["x-ratelimit-remaining"], "0", "{v}");
    assert_eq!(r["headers"]["x-portcullis-error"], "rate_limited", "{v}");

    // The SDK retried on its own after waiting at least Retry-After, and got through.
    let retry = &v["retry"];
    assert!(
        retry.is_object(),
        "the retrying client never met a 429: {v}"
    );
    assert_eq!(retry["statuses"], serde_json::json!([429, 200]), "{v}");
    assert_eq!(retry["text"], "Hello from origin", "{v}");
    let waited = retry["waited"].as_f64().expect("waited");
    let ra = retry["retry_after"].as_f64().expect("retry_after");
    assert!(
        waited >= ra * 0.95,
        "waited {waited} s < Retry-After {ra} s: {v}"
    );
    assert_eq!(retry["ok_headers"]["x-ratelimit-limit"], "30", "{v}");
    assert_eq!(retry["ok_headers"]["x-ratelimit-remaining"], "0", "{v}");

    // Refused requests never reached the origin; each is counted and audited.
    let refused: u64 = 1 + v["attempts"].as_array().expect("attempts").len() as u64 * 2;
    let admitted = origin.requests() as u64;
    let m = gw.metrics_until("the rate-limited requests are counted", |m| {
        m.value(
            "portcullis_rate_limited_total",
            &[("agent", "demo"), ("limit", "rpm")],
        ) >= refused as f64
    });
    let limited = m.value(
        "portcullis_rate_limited_total",
        &[("agent", "demo"), ("limit", "rpm")],
    ) as u64;
    let allowed = m.value(
        "portcullis_requests_total",
        &[
            ("agent", "demo"),
            ("verdict", "allow"),
            ("provider", "local"),
        ],
    ) as u64;
    assert_eq!(
        allowed, admitted,
        "every admitted request reached the origin"
    );
    assert_eq!(
        m.value(
            "portcullis_requests_total",
            &[
                ("agent", "demo"),
                ("verdict", "rate_limited"),
                ("provider", "local")
            ],
        ) as u64,
        limited
    );
    let q = gw.eventually(
        "the rate-limited requests are in the audit trail",
        || {
            let out = gw.cli_ok(&[
                "audit",
                "query",
                "--verdict",
                "rate_limited",
                "--format",
                "json",
                "--limit",
                "200",
            ]);
            json_out(&out)
        },
        |q| q["total"].as_u64() == Some(limited),
    );
    let rec = &q["decisions"][0];
    assert_eq!(rec["verdict"], "rate_limited", "{rec}");
    assert_eq!(rec["status"], 429, "{rec}");
    assert_eq!(rec["error"], "rate_limited", "{rec}");
    assert_eq!(rec["agent_id"], "demo", "{rec}");
    assert_eq!(rec["provider"], "local", "{rec}");
    let reasons = rec["reasons"].to_string();
    assert!(reasons.contains("request rate limit"), "{rec}");
}

#[test]
fn fifty_concurrent_streams_never_overshoot_the_token_budget() {
    let origin = LlmOrigin::start();
    // Each request reserves max_tokens 100 + its prompt estimate (~30): ~7 fit in 1000.
    let gw = gateway(&origin, "tpm = 1000", None);
    let script = r#"
import asyncio, json, sys, httpx
proxy, base = sys.argv[1:3]
body = {"model": "gpt-4o-mini", "max_tokens": 100, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "count to ten"}]}
async def one(client):
    async with client.stream("POST", base + "/chat/completions", json=body) as r:
        data = b"".join([c async for c in r.aiter_bytes()])
        return {"status": r.status_code, "done": data.endswith(b"data: [DONE]\n\n"),
                "retry_after": r.headers.get("retry-after"),
                "remaining": r.headers.get("x-ratelimit-remaining"),
                "code": (json.loads(data).get("code") if r.status_code != 200 else None)}
async def main():
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(proxy=proxy, limits=limits, timeout=60) as client:
        return await asyncio.gather(*[one(client) for _ in range(50)])
print(json.dumps(asyncio.run(main())))
"#;
    let v = json_out(&run_python(script, &[demo_proxy(&gw), base_url(&origin)]));
    let results = v.as_array().expect("results");
    assert_eq!(results.len(), 50);
    let ok: Vec<_> = results.iter().filter(|r| r["status"] == 200).collect();
    let limited: Vec<_> = results.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(ok.len() + limited.len(), 50, "{v}");
    assert!(!ok.is_empty() && !limited.is_empty(), "{v}");
    for r in &ok {
        assert_eq!(r["done"], true, "a stream was cut: {r}");
    }
    for r in &limited {
        assert_eq!(r["code"], "rate_limited", "{r}");
        assert!(r["retry_after"].as_str().is_some(), "{r}");
    }
    assert_eq!(
        origin.requests(),
        ok.len(),
        "refused streams never reached the origin"
    );

    // The usage the tap recorded for the admitted streams never exceeds the budget.
    let m = gw.metrics_until("every admitted stream is recorded", |m| {
        m.value(
            "portcullis_requests_total",
            &[
                ("agent", "demo"),
                ("verdict", "allow"),
                ("provider", "local"),
            ],
        ) as usize
            == ok.len()
    });
    let tokens = |kind: &str| {
        m.value(
            "portcullis_llm_tokens_total",
            &[
                ("agent", "demo"),
                ("provider", "local"),
                ("model", "gpt-4o-mini"),
                ("type", kind),
            ],
        ) as u64
    };
    let used = tokens("input") + tokens("output");
    assert_eq!(used, ok.len() as u64 * (PROMPT_TOKENS + 100), "{v}");
    assert!(used <= 1000, "recorded usage {used} exceeds tpm 1000");
    assert_eq!(
        m.value(
            "portcullis_rate_limited_total",
            &[("agent", "demo"), ("limit", "tpm")]
        ) as usize,
        limited.len()
    );
}

#[test]
fn a_request_that_can_never_fit_is_refused_without_sdk_retries() {
    let origin = LlmOrigin::start();
    let gw = gateway(&origin, "tpm = 500", None);
    let script = r#"
import json, sys, httpx, openai
proxy, base = sys.argv[1:3]
statuses = []
hc = httpx.Client(proxy=proxy, event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
client = openai.OpenAI(base_url=base, api_key="sdk-dummy", max_retries=3, http_client=hc)
try:
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=4000,
                                   messages=[{"role": "user", "content": "hi"}])
    out = {"ok": True}
except openai.RateLimitError as e:
    out = {"ok": False, "body": e.response.json(), "should_retry": e.response.headers.get("x-should-retry")}
out["statuses"] = statuses
print(json.dumps(out))
"#;
    let v = json_out(&run_python(script, &[demo_proxy(&gw), base_url(&origin)]));
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["statuses"], serde_json::json!([429]), "no retry: {v}");
    assert_eq!(v["should_retry"], "false", "{v}");
    assert_eq!(v["body"]["limit"], "tpm", "{v}");
    let detail = v["body"]["detail"].as_str().expect("detail");
    assert!(detail.contains("can never be admitted"), "{detail}");
    assert_eq!(origin.requests(), 0);
}

#[test]
fn limit_changes_apply_to_the_next_request_via_api_and_cli() {
    let origin = LlmOrigin::start();
    let gw = gateway(&origin, "", None);
    // No limit configured: no X-RateLimit headers, requests pass.
    let r = curl_chat(&gw, &origin, 10);
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none(), "{:?}", r.headers);

    let key = gw.create_api_key("default", "admin");
    let put = |body: serde_json::Value| {
        gw.admin_call("PUT", "/v1/agents/demo/config", Some(&key), Some(&body))
    };
    let r = put(serde_json::json!({"limits": {"rpm": 2}}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["limits"]["rpm"], 2);
    // Two in the burst, the third refused.
    let a = curl_chat(&gw, &origin, 10);
    let b = curl_chat(&gw, &origin, 10);
    let c = curl_chat(&gw, &origin, 10);
    assert_eq!((a.status, b.status, c.status), (200, 200, 429));
    assert_eq!(a.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(a.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(b.header("x-ratelimit-remaining"), Some("0"));
    let body = c.assert_error(429, "rate_limited");
    assert_eq!(body["limit"], "rpm");
    assert!(c.header("retry-after").is_some());

    // Invalid values are refused naming the field; the limit stays.
    for bad in [
        serde_json::json!({"limits": {"rpm": 0}}),
        serde_json::json!({"limits": {"rpm": "many"}}),
        serde_json::json!({"limits": {"burst": 5}}),
    ] {
        let r = put(bad.clone());
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["errors"][0]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("limits.")));
    }

    // null removes the override: back to the (unlimited) default at once.
    let r = put(serde_json::json!({"limits": {"rpm": null}}));
    assert_eq!(r.status, 200);
    assert!(r.json()["limits"].get("rpm").is_none());
    assert_eq!(curl_chat(&gw, &origin, 10).status, 200);

    // The CLI writes the store; the running gateway picks it up on its next poll.
    let out = gw.cli_ok(&[
        "agent",
        "set",
        "demo",
        "--max-concurrent",
        "3",
        "--rpm",
        "1",
        "--mcp-calls-per-minute",
        "12",
    ]);
    assert!(out.contains("updated"), "{out}");
    gw.eventually(
        "the CLI's rpm = 1 applies",
        || curl_chat(&gw, &origin, 10).status,
        |s| *s == 429,
    );
    let shown = json_out(&gw.cli_ok(&["agent", "show", "demo"]));
    assert_eq!(shown["limits"]["rpm"], 1);
    assert_eq!(shown["limits"]["max_concurrent"], 3);
    assert_eq!(shown["limits"]["mcp_calls_per_minute"], 12);
    let out = gw.cli(&["agent", "set", "demo", "--rpm", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rpm"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.cli_ok(&["agent", "set", "demo", "--rpm", "default"]);
    gw.eventually(
        "the CLI's reset to the default applies",
        || curl_chat(&gw, &origin, 10).status,
        |s| *s == 200,
    );
}

#[test]
fn policy_sees_usage_and_can_deny_on_spend() {
    let origin = LlmOrigin::start();
    let policy = r#"package portcullis.policy.spend
import rego.v1

allow if input.llm.provider == "local"

deny contains sprintf("daily token spend %d is over 100", [input.usage.tokens_today]) if {
	input.usage.tokens_today > 100
}
"#;
    let gw = gateway(&origin, "", Some(policy));
    // 25 prompt + 90 completion = 115 tokens settled after the first answer.
    let first = curl_chat(&gw, &origin, 90);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let second = gw.eventually(
        "the settled usage reaches the policy",
        || curl_chat(&gw, &origin, 10),
        |r| r.status == 403,
    );
    let body = second.assert_error(403, "policy_denied");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("daily token spend 115 is over 100")),
        "{body}"
    );
    assert_eq!(origin.requests(), 1);
}
