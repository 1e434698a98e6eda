//! Reading a server's answer, on a copy: for each request id, whether it got a result (and
//! whether that result is a tool error, `isError: true`) or an error; and the tool names of a
//! `tools/list` answer, which bound the tool labels of metrics. JSON answers are read whole
//! (bounded); SSE answers event by event. The scan never changes or delays the answer.

use crate::message::Id;
use crate::sse::{Event, SseParser};
use serde_json::Value;
use std::collections::HashMap;

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result; `is_error` is the result's `isError` (tool errors).
    Result {
        /// `result.isError == true`.
        is_error: bool,
    },
    /// A JSON-RPC error with this code.
    Error {
        /// `error.code` (0 when absent or not an integer).
        code: i64,
    },
}

impl Outcome {
    /// Whether the call failed (a tool error or a JSON-RPC error).
    pub fn failed(self) -> bool {
        match self {
            Outcome::Result { is_error } => is_error,
            Outcome::Error { .. } => true,
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Outcome per request id ([`Id::key`]).
    pub outcomes: HashMap<String, Outcome>,
    /// Tool names listed in answers to `tools/list` requests.
    pub tools: Vec<String>,
}

/// Most tool names collected from one answer.
const MAX_LISTED: usize = 4096;

#[derive(Debug)]
enum Mode {
    Json { buf: Vec<u8>, over: bool },
    Sse(SseParser),
    Off,
}

/// An incremental scan of one answer.
#[derive(Debug)]
pub struct ResponseScan {
    mode: Mode,
    max: usize,
    list_ids: Vec<String>,
    result: ScanResult,
}

impl ResponseScan {
    /// A scan of an answer with these headers; `list_ids` are the ids of the `tools/list`
    /// requests it answers. Encoded (compressed) and other content types are not read.
    pub fn new(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        max: usize,
        list_ids: &[Id],
    ) -> Self {
        let mode = match (media_type(content_type).as_deref(), content_encoding) {
            (_, Some(e)) if !e.trim().eq_ignore_ascii_case("identity") => Mode::Off,
            (Some("application/json"), _) => Mode::Json {
                buf: Vec::new(),
                over: false,
            },
            (Some("text/event-stream"), _) => Mode::Sse(SseParser::new(max, false)),
            _ => Mode::Off,
        };
        Self {
            mode,
            max,
            list_ids: list_ids.iter().map(Id::key).collect(),
            result: ScanResult::default(),
        }
    }

    /// Reads the next chunk of the answer.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Json { buf, over } => {
                if *over {
                    return;
                }
                if buf.len() + chunk.len() > self.max {
                    *over = true;
                    *buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Mode::Sse(p) => {
                let mut events: Vec<Event> = Vec::new();
                p.feed(chunk, &mut events);
                for e in events {
                    if let Some(d) = e.data {
                        read_messages(&d, &self.list_ids, &mut self.result);
                    }
                }
            }
            Mode::Off => {}
        }
    }

    /// What the answer said (SSE events never completed are not counted).
    pub fn finish(mut self) -> ScanResult {
        if let Mode::Json { buf, over: false } = &self.mode {
            read_messages(buf, &self.list_ids, &mut self.result);
        }
        self.result
    }
}

/// The media type of a `Content-Type`, lower-case, without parameters.
pub fn media_type(content_type: Option<&str>) -> Option<String> {
    content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

fn read_messages(bytes: &[u8], list_ids: &[String], out: &mut ScanResult) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    match v {
        Value::Array(items) => items.iter().for_each(|m| read_one(m, list_ids, out)),
        m => read_one(&m, list_ids, out),
    }
}

fn read_one(m: &Value, list_ids: &[String], out: &mut ScanResult) {
    let Some(id) = m.get("id").and_then(Id::from_value) else {
        return;
    };
    if m.get("method").is_some() {
        return; // a server request, not an answer
    }
    let key = id.key();
    if let Some(r) = m.get("result") {
        let is_error = r.get("isError").and_then(Value::as_bool).unwrap_or(false);
        if list_ids.contains(&key) {
            out.tools.extend(
                tool_names(r)
                    .take(MAX_LISTED.saturating_sub(out.tools.len()))
                    .map(str::to_owned),
            );
        }
        out.outcomes.insert(key, Outcome::Result { is_error });
    } else if let Some(e) = m.get("error") {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        out.outcomes.insert(key, Outcome::Error { code });
    }
}

/// The names of the tools in a `tools/list` result.
pub(crate) fn tool_names(result: &Value) -> impl Iterator<Item = &str> {
    result
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(ct: &str, chunks: &[&[u8]], list: &[Id]) -> ScanResult {
        let mut s = ResponseScan::new(Some(ct), None, 1 << 20, list);
        for c in chunks {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn json_answers() {
        let body = json!([
            {"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}},
            {"jsonrpc":"2.0","id":"b","result":{"content":[]}},
            {"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}
        ])
        .to_string();
        let (a, b) = body.as_bytes().split_at(17);
        let r = scan("application/json; charset=utf-8", &[a, b], &[]);
        assert_eq!(r.outcomes["1"], Outcome::Result { is_error: true });
        assert_eq!(r.outcomes["\"b\""], Outcome::Result { is_error: false });
        assert_eq!(r.outcomes["3"], Outcome::Error { code: -32601 });
        assert!(r.outcomes["3"].failed() && !r.outcomes["\"b\""].failed());
    }

    #[test]
    fn sse_answers_split_at_every_byte() {
        let stream = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\n\
event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"l\",\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\n\n\
data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"isError\":true,\"content\":[]}}\n\n";
        let list = [Id::Str("l".into())];
        let whole = scan("text/event-stream", &[stream], &list);
        assert_eq!(whole.tools, ["a", "b"]);
        assert_eq!(whole.outcomes["9"], Outcome::Result { is_error: true });
        assert_eq!(whole.outcomes.len(), 2);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan("text/event-stream", &bytes, &list), whole);
    }

    #[test]
    fn unread_answers() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let mut s = ResponseScan::new(Some("application/json"), Some("gzip"), 1 << 20, &[]);
        s.feed(body);
        assert!(s.finish().outcomes.is_empty(), "compressed: not read");
        assert!(scan("text/plain", &[body], &[]).outcomes.is_empty());
        let mut s = ResponseScan::new(Some("application/json"), None, 8, &[]);
        s.feed(body);
        assert!(s.finish().outcomes.is_empty(), "over the bound: not read");
        assert!(scan("application/json", &[b"{garbage"], &[])
            .outcomes
            .is_empty());
    }
}
