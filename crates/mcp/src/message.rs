//! JSON-RPC 2.0 messages as MCP's streamable HTTP transport carries them in a POST body: one
//! message or a batch (an array, allowed by the 2025-03-26 revision), each a request, a
//! notification or a response.
//!
//! Parsing is strict and bounded (size, nesting, batch length; duplicated keys refused, see
//! [`crate::json`]). Method names are kept exactly as sent: JSON-RPC is case-sensitive, so
//! `Tools/Call` or a look-alike in another script is simply another method — the tool name is
//! read only for the exact `tools/call`, and policy sees the raw method.

use crate::json::{parse_strict, JsonError};
use serde_json::{Map, Value};

/// The method of a tool call.
pub const TOOLS_CALL: &str = "tools/call";
/// The method listing tools.
pub const TOOLS_LIST: &str = "tools/list";

/// Methods the MCP revisions up to 2026-07-28 define (requests and notifications, both
/// directions). The gateway does not refuse others itself: policy sees the raw method and the
/// shipped policies deny methods outside their own list.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Bounds on what is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, bytes.
    pub max_body: usize,
    /// Deepest nesting (the body itself is level 1).
    pub max_depth: usize,
    /// Most messages in a batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
            max_depth: 64,
            max_batch: 64,
        }
    }
}

/// A JSON-RPC id: a string or a number (MCP forbids `null` for requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A string id.
    Str(String),
    /// A number id, as its JSON text (`1` and `1.0` are different ids).
    Num(serde_json::Number),
}

impl Id {
    /// The id as a JSON value (echoed in answers).
    pub fn to_value(&self) -> Value {
        match self {
            Id::Str(s) => Value::String(s.clone()),
            Id::Num(n) => Value::Number(n.clone()),
        }
    }

    /// The id as its JSON text: the key responses are matched by.
    pub fn key(&self) -> String {
        self.to_value().to_string()
    }

    /// Reads an id value; `None` for other JSON types (`null`, booleans, arrays, objects).
    pub fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(Id::Str(s.clone())),
            Value::Number(n) => Some(Id::Num(n.clone())),
            _ => None,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A method call expecting a response (has an id).
    Request,
    /// A method call without an id: no response.
    Notification,
    /// A client's answer to a server request (`result` or `error`).
    Response,
}

impl Kind {
    /// `request`, `notification` or `response` (policy input and audit).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Notification => "notification",
            Kind::Response => "response",
        }
    }
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// Its id (requests and responses).
    pub id: Option<Id>,
    /// The method exactly as sent (requests and notifications).
    pub method: Option<String>,
    /// `params`, when given (an object or an array).
    pub params: Option<Value>,
    /// The tool called: `params.name` of an exact `tools/call`.
    pub tool: Option<String>,
    /// What `Mcp-Name` mirrors: `params.name` of `tools/call` and `prompts/get`,
    /// `params.uri` of `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
    pub name: Option<String>,
}

impl Message {
    /// `params.arguments` (tool and prompt arguments), when present.
    pub fn arguments(&self) -> Option<&Value> {
        self.params.as_ref()?.get("arguments")
    }

    /// Whether this is an exact `tools/call`.
    pub fn is_tool_call(&self) -> bool {
        self.method.as_deref() == Some(TOOLS_CALL)
    }

    /// Whether this is an exact `tools/list` request.
    pub fn is_tools_list(&self) -> bool {
        self.kind == Kind::Request && self.method.as_deref() == Some(TOOLS_LIST)
    }
}

/// A POST body: one message, or a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// Whether the body was an array.
    pub batch: bool,
    /// The messages, in order (one unless `batch`).
    pub messages: Vec<Message>,
}

impl Body {
    /// The ids of the requests, in order.
    pub fn request_ids(&self) -> impl Iterator<Item = &Id> {
        self.messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .filter_map(|m| m.id.as_ref())
    }
}

