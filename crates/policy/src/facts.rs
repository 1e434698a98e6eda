//! The one place where what the data plane knows about a request becomes the policy
//! input, and the data plane's reading of a buffered request body. The gateway's
//! authorizer, the admin simulator and `portcullis policy eval` all go through here, so a
//! simulated request is decided on exactly the facts the gateway would use.

use crate::input::{LlmFacts, McpFacts, PolicyInput, RequestFacts, RequestKind, UsageFacts};
use http::HeaderMap;
use portcullis_core::Principal;
use portcullis_llm::{Classification, Classifier, RequestHead};
use serde_json::Value as Json;

/// Everything the data plane knows about one request when it asks policy, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeFacts<'a> {
    /// `http` or `connect` (`token` for token-endpoint requests).
    pub kind: RequestKind,
    /// Who is asking (its token, if any, becomes `input.token`).
    pub principal: &'a Principal,
    /// Validated sub-agent name.
    pub subagent: Option<&'a str>,
    /// Method as received (`CONNECT` for tunnels).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Destination host (lower-case name or IP literal).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// Path without the query (empty for CONNECT).
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    /// Request headers as received; credentials are removed when the input is built and
    /// method overrides are read from them.
    pub headers: &'a HeaderMap,
    /// LLM classification, when the destination is a known provider.
    pub llm: Option<&'a Classification>,
    /// The JSON body, when it was inspected (see [`inspect_buffered`]).
    pub body: Option<&'a Json>,
    /// The agent's recent usage.
    pub usage: UsageFacts,
    /// The credential that will be injected if the request is allowed.
    pub credential: Option<&'a str>,
    /// The MCP message, for requests to `[[mcp.servers]]` endpoints.
    pub mcp: Option<McpFacts<'a>>,
}

/// Builds the policy input (DESIGN §4) of a request from the data plane's facts:
/// `request` (with `method_override` and credential headers removed), `llm` from the
/// classification (`api` is `""` when the path names no known API), `usage`, `subagent`,
/// `credential`, and `agent`/`token` from the principal. `now` is left to the engine.
pub fn build_input<'a>(f: &ExchangeFacts<'a>) -> PolicyInput<'a> {
    let mut input = PolicyInput::new(f.kind, f.principal)
        .with_request(RequestFacts {
            method: f.method,
            scheme: f.scheme,
            host: f.host,
            port: f.port,
            path: f.path,
            query: f.query,
            headers: Some(f.headers),
            body: f.body,
        })
        .with_usage(f.usage);
    if let Some(s) = f.subagent {
        input = input.with_subagent(s);
    }
    if let Some(c) = f.credential {
        input = input.with_credential(c);
    }
    if let Some(m) = f.mcp {
        input = input.with_mcp(m);
    }
    if let Some(c) = f.llm {
        input = input.with_llm(LlmFacts {
            provider: &c.provider,
            api: c.api.map(|a| a.as_str()).unwrap_or(""),
            model: c.model.as_deref(),
            stream: c.stream,
            max_tokens: c.max_tokens,
        });
    }
    input
}

/// What the data plane learns from a request whose body it has in full.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inspected {
    /// The classification (`None`: the destination is not an LLM provider).
    pub llm: Option<Classification>,
    /// The parsed JSON body (`input.request.body`), when the classifier inspected it.
    pub body: Option<Json>,
}

