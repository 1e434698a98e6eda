//! `tools/list` filtering (`mcp.filter_tools_list`): the tools an agent may not call are
//! removed from the server's answer, JSON or SSE. This is the one place the gateway rewrites
//! an answer; an answer with nothing to remove is passed on byte for byte, and so is every SSE
//! event other than the `tools/list` result. What cannot be read within the bounds is not
//! passed on (fail closed): the request gets a JSON-RPC error instead of an unfiltered list.

use crate::answer::error_response;
use crate::message::Id;
use crate::scan::tool_names;
use crate::sse::{Event, SseParser};
use serde_json::Value;

/// JSON-RPC internal error: the gateway could not filter the answer.
pub const FILTER_FAILED: i64 = -32603;
const FILTER_FAILED_TEXT: &str =
    "the portcullis gateway could not read the tools/list answer to filter it";

/// What a filter did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The answer to send.
    pub body: Vec<u8>,
    /// Tools removed.
    pub removed: usize,
    /// Every tool the server listed (removed ones included), for the metric labels.
    pub listed: Vec<String>,
}

/// Removes the tools `keep` refuses from `result.tools`; returns how many were removed.
pub fn filter_result(result: &mut Value, keep: &mut dyn FnMut(&str) -> bool) -> usize {
    let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = tools.len();
    // A tool without a string name cannot be called by name: it cannot be allowed either.
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_some_and(&mut *keep)
    });
    before - tools.len()
}

/// Filters a JSON answer (one response or a batch) to requests `list_ids`. An answer that is
/// not JSON, or over `max` bytes, becomes a JSON-RPC error for each listed id.
pub fn filter_json(
    body: &[u8],
    list_ids: &[Id],
    max: usize,
    keep: &mut dyn FnMut(&str) -> bool,
) -> Filtered {
    let parsed = (body.len() <= max)
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten();
    let Some(mut v) = parsed else {
        return unfilterable(list_ids, false);
    };
    let keys: Vec<String> = list_ids.iter().map(Id::key).collect();
    let mut out = Filtered::default();
    let messages: Vec<&mut Value> = match &mut v {
        Value::Array(items) => items.iter_mut().collect(),
        one => vec![one],
    };
    for m in messages {
        out.removed += filter_message(m, &keys, &mut out.listed, keep);
    }
    out.body = if out.removed == 0 {
        body.to_vec()
    } else {
        v.to_string().into_bytes()
    };
    out
}

fn filter_message(
    m: &mut Value,
    keys: &[String],
    listed: &mut Vec<String>,
    keep: &mut dyn FnMut(&str) -> bool,
) -> usize {
    let is_list = m
        .get("id")
        .and_then(Id::from_value)
        .is_some_and(|id| keys.contains(&id.key()))
        && m.get("method").is_none();
    if !is_list {
        return 0;
    }
    let Some(result) = m.get_mut("result") else {
        return 0;
    };
    listed.extend(tool_names(result).map(str::to_owned));
    filter_result(result, keep)
}

/// The answer when the list cannot be filtered: an error for every listed id.
pub fn unfilterable(list_ids: &[Id], sse: bool) -> Filtered {
    let responses: Vec<Value> = list_ids
        .iter()
        .map(|id| error_response(Some(id), FILTER_FAILED, FILTER_FAILED_TEXT, None))
        .collect();
    let batch = responses.len() > 1;
    Filtered {
        body: crate::answer::encode(responses, batch, sse).body,
        removed: 0,
        listed: Vec::new(),
    }
}

/// Filters an SSE answer as it streams: every event passes through as sent, except the
/// result of a listed request with tools to remove, which is re-sent with its other fields
/// (`event`, `id`, ...) and the filtered data. An event over the bound ends the stream with an
/// error for the listed ids.
#[derive(Debug)]
pub struct SseFilter {
    parser: SseParser,
    keys: Vec<String>,
    ids: Vec<Id>,
    closed: bool,
    removed: usize,
    listed: Vec<String>,
}