/// Why a body cannot be governed. Each maps to a JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than `max_body`.
    #[error("the MCP request body exceeds {0} bytes")]
    TooLarge(usize),
    /// Not strict JSON.
    #[error("the MCP request body is {0}")]
    Json(JsonError),
    /// JSON, but not a JSON-RPC 2.0 message or batch.
    #[error("invalid JSON-RPC: {0}")]
    Invalid(String),
    /// A batch longer than `max_batch`.
    #[error("the batch has {len} messages; at most {max} are accepted")]
    BatchTooLarge {
        /// Messages sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Params a governed method needs are missing or of the wrong type.
    #[error("invalid params: {0}")]
    InvalidParams(String),
}

impl ParseError {
    /// The JSON-RPC error code answered.
    pub fn rpc_code(&self) -> i64 {
        match self {
            ParseError::Json(_) => crate::codes::PARSE_ERROR,
            ParseError::InvalidParams(_) => crate::codes::INVALID_PARAMS,
            ParseError::TooLarge(_) | ParseError::Invalid(_) | ParseError::BatchTooLarge { .. } => {
                crate::codes::INVALID_REQUEST
            }
        }
    }

    /// The machine code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooLarge(_) => "mcp_body_too_large",
            ParseError::Json(_) => "mcp_parse_error",
            ParseError::Invalid(_) | ParseError::BatchTooLarge { .. } => "mcp_invalid_request",
            ParseError::InvalidParams(_) => "mcp_invalid_params",
        }
    }
}

/// Parses a POST body within `limits`.
pub fn parse_body(bytes: &[u8], limits: &Limits) -> Result<Body, ParseError> {
    if bytes.len() > limits.max_body {
        return Err(ParseError::TooLarge(limits.max_body));
    }
    let v = parse_strict(bytes, limits.max_depth).map_err(ParseError::Json)?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Invalid("an empty batch".into()));
            }
            if items.len() > limits.max_batch {
                return Err(ParseError::BatchTooLarge {
                    len: items.len(),
                    max: limits.max_batch,
                });
            }
            let messages = items
                .into_iter()
                .enumerate()
                .map(|(i, m)| message(m).map_err(|e| at_index(e, i)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Body {
                batch: true,
                messages,
            })
        }
        other => Ok(Body {
            batch: false,
            messages: vec![message(other)?],
        }),
    }
}

fn at_index(e: ParseError, i: usize) -> ParseError {
    match e {
        ParseError::Invalid(why) => ParseError::Invalid(format!("batch message {i}: {why}")),
        ParseError::InvalidParams(why) => {
            ParseError::InvalidParams(format!("batch message {i}: {why}"))
        }
        other => other,
    }
}

const MESSAGE_FIELDS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];

fn message(v: Value) -> Result<Message, ParseError> {
    let Value::Object(mut o) = v else {
        return Err(ParseError::Invalid(
            "a message must be a JSON object".into(),
        ));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\"".into()));
    }
    if let Some(k) = o.keys().find(|k| !MESSAGE_FIELDS.contains(&k.as_str())) {
        return Err(ParseError::Invalid(format!("unknown member {k:?}")));
    }
    let id = match o.get("id") {
        None => None,
        Some(v) => Some(
            Id::from_value(v)
                .ok_or_else(|| ParseError::Invalid("\"id\" must be a string or a number".into()))?,
        ),
    };
    let has_result = o.contains_key("result");
    let has_error = o.contains_key("error");
    let method = match o.remove("method") {
        None => None,
        Some(Value::String(m)) => Some(m),
        Some(_) => return Err(ParseError::Invalid("\"method\" must be a string".into())),
    };
    let Some(method) = method else {
        // A response: an id and exactly one of result / error, nothing else.
        if id.is_none() || has_result == has_error || o.contains_key("params") {
            return Err(ParseError::Invalid(
                "a message needs a method, or an id with exactly one of result and error".into(),
            ));
        }
        return Ok(Message {
            kind: Kind::Response,
            id,
            method: None,
            params: None,
            tool: None,
            name: None,
        });
    };
    if has_result || has_error {
        return Err(ParseError::Invalid(
            "a request cannot carry result or error".into(),
        ));
    }
    let params = match o.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => {
            return Err(ParseError::Invalid(
                "\"params\" must be an object or an array".into(),
            ))
        }
    };
    let obj = params.as_ref().and_then(Value::as_object);
    let (tool, name) = governed_names(&method, obj)?;
    Ok(Message {
        kind: if id.is_some() {
            Kind::Request
        } else {
            Kind::Notification
        },
        id,
        method: Some(method),
        params,
        tool,
        name,
    })
}