/// Classifies a request as the data plane does: provider by host and port, API by method
/// and path; the body is read only for a request the gateway buffers (a `POST` to a
/// provider that is not a protocol upgrade), only up to `max_inspect_body` bytes and only
/// as JSON (by `Content-Type`, if any); `input.request.body` is that body parsed, present
/// only when the classifier inspected it.
pub fn inspect_buffered(
    classifier: &Classifier,
    head: &RequestHead<'_>,
    headers: &HeaderMap,
    body: &[u8],
    max_inspect_body: usize,
) -> Inspected {
    let Some(mut c) = classifier.classify_head(head) else {
        return Inspected::default();
    };
    let mut json = None;
    if !portcullis_core::wants_upgrade(headers) && classifier.wants_body(head) {
        json = c.inspect_json(head.content_type, body, max_inspect_body);
    }
    Inspected {
        llm: Some(c),
        body: json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_llm::Note;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn head<'a>(method: &'a str, host: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            host,
            port: 443,
            path,
            content_type: Some("application/json"),
        }
    }

    fn classifier() -> Classifier {
        Classifier::new(&[]).unwrap()
    }

    #[test]
    fn inspects_like_the_data_plane() {
        let c = classifier();
        let h = HeaderMap::new();
        let body = br#"{"model":"gpt-4-32k","stream":true,"max_tokens":7}"#;
        let chat = head("POST", "api.openai.com", "/v1/chat/completions");
        let i = inspect_buffered(&c, &chat, &h, body, 1024);
        let llm = i.llm.unwrap();
        assert_eq!(
            (llm.model.as_deref(), llm.stream, llm.max_tokens),
            (Some("gpt-4-32k"), true, Some(7))
        );
        assert_eq!(
            i.body,
            Some(json!({"model":"gpt-4-32k","stream":true,"max_tokens":7}))
        );

        // Over the bound: classified without body fields, body not in the input.
        let i = inspect_buffered(&c, &chat, &h, body, 10);
        assert_eq!(i.llm.as_ref().unwrap().note, Some(Note::BodyTooLarge));
        assert_eq!((i.llm.unwrap().model, i.body), (None, None));

        // A duplicated field is ambiguous: refused rather than guessed.
        let dup = br#"{"model":"gpt-4o","model":"gpt-4-32k"}"#;
        let i = inspect_buffered(&c, &chat, &h, dup, 1024);
        assert_eq!(i.llm.as_ref().unwrap().note, Some(Note::InvalidJson));
        assert_eq!(i.body, None);

        // Not JSON by content type.
        let form = RequestHead {
            content_type: Some("application/x-www-form-urlencoded"),
            ..chat
        };
        let i = inspect_buffered(&c, &form, &h, body, 1024);
        assert_eq!(i.llm.unwrap().note, Some(Note::NotJson));
        assert_eq!(i.body, None);

        // GET and upgrade requests are not buffered; other hosts are not classified.
        let get = head("GET", "api.openai.com", "/v1/models");
        let i = inspect_buffered(&c, &get, &h, body, 1024);
        assert_eq!(i.llm.unwrap().note, Some(Note::BodyNotBuffered));
        assert_eq!(i.body, None);
        let mut up = HeaderMap::new();
        up.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        up.insert(
            http::header::CONNECTION,
            "keep-alive, Upgrade".parse().unwrap(),
        );
        let i = inspect_buffered(&c, &chat, &up, body, 1024);
        assert_eq!((i.llm.unwrap().model, i.body), (None, None));
        let other = head("POST", "api.stripe.com", "/v1/charges");
        assert_eq!(
            inspect_buffered(&c, &other, &h, body, 1024),
            Inspected::default()
        );
    }

    #[test]
    fn an_override_is_decided_like_the_method_it_asks_for() {
        use crate::{example_sources, EngineConfig, PolicyEngine};
        let engine = PolicyEngine::with_sources(
            EngineConfig::default(),
            std::sync::Arc::new(portcullis_core::ManualClock::at(1_800_000_000)),
            example_sources(),
        )
        .unwrap();
        let mut p = Principal::anonymous();
        p.agent_id = std::sync::Arc::from("billing_bot");
        p.scopes = std::sync::Arc::from(vec!["stripe:charge:read".to_owned()]);
        let none = HeaderMap::new();
        let decide = |method: &str, headers: &HeaderMap, query: Option<&str>| {
            let input = build_input(&ExchangeFacts {
                kind: RequestKind::Http,
                principal: &p,
                subagent: None,
                method,
                scheme: "https",
                host: "api.stripe.com",
                port: 443,
                path: "/v1/charges",
                query,
                headers,
                llm: None,
                body: None,
                usage: UsageFacts::default(),
                credential: None,
                mcp: None,
            });
            let d = engine.decide(&input).decision;
            // The simulator's path (interpreter, document) agrees.
            let sim = engine.simulate(&input).decision;
            assert_eq!(
                (&sim.verdict, &sim.policy, &sim.reasons),
                (&d.verdict, &d.policy, &d.reasons)
            );
            (d.allowed, d.policy, d.reasons)
        };
        let post = decide("POST", &none, None);
        assert!(!post.0);
        assert_eq!(
            post.2,
            [
                "missing scope stripe:charge:write for POST api.stripe.com/v1/charges",
                "stripe is read-only: POST /v1/charges is not allowed"
            ]
        );
        for name in crate::METHOD_OVERRIDE_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(name, "POST".parse().unwrap());
            assert_eq!(decide("GET", &h, None), post, "{name}");
        }
        assert_eq!(decide("GET", &none, Some("_method=post")), post);
        let get = decide("GET", &none, None);
        assert!(get.0, "{get:?}");
    }

    #[test]
    fn builds_the_design_input_from_facts() {
        let mut p = Principal::anonymous();
        p.agent_id = std::sync::Arc::from("bot");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("x-http-method-override", "delete".parse().unwrap());
        let c = classifier();
        let body = br#"{"model":"gpt-4o"}"#;
        let chat = head("POST", "api.openai.com", "/v1/chat/completions");
        let i = inspect_buffered(&c, &chat, &h, body, 1024);
        let input = build_input(&ExchangeFacts {
            kind: RequestKind::Http,
            principal: &p,
            subagent: Some("planner"),
            method: "POST",
            scheme: "https",
            host: "api.openai.com",
            port: 443,
            path: "/v1/chat/completions",
            query: Some("a=1"),
            headers: &h,
            llm: i.llm.as_ref(),
            body: i.body.as_ref(),
            usage: UsageFacts {
                requests_last_minute: 2,
                tokens_today: 9,
                mcp_calls_last_minute: 0,
                usd_today_micros: 1_500_000,
                usd_month_micros: 250_000,
            },
            credential: Some("openai_prod"),
            mcp: None,
        });
        let j = input.to_json(UNIX_EPOCH);
        assert_eq!(j["agent"]["id"], "bot");
        assert_eq!(j["subagent"], "planner");
        assert_eq!(j["credential"], "openai_prod");
        assert_eq!(
            j["usage"],
            json!({"requests_last_minute": 2, "tokens_today": 9, "mcp_calls_last_minute": 0,
                   "usd_today": 1.5, "usd_month": 0.25})
        );
        assert_eq!(
            j["llm"],
            json!({"provider": "openai", "api": "chat.completions", "model": "gpt-4o",
                   "stream": false, "max_tokens": null})
        );
        assert_eq!(j["request"]["body"], json!({"model": "gpt-4o"}));
        assert_eq!(j["request"]["query"], json!({"a": "1"}));
        assert_eq!(j["request"]["method_override"], "DELETE");
        assert_eq!(
            j["request"]["headers"],
            json!({"x-http-method-override": "delete"})
        );
        assert!(!j.to_string().contains("sk-secret"));
    }
}
