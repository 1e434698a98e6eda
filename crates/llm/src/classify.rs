//! Request classifier: provider by host, API by method and path, and the
//! governance-relevant fields of the JSON body.

use crate::format::{Api, Format};
use crate::provider::{ProviderEntry, ProviderError, Providers};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// At most this many tool names are recorded per request.
pub const MAX_TOOLS: usize = 128;
/// A tool name longer than this is cut (at a character boundary).
pub const MAX_TOOL_NAME: usize = 128;

/// The parts of a request head the classifier needs.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Target host (name or IP literal, brackets allowed).
    pub host: &'a str,
    /// Target port (explicit or the scheme's default).
    pub port: u16,
    /// Path, with or without the query string.
    pub path: &'a str,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
}

/// Why the body fields are absent from a [`Classification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// The caller did not buffer the body (streamed, or over its limit).
    BodyNotBuffered,
    /// The body is larger than `max_inspect_body`.
    BodyTooLarge,
    /// The request has an empty body.
    BodyEmpty,
    /// The `Content-Type` is not JSON (e.g. multipart uploads).
    NotJson,
    /// The body is not valid JSON, or is JSON with a duplicated field the
    /// classifier reads (ambiguous: refused rather than guessed).
    InvalidJson,
    /// The body is JSON but not an object.
    NotObject,
}

/// What the gateway knows about an LLM request; feeds the policy input `llm`
/// and the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// Provider name from the table (`openai`, `anthropic`, or an operator's).
    pub provider: Arc<str>,
    /// Wire format of the request (from the API when recognised, else the
    /// provider's).
    pub format: Format,
    /// The recognised API, if the method and path match one.
    pub api: Option<Api>,
    /// `model` from the body, or the Azure deployment when the path names one.
    pub model: Option<String>,
    /// Azure deployment name from `/openai/deployments/{d}/...`.
    pub deployment: Option<String>,
    /// `stream` from the body (false when absent or not a boolean).
    pub stream: bool,
    /// `stream_options.include_usage` from the body (OpenAI chat streams carry
    /// usage only when this is true).
    pub stream_include_usage: bool,
    /// The largest of `max_tokens`, `max_completion_tokens`, `max_output_tokens`.
    pub max_tokens: Option<u64>,
    /// Tool names (`function.name`, `name`, or the built-in tool `type`).
    pub tools: Vec<String>,
    /// Whether the JSON body was parsed.
    pub body_inspected: bool,
    /// Why body fields are absent.
    pub note: Option<Note>,
}

impl Classification {
    /// The error envelope to add to gateway errors answered to this request.
    pub fn error_envelope(&self) -> portcullis_core::ErrorEnvelope {
        crate::format::error_envelope(self.format)
    }
}

/// Classifies requests against a provider table. Cheap to share (`Arc`) and
/// to rebuild on config reload.
///
/// # Path rules
/// Recognition is deliberately liberal (a false positive only costs a body
/// inspection; a false negative would let a request dodge model policies):
/// the method must be `POST` (any case); the query string is ignored; empty
/// segments (`//`) and one trailing `/` are ignored; segments compare
/// case-insensitively; and the API is chosen by the **last segments** of the
/// path, whatever prefix precedes them, so OpenAI-compatible hosts that mount
/// the API elsewhere are recognised: `/v1/chat/completions`,
/// `/chat/completions` (Perplexity, DeepSeek), `/openai/v1/chat/completions`
/// (Groq, Azure v1), `/api/v1/...` (OpenRouter), `/v1beta/openai/...`.
///
/// | last segments | API |
/// |---|---|
/// | `chat/completions` | `chat.completions` |
/// | `responses` | `responses` |
/// | `messages` | `messages` |
/// | `embeddings` | `embeddings` |
///
/// Azure deployments (`/openai/deployments/{d}/chat/completions?api-version=`)
/// match the same way; the deployment name `{d}` is recorded as `deployment`
/// and **is** the model (Azure routes by deployment and ignores a `model` in
/// the body).
/// Retrieval and sub-resources (`/v1/responses/{id}`, `/v1/messages/count_tokens`,
/// `/v1/messages/batches`) are not generation calls and get `api = None`.
///
/// The API decides the wire format when recognised (`messages` → Anthropic,
/// the others → OpenAI), since OpenAI-compatible servers such as vLLM also
/// serve `/v1/messages` and Anthropic serves an OpenAI-compatible
/// `/v1/chat/completions`; otherwise the provider's configured format applies.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    providers: Providers,
}