impl SseFilter {
    /// A filter of events up to `max_event` bytes, for requests `list_ids`.
    pub fn new(list_ids: &[Id], max_event: usize) -> Self {
        Self {
            parser: SseParser::new(max_event, true),
            keys: list_ids.iter().map(Id::key).collect(),
            ids: list_ids.to_vec(),
            closed: false,
            removed: 0,
            listed: Vec::new(),
        }
    }

    /// The bytes to send for `chunk` (possibly none until an event completes).
    pub fn feed(&mut self, chunk: &[u8], keep: &mut dyn FnMut(&str) -> bool) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut events: Vec<Event> = Vec::new();
        self.parser.feed(chunk, &mut events);
        let mut out = Vec::new();
        for e in events {
            if self.closed {
                break;
            }
            if e.oversized {
                self.close(&mut out);
                continue;
            }
            out.extend_from_slice(&self.event(e, keep));
        }
        if !self.closed && self.parser.in_oversized_event() {
            self.close(&mut out);
        }
        out
    }

    /// The tools listed by the events fed so far and not taken yet (every name, removed ones
    /// included), so they are known before the filtered event reaches the client: a client
    /// that stops reading at its answer closes the stream before it ends.
    pub fn take_listed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.listed)
    }

    /// The bytes left at the end of the stream (an unfinished event, passed on as sent).
    pub fn finish(self) -> (Vec<u8>, usize, Vec<String>) {
        let rest = if self.closed {
            Vec::new()
        } else {
            self.parser.finish()
        };
        (rest, self.removed, self.listed)
    }

    /// Whether the filter gave up on the stream (an oversized event).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.closed = true;
        out.extend_from_slice(&unfilterable(&self.ids, true).body);
    }

    fn event(&mut self, e: Event, keep: &mut dyn FnMut(&str) -> bool) -> Vec<u8> {
        let Some(data) = &e.data else {
            return e.raw;
        };
        let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
            return e.raw;
        };
        let removed = match &mut v {
            Value::Array(items) => items
                .iter_mut()
                .map(|m| filter_message(m, &self.keys, &mut self.listed, keep))
                .sum(),
            one => filter_message(one, &self.keys, &mut self.listed, keep),
        };
        if removed == 0 {
            return e.raw;
        }
        self.removed += removed;
        let lead = e.raw.get(..e.lead).unwrap_or_default();
        let mut out = lead.to_vec();
        out.extend(rewrite_event(
            e.raw.get(e.lead..).unwrap_or_default(),
            &v.to_string(),
        ));
        out
    }
}

