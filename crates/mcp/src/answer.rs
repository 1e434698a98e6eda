//! Answers the gateway gives in the MCP server's place: a JSON-RPC error for the same id, or a
//! `CallToolResult` with `isError: true` (`mcp.on_block = "tool_result"`), as JSON or as an SSE
//! stream when the client accepts only that. MCP clients surface both as a failed tool call, so
//! the agent's model reads the reason.

pub use crate::codes::{
    HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, POLICY_DENIED,
};
use crate::message::{Body, Id, Kind, Message};
use serde_json::{json, Map, Value};

/// How a denied call is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnBlock {
    /// A JSON-RPC error for each request.
    #[default]
    Error,
    /// A `CallToolResult` with `isError: true` for each `tools/call`; other requests still
    /// get a JSON-RPC error.
    ToolResult,
}

/// An answer body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Body bytes.
    pub body: Vec<u8>,
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
}

/// Why the gateway refused a body it parsed: the reason and where it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused<'a> {
    /// Machine code (`policy_denied`, `policy_error`, `agent_disabled`).
    pub code: &'a str,
    /// The reason (the deciding policy's first).
    pub reason: &'a str,
    /// The deciding policy.
    pub policy: Option<&'a str>,
    /// The decision id.
    pub decision_id: &'a str,
    /// Index of the denied message when the body was a batch.
    pub denied_index: Option<usize>,
}

impl Refused<'_> {
    /// The text the agent's model reads.
    pub fn text(&self) -> String {
        let within = match self.denied_index {
            Some(i) => format!("; the whole batch was refused because message {i} was denied"),
            None => String::new(),
        };
        format!(
            "{} (refused by the portcullis gateway: policy {}, decision {}{within})",
            self.reason,
            self.policy.unwrap_or("(default)"),
            self.decision_id
        )
    }

    fn data(&self) -> Value {
        let mut d = Map::new();
        d.insert("code".into(), self.code.into());
        d.insert("detail".into(), self.reason.into());
        d.insert(
            "policy".into(),
            self.policy.map_or(Value::Null, Value::from),
        );
        d.insert("decision_id".into(), self.decision_id.into());
        if let Some(i) = self.denied_index {
            d.insert("denied_index".into(), i.into());
        }
        Value::Object(d)
    }
}

/// A JSON-RPC error response for `id` (`null` when the request's id is unknown).
pub fn error_response(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), code.into());
    err.insert("message".into(), message.into());
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id.map_or(Value::Null, Id::to_value), "error": err})
}

/// The answer to a refused body: one response per request of `body` (notifications and
/// responses get none), the same shape as the body (one object, or an array for a batch).
/// `None` when nothing in the body expects a response.
pub fn refusal(body: &Body, refused: &Refused<'_>, on_block: OnBlock, sse: bool) -> Option<Answer> {
    let text = refused.text();
    let responses: Vec<Value> = body
        .messages
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .map(|m| answer_one(m, refused, &text, on_block))
        .collect();
    if responses.is_empty() {
        return None;
    }
    Some(encode(responses, body.batch, sse))
}

fn answer_one(m: &Message, refused: &Refused<'_>, text: &str, on_block: OnBlock) -> Value {
    if on_block == OnBlock::ToolResult && m.is_tool_call() {
        return json!({
            "jsonrpc": "2.0",
            "id": m.id.as_ref().map_or(Value::Null, Id::to_value),
            "result": {
                "content": [{"type": "text", "text": text}],
                "isError": true,
                "_meta": {"portcullis": refused.data()},
            },
        });
    }
    error_response(m.id.as_ref(), POLICY_DENIED, text, Some(refused.data()))
}