impl Classifier {
    /// A classifier over the built-ins plus operator entries.
    pub fn new(entries: &[ProviderEntry]) -> Result<Self, ProviderError> {
        Ok(Self {
            providers: Providers::new(entries)?,
        })
    }

    /// The provider table.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Classifies from the head alone: `None` when the host is not a provider.
    /// The result says `body_inspected = false` (`body_not_buffered`) until
    /// [`Classification::inspect_body`] runs. The data plane uses this to decide
    /// whether to buffer the body (see [`Classifier::wants_body`]).
    pub fn classify_head(&self, head: &RequestHead<'_>) -> Option<Classification> {
        let provider = self.providers.lookup(head.host, head.port)?;
        let route = route(head.method, head.path);
        let api = route.map(|r| r.0);
        let deployment = route.and_then(|r| r.1);
        Some(Classification {
            provider: provider.name.clone(),
            format: api.map_or(provider.format, Api::format),
            api,
            model: deployment.map(str::to_owned),
            deployment: deployment.map(str::to_owned),
            stream: false,
            stream_include_usage: false,
            max_tokens: None,
            tools: Vec::new(),
            body_inspected: false,
            note: Some(Note::BodyNotBuffered),
        })
    }

    /// Whether the request goes to a provider and carries a body worth
    /// inspecting (a `POST`).
    pub fn wants_body(&self, head: &RequestHead<'_>) -> bool {
        head.method.eq_ignore_ascii_case("POST")
            && self.providers.lookup(head.host, head.port).is_some()
    }

    /// Full classification: head plus body. `body = None` means the caller did
    /// not buffer it; a body longer than `max_inspect_body` is not parsed.
    pub fn classify(
        &self,
        head: &RequestHead<'_>,
        body: Option<&[u8]>,
        max_inspect_body: usize,
    ) -> Option<Classification> {
        let mut c = self.classify_head(head)?;
        if let Some(body) = body {
            c.inspect_body(head.content_type, body, max_inspect_body);
        }
        Some(c)
    }
}

impl Classification {
    /// [`Classification::inspect_body`] on a complete buffered body, returning the body parsed
    /// as JSON when it was inspected (what policy sees as `input.request.body`). The data plane
    /// and the simulator both call this, so they see the same body.
    pub fn inspect_json(
        &mut self,
        content_type: Option<&str>,
        body: &[u8],
        max_inspect_body: usize,
    ) -> Option<Value> {
        self.inspect_body(content_type, body, max_inspect_body);
        if self.body_inspected {
            serde_json::from_slice(body).ok()
        } else {
            None
        }
    }

    /// Reads `model`, `stream`, `stream_options.include_usage`, the max-token
    /// fields and tool names from a JSON body of at most `max_inspect_body`
    /// bytes. Otherwise leaves them absent and sets `note`.
    pub fn inspect_body(
        &mut self,
        content_type: Option<&str>,
        body: &[u8],
        max_inspect_body: usize,
    ) {
        self.body_inspected = false;
        let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
        let fail = |c: &mut Self, n: Note| c.note = Some(n);
        if body.len() > max_inspect_body {
            return fail(self, Note::BodyTooLarge);
        }
        if content_type.is_some_and(|ct| !is_json_content_type(ct)) {
            return fail(self, Note::NotJson);
        }
        match first {
            None => return fail(self, Note::BodyEmpty),
            Some(b'{') => {}
            Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                return fail(self, Note::NotObject)
            }
            Some(_) => return fail(self, Note::InvalidJson),
        }
        let Ok(raw) = serde_json::from_slice::<RawBody>(body) else {
            return fail(self, Note::InvalidJson);
        };
        self.body_inspected = true;
        self.note = None;
        self.model = match (&self.deployment, raw.model) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(Value::String(m))) => Some(m),
            (None, _) => None,
        };
        self.stream = matches!(raw.stream, Some(Value::Bool(true)));
        self.stream_include_usage = raw
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.max_tokens = [
            raw.max_tokens,
            raw.max_completion_tokens,
            raw.max_output_tokens,
        ]
        .iter()
        .filter_map(|v| v.as_ref().and_then(Value::as_u64))
        .max();
        self.tools.clear();
        for list in [raw.tools.as_ref(), raw.functions.as_ref()]
            .into_iter()
            .flatten()
        {
            let Some(items) = list.as_array() else {
                continue;
            };
            for t in items {
                if self.tools.len() >= MAX_TOOLS {
                    break;
                }
                if let Some(name) = tool_name(t) {
                    self.tools.push(cut(name, MAX_TOOL_NAME).to_owned());
                }
            }
        }
    }
}

