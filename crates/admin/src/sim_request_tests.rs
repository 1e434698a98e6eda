//! Unit tests of the simulate body: validation, classification and the input document.

use super::*;
use portcullis_core::{AgentMode, RiskLevel};
use serde_json::json;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn parse(body: &Map<String, Value>) -> Result<SimRequest, ValidationErrors> {
    super::parse(body, &RequestReader::default())
}

fn fields(r: Result<SimRequest, ValidationErrors>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(v) => v.0.into_iter().map(|e| e.field).collect(),
    }
}

fn principal() -> Principal {
    Principal {
        agent_id: Arc::from("bot"),
        tenant: Arc::from("acme"),
        groups: Arc::from(vec!["llm".to_owned()]),
        risk_level: RiskLevel::High,
        mode: AgentMode::Active,
        attributes: Arc::new(Map::new()),
        scopes: Arc::from(vec!["openai:*:*".to_owned()]),
        token: None,
        generation: 1,
    }
}

#[test]
fn full_description_builds_the_design_input() {
    let r = parse(&obj(json!({
        "agent": "bot",
        "request": {"method": "POST", "host": "API.OpenAI.com", "path": "/v1/chat/completions?x=1",
                    "headers": {"Content-Type": "application/json", "Authorization": "Bearer sk-live",
                                "X-Api-Key": "k", "Cookie": "s=1", "x-multi": ["a", "b"]},
                    "body": {"model": "gpt-4o", "stream": true, "max_tokens": 10}},
        "llm": {"provider": "openai", "api": "chat.completions", "model": "gpt-4o", "stream": true, "max_tokens": 10},
        "usage": {"requests_last_minute": 3},
        "subagent": "planner",
        "now": "2026-01-01T12:00:00Z"
    })))
    .unwrap();
    assert_eq!(r.agent, "bot");
    let doc = r.what.to_doc(&principal(), 100, 600);
    assert_eq!(doc["kind"], "http");
    assert_eq!(doc["agent"]["id"], "bot");
    assert_eq!(doc["agent"]["tenant"], "acme");
    let req = &doc["request"];
    assert_eq!(req["host"], "api.openai.com");
    assert_eq!(req["scheme"], "https");
    assert_eq!(req["port"], 443);
    assert_eq!(req["path"], "/v1/chat/completions");
    assert_eq!(req["query"], json!({"x": "1"}));
    assert_eq!(
        req["headers"],
        json!({"content-type": "application/json", "x-multi": "a, b"})
    );
    assert_eq!(
        req["body"],
        json!({"model": "gpt-4o", "stream": true, "max_tokens": 10})
    );
    assert_eq!(
        doc["llm"],
        json!({"provider": "openai", "api": "chat.completions", "model": "gpt-4o",
               "stream": true, "max_tokens": 10})
    );
    assert_eq!(doc["usage"]["requests_last_minute"], 3);
    assert_eq!(doc["subagent"], "planner");
    assert_eq!(doc["now"], "2026-01-01T12:00:00Z");
    let text = doc.to_string();
    for secret in ["sk-live", "Bearer", "s=1", "x-api-key"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

fn chat(body: Value) -> Map<String, Value> {
    obj(
        json!({"agent": "bot", "request": {"method": "POST", "host": "api.openai.com",
               "path": "/v1/chat/completions", "headers": {"content-type": "application/json"},
               "body": body}}),
    )
}

#[test]
fn the_body_is_classified_as_the_gateway_does() {
    let r = parse(&chat(
        json!({"model": "gpt-4-32k", "max_completion_tokens": 99}),
    ))
    .unwrap();
    let c = r.classification().unwrap();
    assert_eq!(
        (c.model.as_deref(), c.max_tokens),
        (Some("gpt-4-32k"), Some(99))
    );
    let doc = r.to_doc(&principal(), 0, 0);
    assert_eq!(doc["llm"]["model"], "gpt-4-32k");
    assert_eq!(doc["llm"]["max_tokens"], 99);
    assert_eq!(doc["request"]["body"]["model"], "gpt-4-32k");

    // The exact text: a duplicated field is ambiguous, so neither model is believed.
    let mut raw = chat(Value::Null);
    raw["request"]["body_raw"] = json!(r#"{"model":"gpt-4o","model":"gpt-4-32k"}"#);
    let r = parse(&raw).unwrap();
    let doc = r.to_doc(&principal(), 0, 0);
    assert_eq!(doc["llm"]["model"], Value::Null);
    assert!(doc["request"].get("body").is_none(), "{doc}");
    assert!(!r.classification().unwrap().body_inspected);

    // Over proxy.max_inspect_body: classified without body fields.
    let small = RequestReader {
        max_inspect_body: 8,
        ..RequestReader::default()
    };
    let r = super::parse(&chat(json!({"model": "gpt-4o"})), &small).unwrap();
    let doc = r.to_doc(&principal(), 0, 0);
    assert_eq!(doc["llm"]["model"], Value::Null);
    assert!(doc["request"].get("body").is_none());

    // A body the gateway would not buffer never reaches policy: GET, other hosts.
    for req in [
        json!({"method": "GET", "host": "api.openai.com", "path": "/v1/models", "body": {"model": "x"}}),
        json!({"method": "POST", "host": "api.stripe.com", "path": "/v1/charges", "body": {"amount": 1}}),
    ] {
        let r = parse(&obj(json!({"agent": "bot", "request": req}))).unwrap();
        let doc = r.to_doc(&principal(), 0, 0);
        assert!(doc["request"].get("body").is_none(), "{doc}");
    }

    // An operator's provider is classified like the gateway classifies it.
    let local = RequestReader {
        classifier: Arc::new(
            Classifier::new(&[portcullis_llm::ProviderEntry {
                name: "openai".into(),
                host: "127.0.0.1:8000".into(),
                format: None,
            }])
            .unwrap(),
        ),
        ..RequestReader::default()
    };
    let body = obj(
        json!({"agent": "bot", "request": {"method": "POST", "scheme": "http",
        "host": "127.0.0.1", "port": 8000, "path": "/v1/chat/completions", "body": {"model": "m"}}}),
    );
    let doc = super::parse(&body, &local)
        .unwrap()
        .to_doc(&principal(), 0, 0);
    assert_eq!(doc["llm"]["provider"], "openai");
    assert_eq!(doc["llm"]["model"], "m");
    let doc = parse(&body).unwrap().to_doc(&principal(), 0, 0);
    assert!(doc.get("llm").is_none(), "not a provider by default: {doc}");
}

#[test]
fn a_stated_llm_must_match_the_derived_one() {
    let mut b = chat(json!({"model": "gpt-4-32k"}));
    b.insert(
        "llm".into(),
        json!({"provider": "openai", "api": "chat.completions", "model": "gpt-4-32k", "stream": false}),
    );
    assert!(parse(&b).is_ok());
    b.insert(
        "llm".into(),
        json!({"provider": "anthropic", "api": "messages", "model": "gpt-4o", "stream": true, "max_tokens": 5}),
    );
    let err = match parse(&b) {
        Err(v) => v.0,
        Ok(_) => panic!("a contradicting llm must be refused"),
    };
    let got: Vec<(&str, &str)> = err
        .iter()
        .map(|e| (e.field.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("llm.provider", "the gateway derives \"openai\" from the host; give that or leave it out"),
            ("llm.api", "the gateway derives \"chat.completions\" from the method and path; give that or leave it out"),
            ("llm.model", "the gateway derives model \"gpt-4-32k\" from the request body; give that or leave it out"),
            ("llm.stream", "the gateway derives stream false from the request body; give that or leave it out"),
            ("llm.max_tokens", "the gateway derives max_tokens none from the request body; give that or leave it out"),
        ]
    );
    // Without a body the model is unknown, and the answer says why.
    let mut nobody = chat(Value::Null);
    nobody.insert(
        "llm".into(),
        json!({"provider": "openai", "api": "chat.completions", "model": "gpt-4o"}),
    );
    let err = fields(parse(&nobody));
    assert_eq!(err, ["llm.model"]);
    if let Err(v) = parse(&nobody) {
        assert!(
            v.0[0]
                .reason
                .contains("(the body was not inspected: body_empty)"),
            "{:?}",
            v.0
        );
    }
    // Hosts the gateway does not classify, and CONNECT, have no llm.
    for (req, field) in [
        (json!({"host": "example.com"}), "llm"),
        (json!({"kind": "connect", "host": "api.openai.com"}), "llm"),
    ] {
        let b = obj(json!({"agent": "bot", "request": req,
                           "llm": {"provider": "openai", "api": "chat.completions"}}));
        assert_eq!(fields(parse(&b)), [field]);
    }
}

#[test]
fn body_fields_are_validated() {
    let both = chat(json!({"model": "x"}));
    let mut both = both;
    both["request"]["body_raw"] = json!("{}");
    assert_eq!(fields(parse(&both)), ["request.body_raw"]);
    let mut not_text = chat(Value::Null);
    not_text["request"]["body_raw"] = json!({"model": "x"});
    assert_eq!(fields(parse(&not_text)), ["request.body_raw"]);
    let connect = obj(json!({"agent": "bot", "request": {"kind": "connect",
        "host": "api.openai.com", "body": {"model": "x"}}}));
    assert_eq!(fields(parse(&connect)), ["request.body"]);
}

#[test]
fn the_method_override_is_derived_from_headers_and_query() {
    let b = obj(
        json!({"agent": "bot", "request": {"method": "GET", "host": "api.stripe.com",
        "path": "/v1/charges?_method=delete", "headers": {"X-HTTP-Method-Override": "DELETE"}}}),
    );
    let doc = parse(&b).unwrap().to_doc(&principal(), 0, 0);
    assert_eq!(doc["request"]["method_override"], "DELETE");
    assert_eq!(doc["request"]["method"], "GET");
}

#[test]
fn defaults_by_kind() {
    let d = |v: Value| parse(&obj(v)).unwrap().what.to_doc(&principal(), 100, 600);
    let c = d(json!({"agent": "bot", "request": {"kind": "connect", "host": "api.stripe.com"}}));
    assert_eq!(
        (
            &c["request"]["method"],
            &c["request"]["port"],
            &c["request"]["path"]
        ),
        (&json!("CONNECT"), &json!(443), &json!(""))
    );
    assert!(c.get("now").is_none(), "engine clock fills now");
    let h = d(json!({"agent": "bot", "request": {"host": "example.com", "port": 80}}));
    assert_eq!(h["request"]["scheme"], "http");
    assert_eq!(h["request"]["method"], "GET");
    assert_eq!(h["request"]["path"], "/");
    let t = d(json!({"agent": "bot", "token": {"scopes": ["openai:chat:create"]}}));
    assert_eq!(t["kind"], "token");
    assert_eq!(t["token"]["scopes"], json!(["openai:chat:create"]));
    assert_eq!(t["token"]["exp"], 700);
    assert_eq!(t["agent"]["scopes"], json!(["openai:chat:create"]));
}

#[test]
fn raw_input_keeps_the_document_but_not_the_identity_or_credentials() {
    let r = parse(&obj(json!({
        "agent": "bot",
        "input": {"kind": "http", "agent": {"id": "root", "tenant": "globex"},
                  "request": {"host": "api.stripe.com", "method": "POST",
                              "headers": {"authorization": "Bearer x", "proxy-authorization": "Basic y", "accept": "*/*"}},
                  "custom": [1, 2]}
    })))
    .unwrap();
    let doc = r.what.to_doc(&principal(), 0, 0);
    assert_eq!(doc["agent"]["id"], "bot");
    assert_eq!(doc["agent"]["tenant"], "acme");
    assert_eq!(doc["request"]["headers"], json!({"accept": "*/*"}));
    assert_eq!(doc["custom"], json!([1, 2]));
}

#[test]
fn invalid_bodies_name_every_bad_field() {
    assert_eq!(fields(parse(&obj(json!({})))), ["agent", "request"]);
    assert_eq!(
        fields(parse(&obj(json!({"agent": 7, "request": {"host": "a.b"}})))),
        ["agent"]
    );
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"host": "a.b"}, "extra": 1})
        ))),
        ["extra"]
    );
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"host": "a.b"}, "input": {}})
        ))),
        ["request"]
    );
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "input": {"kind": "ftp"}})
        ))),
        ["input.kind"]
    );
    assert_eq!(
        fields(parse(&obj(json!({"agent": "bot", "input": []})))),
        ["input"]
    );
    let bad = json!({"agent": "bot",
        "request": {"kind": "gopher", "method": "GE T", "host": "a b", "port": 70000,
                    "scheme": "ftp", "path": "nope", "headers": {"bad name": "x", "x": 1, "y": "a\u{0}b"},
                    "frob": 1},
        "llm": {"model": 3, "stream": "yes", "max_tokens": -1},
        "usage": {"tokens_today": "many"},
        "token": {"scopes": ["Not A Scope"]},
        "subagent": "Bad Name",
        "credential": "../x",
        "now": "yesterday"});
    let f = fields(parse(&obj(bad)));
    for want in [
        "request.frob",
        "request.kind",
        "request.method",
        "request.host",
        "request.port",
        "request.scheme",
        "request.path",
        "request.headers.bad name",
        "request.headers.x",
        "request.headers.y",
        "llm.provider",
        "llm.api",
        "llm.model",
        "llm.stream",
        "llm.max_tokens",
        "usage.tokens_today",
        "token.scopes[0]",
        "subagent",
        "credential",
        "now",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
    }
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"kind": "http"}})
        ))),
        ["request.host"]
    );
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"host": "a.b", "path": "/x?a", "query": "b"}})
        ))),
        ["request.query"]
    );
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"kind": "connect", "host": "a.b", "path": "/x"}})
        ))),
        ["request.path"]
    );
}

#[test]
fn header_floods_and_null_request_are_handled() {
    let many: Map<String, Value> = (0..101)
        .map(|i| (format!("x-h{i}"), Value::from("v")))
        .collect();
    assert_eq!(
        fields(parse(&obj(
            json!({"agent": "bot", "request": {"host": "a.b", "headers": many}})
        ))),
        ["request.headers"]
    );
    let r = parse(&obj(
        json!({"agent": "bot", "request": null, "token": {"scopes": []}}),
    ))
    .unwrap();
    assert_eq!(r.what.to_doc(&principal(), 0, 0)["kind"], "token");
}

#[test]
fn rfc3339_shapes() {
    for ok in [
        "2026-01-01T12:00:00Z",
        "2026-01-01t12:00:00z",
        "2026-12-31T23:59:60.123456789+05:30",
        "2026-01-01T00:00:00-00:00",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "",
        "2026-01-01",
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00+5:30",
        "2026-01-01 00:00:00Z",
        "２０２６-01-01T00:00:00Z",
        "2026-01-01T00:00:00Zjunk",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}