/// The event `raw` with its `data` lines replaced by one line of `data`.
fn rewrite_event(raw: &[u8], data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let text = String::from_utf8_lossy(raw);
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or(line);
        if name == "data" || name.trim_start_matches('\u{feff}') == "data" {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only_safe(name: &str) -> bool {
        name.starts_with("safe_")
    }

    fn list_answer(id: Value) -> Value {
        json!({"jsonrpc":"2.0","id":id,"result":{"tools":[
            {"name":"safe_read","inputSchema":{"type":"object"}},
            {"name":"delete_repository","inputSchema":{"type":"object"}},
            {"inputSchema":{}},
            {"name":"safe_list"}
        ],"nextCursor":"c2"}})
    }

    #[test]
    fn json_lists_are_filtered() {
        let body = list_answer(json!(5)).to_string();
        let f = filter_json(
            body.as_bytes(),
            &[Id::Num(5.into())],
            1 << 20,
            &mut only_safe,
        );
        assert_eq!(f.removed, 2);
        assert_eq!(f.listed, ["safe_read", "delete_repository", "safe_list"]);
        let v: Value = serde_json::from_slice(&f.body).unwrap();
        let names: Vec<&str> = tool_names(&v["result"]).collect();
        assert_eq!(names, ["safe_read", "safe_list"]);
        assert_eq!(v["result"]["nextCursor"], "c2");
        assert_eq!(v["id"], 5);
    }

    #[test]
    fn nothing_to_remove_keeps_the_bytes() {
        let body =
            b"{ \"jsonrpc\":\"2.0\", \"id\":1, \"result\":{\"tools\":[{\"name\":\"safe_a\"}]} }";
        let f = filter_json(body, &[Id::Num(1.into())], 1 << 20, &mut only_safe);
        assert_eq!((f.body.as_slice(), f.removed), (&body[..], 0));
        // Another id's answer is not touched.
        let other = list_answer(json!(2)).to_string();
        let f = filter_json(
            other.as_bytes(),
            &[Id::Num(1.into())],
            1 << 20,
            &mut only_safe,
        );
        assert_eq!(f.body, other.as_bytes());
    }

    #[test]
    fn unreadable_lists_fail_closed() {
        for (body, max) in [
            (&b"{not json"[..], 1 << 20),
            (&b"{\"jsonrpc\":\"2.0\"}"[..], 4),
        ] {
            let f = filter_json(body, &[Id::Str("l".into())], max, &mut only_safe);
            let v: Value = serde_json::from_slice(&f.body).unwrap();
            assert_eq!(v["id"], "l");
            assert_eq!(v["error"]["code"], FILTER_FAILED);
            assert!(!String::from_utf8_lossy(&f.body).contains("delete"));
        }
    }

    fn run_sse(chunks: &[&[u8]], max: usize) -> (Vec<u8>, usize) {
        let mut f = SseFilter::new(&[Id::Str("l".into())], max);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c, &mut only_safe));
        }
        let (rest, removed, _) = f.finish();
        out.extend(rest);
        (out, removed)
    }

    #[test]
    fn sse_lists_are_filtered_at_every_split() {
        let progress = b": keep-alive\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\n";
        let list = format!(
            "event: message\nid: 7\ndata: {}\n\n",
            list_answer(json!("l"))
        );
        let mut stream = progress.to_vec();
        stream.extend_from_slice(list.as_bytes());
        stream.extend_from_slice(b"data: tail-unfinished");
        let (whole, removed) = run_sse(&[&stream], 1 << 20);
        assert_eq!(removed, 2);
        assert!(
            whole.starts_with(progress),
            "other events pass byte for byte"
        );
        assert!(whole.ends_with(b"data: tail-unfinished"));
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(!text.contains("delete_repository"));
        assert!(text.contains("event: message\nid: 7\ndata: {"));
        let mut p = SseParser::new(1 << 20, false);
        let mut ev = Vec::new();
        p.feed(&whole, &mut ev);
        let v: Value = serde_json::from_slice(ev[1].data.as_ref().unwrap()).unwrap();
        assert_eq!(
            tool_names(&v["result"]).collect::<Vec<_>>(),
            ["safe_read", "safe_list"]
        );
        for i in 0..=stream.len() {
            let (out, n) = run_sse(&[&stream[..i], &stream[i..]], 1 << 20);
            assert_eq!((out.as_slice(), n), (whole.as_slice(), 2), "split at {i}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run_sse(&bytes, 1 << 20).0, whole);
    }

    #[test]
    fn listed_tools_are_known_as_soon_as_their_event_is_filtered() {
        let list = format!("data: {}\n\n", list_answer(json!("l")));
        let mut f = SseFilter::new(&[Id::Str("l".into())], 1 << 20);
        let out = f.feed(list.as_bytes(), &mut only_safe);
        assert!(!out.is_empty());
        assert_eq!(
            f.take_listed(),
            ["safe_read", "delete_repository", "safe_list"]
        );
        assert!(f.take_listed().is_empty());
        assert!(f.finish().2.is_empty());
    }

    #[test]
    fn an_oversized_sse_event_fails_closed() {
        let list = format!("data: {}\n\n", list_answer(json!("l")));
        let (out, _) = run_sse(&[list.as_bytes()], 64);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("delete_repository") && !text.contains("safe_read"));
        assert!(text.contains(&FILTER_FAILED.to_string()));
        assert!(text.starts_with("event: message\ndata: {"));
    }
}