/// Top-level body fields the classifier reads; everything else (messages,
/// input) is skipped without allocation (serde's derive ignores unknown
/// fields). A duplicated field is an error.
#[derive(Deserialize)]
struct RawBody {
    model: Option<Value>,
    stream: Option<Value>,
    stream_options: Option<Value>,
    max_tokens: Option<Value>,
    max_completion_tokens: Option<Value>,
    max_output_tokens: Option<Value>,
    tools: Option<Value>,
    functions: Option<Value>,
}

fn tool_name(t: &Value) -> Option<&str> {
    let o = t.as_object()?;
    fn s(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    s(o.get("function").and_then(|f| f.get("name")))
        .or_else(|| s(o.get("name")))
        .or_else(|| s(o.get("custom").and_then(|f| f.get("name"))))
        .or_else(|| s(o.get("server_label")))
        .or_else(|| s(o.get("type")))
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn is_json_content_type(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime
            .get(mime.len().saturating_sub(5)..)
            .is_some_and(|t| t.eq_ignore_ascii_case("+json"))
}

/// API (and Azure deployment) for a method and path.
fn route<'p>(method: &str, path: &'p str) -> Option<(Api, Option<&'p str>)> {
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segs = path.split('/').filter(|s| !s.is_empty()).rev();
    let last = segs.next()?;
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let (api, rest_from) = if eq(last, "completions") {
        match segs.next() {
            Some(s) if eq(s, "chat") => (Api::ChatCompletions, 2),
            _ => return None,
        }
    } else if eq(last, "responses") {
        (Api::Responses, 1)
    } else if eq(last, "messages") {
        (Api::Messages, 1)
    } else if eq(last, "embeddings") {
        (Api::Embeddings, 1)
    } else {
        return None;
    };
    // Azure: .../deployments/{d}/<api>
    let mut segs = path
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .skip(rest_from);
    let deployment = match (segs.next(), segs.next()) {
        (Some(d), Some(k)) if eq(k, "deployments") => Some(d),
        _ => None,
    };
    Some((api, deployment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a str, host: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            host,
            port: 443,
            path,
            content_type: Some("application/json"),
        }
    }

    #[test]
    fn routes() {
        let cases: &[(&str, &str, Option<Api>)] = &[
            ("POST", "/v1/chat/completions", Some(Api::ChatCompletions)),
            (
                "post",
                "/v1/chat/completions?x=1",
                Some(Api::ChatCompletions),
            ),
            (
                "POST",
                "//v1//chat/completions/",
                Some(Api::ChatCompletions),
            ),
            ("POST", "/V1/Chat/Completions", Some(Api::ChatCompletions)),
            ("POST", "/chat/completions", Some(Api::ChatCompletions)),
            (
                "POST",
                "/openai/v1/chat/completions",
                Some(Api::ChatCompletions),
            ),
            ("POST", "/v1/responses", Some(Api::Responses)),
            ("POST", "/v1/messages", Some(Api::Messages)),
            ("POST", "/v1/embeddings", Some(Api::Embeddings)),
            ("GET", "/v1/chat/completions", None),
            ("POST", "/v1/completions", None),
            ("POST", "/v1/responses/resp_123", None),
            ("POST", "/v1/responses/resp_123/cancel", None),
            ("POST", "/v1/messages/count_tokens", None),
            ("POST", "/v1/messages/batches", None),
            ("POST", "/", None),
            ("POST", "", None),
            ("POST", "/v1/models", None),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(m, p).map(|r| r.0), *want, "{m} {p}");
        }
        assert_eq!(
            route(
                "POST",
                "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
            ),
            Some((Api::ChatCompletions, Some("gpt4o-prod")))
        );
        assert_eq!(
            route("POST", "/openai/deployments/emb/embeddings"),
            Some((Api::Embeddings, Some("emb")))
        );
    }

    #[test]
    fn unknown_host_is_not_classified() {
        let c = Classifier::default();
        assert!(c
            .classify(
                &head("POST", "example.com", "/v1/chat/completions"),
                Some(b"{}"),
                1024
            )
            .is_none());
        assert!(!c.wants_body(&head("POST", "example.com", "/v1/chat/completions")));
        assert!(c.wants_body(&head("POST", "api.openai.com", "/v1/whatever")));
        assert!(!c.wants_body(&head("GET", "api.openai.com", "/v1/models")));
    }

    #[test]
    fn openai_chat_body() {
        let c = Classifier::default();
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
            "stream":true,"stream_options":{"include_usage":true},"max_tokens":100,
            "max_completion_tokens":300,
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},
                     {"type":"custom","custom":{"name":"grammar"}}]}"#;
        let r = c
            .classify(
                &head("POST", "api.openai.com", "/v1/chat/completions"),
                Some(body),
                1 << 20,
            )
            .unwrap();
        assert_eq!(&*r.provider, "openai");
        assert_eq!(r.format, Format::OpenAi);
        assert_eq!(r.api, Some(Api::ChatCompletions));
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert!(r.stream && r.stream_include_usage && r.body_inspected);
        assert_eq!(r.max_tokens, Some(300));
        assert_eq!(r.tools, ["get_weather", "grammar"]);
        assert_eq!(r.note, None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["api"], "chat.completions");
        assert_eq!(v["provider"], "openai");
        assert_eq!(serde_json::from_value::<Classification>(v).unwrap(), r);
    }

    #[test]
    fn responses_and_anthropic_tools() {
        let c = Classifier::default();
        let body = br#"{"model":"o4-mini","input":"x","max_output_tokens":64,
            "tools":[{"type":"function","name":"lookup"},{"type":"web_search_preview"},
                     {"type":"mcp","server_label":"deepwiki"}]}"#;
        let r = c
            .classify(
                &head("POST", "api.openai.com", "/v1/responses"),
                Some(body),
                4096,
            )
            .unwrap();
        assert_eq!(r.api, Some(Api::Responses));
        assert_eq!(r.max_tokens, Some(64));
        assert!(!r.stream);
        assert_eq!(r.tools, ["lookup", "web_search_preview", "deepwiki"]);

        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
            "messages":[],"tools":[{"name":"get_stock","input_schema":{}},
            {"type":"web_search_20250305","name":"web_search"}]}"#;
        let r = c
            .classify(
                &head("POST", "api.anthropic.com", "/v1/messages"),
                Some(body),
                4096,
            )
            .unwrap();
        assert_eq!(
            (&*r.provider, r.format, r.api),
            ("anthropic", Format::Anthropic, Some(Api::Messages))
        );
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(r.max_tokens, Some(1024));
        assert!(r.stream);
        assert_eq!(r.tools, ["get_stock", "web_search"]);
        assert_eq!(
            r.error_envelope(),
            portcullis_core::ErrorEnvelope::Anthropic
        );
    }

    #[test]
    fn api_decides_format() {
        let c = Classifier::new(&[ProviderEntry {
            name: "vllm".into(),
            host: "gpu.local:8000".into(),
            format: None,
        }])
        .unwrap();
        let mut h = head("POST", "gpu.local", "/v1/messages");
        h.port = 8000;
        let r = c.classify(&h, Some(b"{\"model\":\"llama\"}"), 100).unwrap();
        assert_eq!((r.format, r.api), (Format::Anthropic, Some(Api::Messages)));
        h.path = "/v1/unknown";
        let r = c.classify(&h, None, 100).unwrap();
        assert_eq!((r.format, r.api), (Format::OpenAi, None));
        assert_eq!(r.note, Some(Note::BodyNotBuffered));
        assert!(!r.body_inspected);
    }

    #[test]
    fn azure_deployment_is_the_model() {
        let c = Classifier::new(&[ProviderEntry {
            name: "azure".into(),
            host: "*.openai.azure.com".into(),
            format: None,
        }])
        .unwrap();
        let h = head(
            "POST",
            "myres.openai.azure.com",
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
        );
        let r = c
            .classify(&h, Some(br#"{"model":"other","max_tokens":5}"#), 100)
            .unwrap();
        assert_eq!(r.model.as_deref(), Some("prod-4o"));
        assert_eq!(r.deployment.as_deref(), Some("prod-4o"));
        assert_eq!(r.note, None);
        assert!(r.body_inspected);
        assert_eq!(r.max_tokens, Some(5));
        let r = c.classify(&h, None, 100).unwrap();
        assert_eq!(r.model.as_deref(), Some("prod-4o"));
        assert!(!r.body_inspected);
    }

    #[test]
    fn bodies_that_are_not_inspected() {
        let c = Classifier::default();
        let h = head("POST", "api.openai.com", "/v1/chat/completions");
        let big = format!("{{\"model\":\"gpt-4o\",\"x\":\"{}\"}}", "a".repeat(100));
        let cases: &[(&[u8], Option<&str>, usize, Note)] = &[
            (
                big.as_bytes(),
                Some("application/json"),
                50,
                Note::BodyTooLarge,
            ),
            (b"", Some("application/json"), 50, Note::BodyEmpty),
            (b"  \n", None, 50, Note::BodyEmpty),
            (b"{\"model\":", None, 50, Note::InvalidJson),
            (b"[\"gpt-4o\", true]", None, 50, Note::NotObject),
            (b"\"gpt\"", None, 50, Note::NotObject),
            (b"\xff\xfe{}", None, 50, Note::InvalidJson),
            (
                b"model=gpt-4o",
                Some("application/x-www-form-urlencoded"),
                50,
                Note::NotJson,
            ),
            (
                b"{\"model\":\"a\",\"model\":\"b\"}",
                None,
                50,
                Note::InvalidJson,
            ),
            (b"{\"model\":\"a\"} trailing", None, 50, Note::InvalidJson),
        ];
        for (body, ct, max, note) in cases {
            let mut h = h;
            h.content_type = *ct;
            let r = c.classify(&h, Some(body), *max).unwrap();
            assert!(!r.body_inspected, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.note, Some(*note), "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.model, None);
            assert_eq!(r.api, Some(Api::ChatCompletions));
        }
        // vendor +json content types are JSON.
        let mut h2 = h;
        h2.content_type = Some("application/vnd.api+json; charset=utf-8");
        assert!(c.classify(&h2, Some(b"{}"), 50).unwrap().body_inspected);
    }

    #[test]
    fn odd_field_types_are_ignored_not_fatal() {
        let c = Classifier::default();
        let h = head("POST", "api.openai.com", "/v1/chat/completions");
        let body = br#"{"model":42,"stream":"true","max_tokens":-1,"max_completion_tokens":1e400,
            "tools":{"name":"x"},"functions":[1,{"name":"legacy"},{"function":{"name":7}}]}"#;
        // 1e400 is out of range for serde_json: the body is refused as invalid.
        let r = c.classify(&h, Some(body), 4096).unwrap();
        assert_eq!(r.note, Some(Note::InvalidJson));
        let body = br#"{"model":42,"stream":"true","max_tokens":-1,"max_completion_tokens":1.5,
            "max_output_tokens":18446744073709551616,
            "tools":{"name":"x"},"functions":[1,{"name":"legacy"},{"function":{"name":7}}]}"#;
        let r = c.classify(&h, Some(body), 4096).unwrap();
        assert!(r.body_inspected);
        assert_eq!(r.model, None);
        assert!(!r.stream);
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.tools, ["legacy"]);
    }

    #[test]
    fn tool_lists_are_bounded() {
        let c = Classifier::default();
        let h = head("POST", "api.openai.com", "/v1/chat/completions");
        let long = "é".repeat(200);
        let tools: Vec<String> = (0..300)
            .map(|i| format!("{{\"type\":\"function\",\"function\":{{\"name\":\"{long}{i}\"}}}}"))
            .collect();
        let body = format!("{{\"tools\":[{}]}}", tools.join(","));
        let r = c.classify(&h, Some(body.as_bytes()), 1 << 20).unwrap();
        assert_eq!(r.tools.len(), MAX_TOOLS);
        assert!(r
            .tools
            .iter()
            .all(|t| t.len() <= MAX_TOOL_NAME && t.starts_with('é')));
    }

    #[test]
    fn deeply_nested_body_does_not_overflow() {
        let c = Classifier::default();
        let h = head("POST", "api.openai.com", "/v1/chat/completions");
        let depth = 100_000;
        // Skipped fields are ignored iteratively: deep nesting there is fine.
        let body = format!(
            "{{\"messages\":{}{},\"model\":\"m\"}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let r = c.classify(&h, Some(body.as_bytes()), 1 << 20).unwrap();
        assert!(r.body_inspected);
        assert_eq!(r.model.as_deref(), Some("m"));
        // Fields the classifier builds hit serde_json's recursion limit.
        let body = format!("{{\"tools\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        let r = c.classify(&h, Some(body.as_bytes()), 1 << 20).unwrap();
        assert_eq!(r.note, Some(Note::InvalidJson));
        assert!(!r.body_inspected);
    }
}