/// The tool and the `Mcp-Name` target of a method whose names policy and headers rely on;
/// such a method must name them with strings.
fn governed_names(
    method: &str,
    params: Option<&Map<String, Value>>,
) -> Result<(Option<String>, Option<String>), ParseError> {
    let field = match method {
        TOOLS_CALL | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return Ok((None, None)),
    };
    let value = params.and_then(|p| p.get(field));
    let Some(Value::String(s)) = value else {
        return Err(ParseError::InvalidParams(format!(
            "{method} needs params.{field} as a string"
        )));
    };
    if method == TOOLS_CALL {
        match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(ParseError::InvalidParams(
                    "tools/call params.arguments must be an object".into(),
                ))
            }
        }
    }
    let tool = (method == TOOLS_CALL).then(|| s.clone());
    Ok((tool, Some(s.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> Result<Body, ParseError> {
        parse_body(v.to_string().as_bytes(), &Limits::default())
    }

    fn one(v: Value) -> Message {
        let b = parse(&v).unwrap();
        assert!(!b.batch);
        b.messages.into_iter().next().unwrap()
    }

    #[test]
    fn reads_a_tool_call() {
        let m = one(json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"read_file","arguments":{"path":"/srv/a"}}}));
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id, Some(Id::Num(7.into())));
        assert_eq!(m.tool.as_deref(), Some("read_file"));
        assert_eq!(m.name.as_deref(), Some("read_file"));
        assert_eq!(m.arguments(), Some(&json!({"path":"/srv/a"})));
        assert!(m.is_tool_call());
    }

    #[test]
    fn kinds_and_names() {
        let n = one(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        assert_eq!((n.kind, n.id.clone()), (Kind::Notification, None));
        let r = one(json!({"jsonrpc":"2.0","id":"s1","result":{}}));
        assert_eq!((r.kind, r.method.clone()), (Kind::Response, None));
        let e = one(json!({"jsonrpc":"2.0","id":"s1","error":{"code":1,"message":"x"}}));
        assert_eq!(e.kind, Kind::Response);
        let read = one(json!({"jsonrpc":"2.0","id":1,"method":"resources/read",
            "params":{"uri":"file:///etc/passwd"}}));
        assert_eq!(read.name.as_deref(), Some("file:///etc/passwd"));
        assert_eq!(read.tool, None);
        let prompt = one(json!({"jsonrpc":"2.0","id":1,"method":"prompts/get",
            "params":{"name":"p","arguments":{"a":"b"}}}));
        assert_eq!(
            (prompt.name.as_deref(), prompt.tool.as_deref()),
            (Some("p"), None)
        );
        let list = one(json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
        assert!(list.is_tools_list());
    }

    #[test]
    fn ids_of_every_json_type() {
        for ok in [
            json!("a"),
            json!(""),
            json!(0),
            json!(-5),
            json!(1.5),
            json!(1e300),
        ] {
            let m = one(json!({"jsonrpc":"2.0","id":ok.clone(),"method":"ping"}));
            assert_eq!(m.id.unwrap().to_value(), ok);
        }
        for bad in [json!(null), json!(true), json!([1]), json!({"a":1})] {
            let e = parse(&json!({"jsonrpc":"2.0","id":bad,"method":"ping"})).unwrap_err();
            assert_eq!(e.rpc_code(), crate::codes::INVALID_REQUEST, "{bad}");
        }
        // 1 and "1" are different ids.
        assert_ne!(Id::Num(1.into()).key(), Id::Str("1".into()).key());
    }

    #[test]
    fn methods_are_exact() {
        for variant in [
            "Tools/Call",
            "TOOLS/CALL",
            "tools/call ",
            " tools/call",
            "tools/\u{0441}all", // Cyrillic es
            "tools\u{2215}call", // division slash
            "tools/call\u{0}",
            "tools/ca\u{200b}ll",
        ] {
            let m = one(json!({"jsonrpc":"2.0","id":1,"method":variant,
                "params":{"name":"delete_repo","arguments":{}}}));
            assert_eq!(m.tool, None, "{variant:?} is not a tool call");
            assert!(!m.is_tool_call());
            assert!(!KNOWN_METHODS.contains(&m.method.as_deref().unwrap()));
            assert_eq!(m.method.as_deref(), Some(variant), "kept raw");
        }
    }

    #[test]
    fn batches() {
        let b = parse(&json!([
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
            {"jsonrpc":"2.0","id":"x","method":"tools/list"}
        ]))
        .unwrap();
        assert!(b.batch);
        assert_eq!(b.messages.len(), 3);
        let ids: Vec<String> = b.request_ids().map(Id::key).collect();
        assert_eq!(ids, ["1", "\"x\""]);
        assert!(matches!(parse(&json!([])), Err(ParseError::Invalid(_))));
        let many: Vec<Value> = (0..65)
            .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"ping"}))
            .collect();
        assert_eq!(
            parse(&Value::Array(many)).unwrap_err(),
            ParseError::BatchTooLarge { len: 65, max: 64 }
        );
        let e = parse(&json!([{"jsonrpc":"2.0","id":1,"method":"ping"}, 5])).unwrap_err();
        assert_eq!(
            e,
            ParseError::Invalid("batch message 1: a message must be a JSON object".into())
        );
        // A batch inside a batch is not a message.
        assert!(parse(&json!([[{"jsonrpc":"2.0","id":1,"method":"ping"}]])).is_err());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let cases = [
            json!({"id":1,"method":"ping"}),
            json!({"jsonrpc":"1.0","id":1,"method":"ping"}),
            json!({"jsonrpc":2.0,"id":1,"method":"ping"}),
            json!({"jsonrpc":"2.0","id":1,"method":5}),
            json!({"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}),
            json!({"jsonrpc":"2.0","id":1,"method":"ping","result":{}}),
            json!({"jsonrpc":"2.0","id":1}),
            json!({"jsonrpc":"2.0","result":{}}),
            json!({"jsonrpc":"2.0","id":1,"result":{},"error":{}}),
            json!({"jsonrpc":"2.0","id":1,"method":"ping","extra":1}),
            json!("tools/call"),
            json!(null),
        ];
        for c in cases {
            assert!(
                matches!(parse(&c), Err(ParseError::Invalid(_))),
                "{c} must be refused"
            );
        }
        for c in [
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call"}),
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}),
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}),
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                   "params":{"name":"a","arguments":[1]}}),
            json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":null}}),
        ] {
            assert_eq!(
                parse(&c).unwrap_err().rpc_code(),
                crate::codes::INVALID_PARAMS
            );
        }
    }

    #[test]
    fn bounds_and_ambiguity() {
        let limits = Limits {
            max_body: 64,
            ..Limits::default()
        };
        let big = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"p":"x".repeat(64)}});
        assert_eq!(
            parse_body(big.to_string().as_bytes(), &limits),
            Err(ParseError::TooLarge(64))
        );
        let dup = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"delete_repo"}}"#;
        assert!(matches!(
            parse_body(dup, &Limits::default()),
            Err(ParseError::Json(JsonError::DuplicateKey(_)))
        ));
        let mut nested = Value::from(1);
        for _ in 0..100 {
            nested = json!({ "a": nested });
        }
        let deep = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"t","arguments":nested}});
        assert_eq!(
            parse(&deep).unwrap_err(),
            ParseError::Json(JsonError::TooDeep(64))
        );
        assert_eq!(
            parse_body(b"\x00\x01garbage", &Limits::default())
                .unwrap_err()
                .rpc_code(),
            crate::codes::PARSE_ERROR
        );
    }
}