/// Responses as an answer: JSON (one object, or an array for a batch), or an SSE stream with
/// one `message` event per response.
pub fn encode(responses: Vec<Value>, batch: bool, sse: bool) -> Answer {
    if sse {
        let mut out = Vec::new();
        for r in &responses {
            out.extend_from_slice(b"event: message\ndata: ");
            out.extend_from_slice(r.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        return Answer {
            body: out,
            content_type: "text/event-stream",
        };
    }
    let value = if batch {
        Value::Array(responses)
    } else {
        responses.into_iter().next().unwrap_or(Value::Null)
    };
    Answer {
        body: value.to_string().into_bytes(),
        content_type: "application/json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse_body, Limits};

    fn body(v: Value) -> Body {
        parse_body(v.to_string().as_bytes(), &Limits::default()).unwrap()
    }

    fn refused(index: Option<usize>) -> Refused<'static> {
        Refused {
            code: "policy_denied",
            reason: "tool delete_repository is not allowed for group research",
            policy: Some("mcp_tools"),
            decision_id: "d-1",
            denied_index: index,
        }
    }

    #[test]
    fn a_denied_call_gets_an_error_for_its_id() {
        let b = body(json!({"jsonrpc":"2.0","id":"abc","method":"tools/call",
            "params":{"name":"delete_repository"}}));
        let a = refusal(&b, &refused(None), OnBlock::Error, false).unwrap();
        assert_eq!(a.content_type, "application/json");
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], POLICY_DENIED);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("tool delete_repository is not allowed"));
        assert!(msg.contains("decision d-1") && msg.contains("policy mcp_tools"));
        assert_eq!(
            v["error"]["data"],
            json!({"code":"policy_denied","detail":"tool delete_repository is not allowed for group research",
                   "policy":"mcp_tools","decision_id":"d-1"})
        );
    }

    #[test]
    fn tool_result_style() {
        let b = body(json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}));
        let a = refusal(&b, &refused(None), OnBlock::ToolResult, false).unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["result"]["isError"], true);
        assert!(v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not allowed"));
        assert!(v.get("error").is_none());
        // Not a tool call: still an error.
        let b =
            body(json!({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"u"}}));
        let v: Value = serde_json::from_slice(
            &refusal(&b, &refused(None), OnBlock::ToolResult, false)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["error"]["code"], POLICY_DENIED);
    }

    #[test]
    fn a_batch_is_refused_whole_in_its_shape() {
        let b = body(json!([
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ok"}},
            {"jsonrpc":"2.0","method":"notifications/progress"},
            {"jsonrpc":"2.0","id":"two","method":"tools/call","params":{"name":"bad"}}
        ]));
        let a = refusal(&b, &refused(Some(2)), OnBlock::Error, false).unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 2, "no answer for the notification");
        assert_eq!(
            (arr[0]["id"].clone(), arr[1]["id"].clone()),
            (json!(1), json!("two"))
        );
        assert!(arr[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message 2 was denied"));
        assert_eq!(arr[0]["error"]["data"]["denied_index"], 2);
    }

    #[test]
    fn sse_answers_one_event_per_response() {
        let b = body(json!([
            {"jsonrpc":"2.0","id":1,"method":"ping"},
            {"jsonrpc":"2.0","id":2,"method":"ping"}
        ]));
        let a = refusal(&b, &refused(Some(0)), OnBlock::Error, true).unwrap();
        assert_eq!(a.content_type, "text/event-stream");
        let text = String::from_utf8(a.body).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2);
        for (e, id) in events.iter().zip([1, 2]) {
            let data = e.strip_prefix("event: message\ndata: ").unwrap();
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["id"], id);
        }
    }

    #[test]
    fn notifications_alone_get_no_jsonrpc_answer() {
        let b = body(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        assert_eq!(refusal(&b, &refused(None), OnBlock::Error, false), None);
    }

    #[test]
    fn error_responses_echo_ids_exactly() {
        let v = error_response(
            Some(&Id::Num(serde_json::Number::from_f64(1.5).unwrap())),
            PARSE_ERROR,
            "x",
            None,
        );
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":1.5,"error":{"code":-32700,"message":"x"}})
        );
        let v = error_response(None, INVALID_REQUEST, "y", Some(json!({"a":1})));
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["data"], json!({"a":1}));
    }
}
