//! Blocked responses: the 403 JSON error and, for `on_block = "stub"`, a well-formed
//! provider response (OpenAI chat.completions or Anthropic messages, JSON or SSE) whose
//! content states the refusal, so agents built on the official SDKs see a normal reply.

use portcullis_core::Decision;
use serde_json::json;

/// Provider response format of a stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StubFormat {
    /// OpenAI `chat.completion` / `chat.completion.chunk`.
    OpenAiChat,
    /// Anthropic `message` / messages streaming events.
    AnthropicMessages,
}

/// A ready-to-send stub body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubResponse {
    /// Body bytes.
    pub body: Vec<u8>,
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
}

/// The human readable refusal for a decision.
pub fn refusal_text(d: &Decision) -> String {
    let reason = d
        .reasons
        .first()
        .map(String::as_str)
        .unwrap_or("request denied by policy");
    match &d.policy {
        Some(p) => format!(
            "Request blocked by Portcullis policy {p}: {reason} (decision {})",
            d.decision_id
        ),
        None => format!(
            "Request blocked by Portcullis: {reason} (decision {})",
            d.decision_id
        ),
    }
}

/// Builds a stub response stating the refusal, echoing `model`.
pub fn stub_response(
    format: StubFormat,
    decision: &Decision,
    model: Option<&str>,
    stream: bool,
    created_unix: u64,
) -> StubResponse {
    let text = refusal_text(decision);
    let model = model.unwrap_or("unknown");
    let id = &decision.decision_id;
    match (format, stream) {
        (StubFormat::OpenAiChat, false) => StubResponse {
            body: json!({
                "id": format!("chatcmpl-portcullis-{id}"),
                "object": "chat.completion",
                "created": created_unix,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "system_fingerprint": null
            })
            .to_string()
            .into_bytes(),
            content_type: "application/json",
        },
        (StubFormat::OpenAiChat, true) => {
            let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                json!({
                    "id": format!("chatcmpl-portcullis-{id}"),
                    "object": "chat.completion.chunk",
                    "created": created_unix,
                    "model": model,
                    "system_fingerprint": null,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
                })
            };
            let mut s = String::new();
            for c in [
                chunk(json!({"role": "assistant", "content": ""}), json!(null)),
                chunk(json!({"content": text}), json!(null)),
                chunk(json!({}), json!("stop")),
            ] {
                s.push_str(&format!("data: {c}\n\n"));
            }
            s.push_str("data: [DONE]\n\n");
            StubResponse {
                body: s.into_bytes(),
                content_type: "text/event-stream",
            }
        }
        (StubFormat::AnthropicMessages, false) => StubResponse {
            body: json!({
                "id": format!("msg_portcullis_{id}"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}
            })
            .to_string()
            .into_bytes(),
            content_type: "application/json",
        },
        (StubFormat::AnthropicMessages, true) => {
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": format!("msg_portcullis_{id}"), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": 0}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let mut s = String::new();
            for (name, data) in events {
                s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
            }
            StubResponse {
                body: s.into_bytes(),
                content_type: "text/event-stream",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Verdict;
    use serde_json::Value;

    fn denied() -> Decision {
        Decision {
            allowed: false,
            verdict: Verdict::Deny,
            policy: Some("model_allowlist".into()),
            reasons: vec!["model gpt-3.5-turbo is not on the openai allowlist".into()],
            code: Some(crate::CODE_POLICY_DENIED.into()),
            decision_id: "0190abc".into(),
            would_deny: vec![],
            evaluations: vec![],
            eval_us: 3,
            cached: false,
            revision: None,
        }
    }

    fn sse_data(body: &[u8]) -> Vec<String> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn openai_json_and_sse() {
        let r = stub_response(
            StubFormat::OpenAiChat,
            &denied(),
            Some("gpt-3.5-turbo"),
            false,
            1_800_000_000,
        );
        assert_eq!(r.content_type, "application/json");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-3.5-turbo");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            content.contains("model_allowlist") && content.contains("not on the openai allowlist")
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");

        let r = stub_response(StubFormat::OpenAiChat, &denied(), Some("gpt-4o"), true, 1);
        assert_eq!(r.content_type, "text/event-stream");
        let data = sse_data(&r.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-4o"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.starts_with("Request blocked by Portcullis policy model_allowlist"));
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[test]
    fn anthropic_json_and_sse() {
        let r = stub_response(
            StubFormat::AnthropicMessages,
            &denied(),
            Some("claude-2.1"),
            false,
            1,
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["role"].as_str(), v["model"].as_str()),
            (Some("message"), Some("assistant"), Some("claude-2.1"))
        );
        assert!(v["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("decision 0190abc"));

        let r = stub_response(
            StubFormat::AnthropicMessages,
            &denied(),
            Some("claude-2.1"),
            true,
            1,
        );
        let body = String::from_utf8(r.body.clone()).unwrap();
        let names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for d in sse_data(&r.body) {
            let v: Value = serde_json::from_str(&d).unwrap();
            assert!(v["type"].is_string());
        }
    }
}
