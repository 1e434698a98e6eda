//! Turns captured values into normalised usage, per wire format.
//!
//! Rules (issue 6, DESIGN §5):
//! - OpenAI chat / embeddings / Responses JSON: the top-level `usage`.
//! - OpenAI chat SSE: the last non-null `usage` of any chunk (also one whose
//!   `choices` is non-empty), never summed; Groq's `x_groq.usage` counts when
//!   no top-level `usage` was seen.
//! - Responses SSE: `response.usage` of the terminal events
//!   `response.completed | response.incomplete | response.failed`.
//! - Anthropic: `message_start`'s `message.usage`, then each `message_delta`
//!   `usage` overrides the fields it carries (cumulative, never summed);
//!   a non-stream message's top-level `usage`. An `error` event keeps what was
//!   seen and marks the usage truncated.

use crate::format::Format;
use crate::scan::{Kind, Scanner, Slot};
use portcullis_core::Usage;
use serde_json::Value;

/// Usage under construction.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    anthropic: bool,
    /// OpenAI-format counts: (input, output, cached, reasoning).
    openai: Option<[u64; 4]>,
    groq: Option<[u64; 4]>,
    /// Anthropic fields: input, cache_read, cache_creation, output.
    anth: [Option<u64>; 4],
    /// The response reached its terminal marker.
    pub(crate) terminal: bool,
    /// An error event ended the stream.
    pub(crate) errored: bool,
}

impl Accumulator {
    pub(crate) fn new(format: Format) -> Self {
        Self {
            anthropic: format == Format::Anthropic,
            ..Self::default()
        }
    }

    /// One SSE event (`kind` = the SSE `event:` name) or a whole JSON body
    /// (`kind = None`). The top-level `type` takes precedence over `kind`. An
    /// `error` type marks a stream as cut short; a JSON error body is simply
    /// a response without usage.
    pub(crate) fn document(&mut self, s: &Scanner, kind: Option<Kind>, stream: bool) {
        let mut kind = s.kind().or(kind);
        if !stream && kind == Some(Kind::Error) {
            kind = Some(Kind::Other);
        }
        if self.anthropic {
            self.anthropic_document(s, kind);
        } else {
            self.openai_document(s, kind);
        }
    }

    fn openai_document(&mut self, s: &Scanner, kind: Option<Kind>) {
        if let Some(u) = s.slot(Slot::Usage).and_then(openai_usage) {
            self.openai = Some(u);
        }
        if let Some(u) = s.slot(Slot::GroqUsage).and_then(openai_usage) {
            self.groq = Some(u);
        }
        match kind {
            Some(Kind::ResponseCompleted | Kind::ResponseIncomplete | Kind::ResponseFailed) => {
                if let Some(u) = s.slot(Slot::ResponseUsage).and_then(openai_usage) {
                    self.openai = Some(u);
                }
                self.terminal = true;
            }
            Some(Kind::Error) => {
                self.errored = true;
                self.terminal = true;
            }
            _ => {}
        }
    }

    fn anthropic_document(&mut self, s: &Scanner, kind: Option<Kind>) {
        match kind {
            Some(Kind::MessageStart) => {
                if let Some(u) = s.slot(Slot::MessageUsage) {
                    self.anthropic_merge(u);
                }
            }
            Some(Kind::MessageStop) => self.terminal = true,
            Some(Kind::Error) => {
                self.errored = true;
                self.terminal = true;
            }
            _ => {
                if let Some(u) = s.slot(Slot::Usage) {
                    self.anthropic_merge(u);
                }
            }
        }
    }

    fn anthropic_merge(&mut self, u: &Value) {
        let Some(o) = u.as_object() else {
            return;
        };
        for (i, k) in [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
        ]
        .iter()
        .enumerate()
        {
            if let Some(n) = o.get(*k).and_then(Value::as_u64) {
                self.anth[i] = Some(n);
            }
        }
    }

    /// The `[DONE]` sentinel of an OpenAI chat stream.
    pub(crate) fn done_marker(&mut self) {
        if !self.anthropic {
            self.terminal = true;
        }
    }

    /// Whether any usage was found.
    pub(crate) fn usage(&self) -> Option<Usage> {
        if self.anthropic {
            if self.anth.iter().all(Option::is_none) {
                return None;
            }
            let [input, read, create, output] = self.anth.map(|v| v.unwrap_or(0));
            let all_input = input.saturating_add(read).saturating_add(create);
            Some(Usage::provider(all_input, output, read, 0))
        } else {
            let [i, o, c, r] = self.openai.or(self.groq)?;
            Some(Usage::provider(i, o, c, r))
        }
    }
}

/// Reads an OpenAI-format usage object (chat/embeddings `prompt_tokens`
/// family or Responses `input_tokens` family). `None` for `null` or an object
/// with neither an input nor an output count.
fn openai_usage(u: &Value) -> Option<[u64; 4]> {
    let o = u.as_object()?;
    let num = |v: Option<&Value>| v.and_then(Value::as_u64);
    let detail = |outer: &str, inner: &str| num(o.get(outer).and_then(|d| d.get(inner)));
    let input = num(o.get("prompt_tokens")).or(num(o.get("input_tokens")));
    let output = num(o.get("completion_tokens")).or(num(o.get("output_tokens")));
    if input.is_none() && output.is_none() {
        return None;
    }
    let cached = detail("prompt_tokens_details", "cached_tokens")
        .or(detail("input_tokens_details", "cached_tokens"));
    let reasoning = detail("completion_tokens_details", "reasoning_tokens")
        .or(detail("output_tokens_details", "reasoning_tokens"));
    Some([
        input.unwrap_or(0),
        output.unwrap_or(0),
        cached.unwrap_or(0),
        reasoning.unwrap_or(0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_shapes() {
        assert_eq!(openai_usage(&json!(null)), None);
        assert_eq!(openai_usage(&json!({})), None);
        assert_eq!(openai_usage(&json!({"total_tokens": 5})), None);
        assert_eq!(
            openai_usage(&json!({"prompt_tokens": 8, "total_tokens": 8})),
            Some([8, 0, 0, 0])
        );
        assert_eq!(
            openai_usage(
                &json!({"prompt_tokens": -1, "completion_tokens": 2.5, "input_tokens": 3})
            ),
            Some([3, 0, 0, 0])
        );
        assert_eq!(
            openai_usage(&json!({"input_tokens": 10, "output_tokens": 4,
                "input_tokens_details": {"cached_tokens": 6},
                "output_tokens_details": {"reasoning_tokens": 2}})),
            Some([10, 4, 6, 2])
        );
    }

    fn doc(acc: &mut Accumulator, json: &str) {
        let mut s = Scanner::default();
        s.feed(json.as_bytes());
        assert!(s.complete(), "{json}");
        acc.document(&s, None, true);
    }

    #[test]
    fn anthropic_cumulative_never_summed() {
        let mut a = Accumulator::new(Format::Anthropic);
        assert_eq!(a.usage(), None);
        doc(
            &mut a,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":20,"output_tokens":1}}}"#,
        );
        doc(
            &mut a,
            r#"{"type":"message_delta","usage":{"output_tokens":30}}"#,
        );
        doc(
            &mut a,
            r#"{"type":"message_delta","usage":{"output_tokens":45,"input_tokens":12}}"#,
        );
        assert!(!a.terminal);
        doc(&mut a, r#"{"type":"message_stop"}"#);
        assert!(a.terminal && !a.errored);
        assert_eq!(a.usage(), Some(Usage::provider(132, 45, 100, 0)));
    }
}
