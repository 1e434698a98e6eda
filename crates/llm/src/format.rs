//! Wire formats and API kinds.

use portcullis_core::ErrorEnvelope;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The wire format a provider (or one of its APIs) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OpenAI and OpenAI-compatible APIs (Azure OpenAI, Groq, Mistral, vLLM, ...).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
}

impl Format {
    /// The stable lower-case name (`openai` or `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    /// The provider error envelope that makes this format's SDKs show our reason.
    pub fn error_envelope(self) -> ErrorEnvelope {
        error_envelope(self)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps a wire format to the `portcullis_core` error envelope for gateway errors
/// answered to a recognised LLM API.
pub fn error_envelope(format: Format) -> ErrorEnvelope {
    match format {
        Format::OpenAi => ErrorEnvelope::OpenAi,
        Format::Anthropic => ErrorEnvelope::Anthropic,
    }
}

/// A recognised LLM API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Api {
    /// `POST /v1/chat/completions` (OpenAI format).
    #[serde(rename = "chat.completions")]
    ChatCompletions,
    /// `POST /v1/responses` (OpenAI Responses API).
    #[serde(rename = "responses")]
    Responses,
    /// `POST /v1/messages` (Anthropic format).
    #[serde(rename = "messages")]
    Messages,
    /// `POST /v1/embeddings` (OpenAI format).
    #[serde(rename = "embeddings")]
    Embeddings,
}

impl Api {
    /// The stable name used in policy input, audit and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat.completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::Embeddings => "embeddings",
        }
    }

    /// The wire format of this API, whoever serves it: an OpenAI-compatible
    /// server exposing `/v1/messages` speaks Anthropic's format there.
    pub fn format(self) -> Format {
        match self {
            Self::Messages => Format::Anthropic,
            Self::ChatCompletions | Self::Responses | Self::Embeddings => Format::OpenAi,
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for api in [
            Api::ChatCompletions,
            Api::Responses,
            Api::Messages,
            Api::Embeddings,
        ] {
            let s = serde_json::to_string(&api).unwrap();
            assert_eq!(s, format!("\"{}\"", api.as_str()));
            assert_eq!(serde_json::from_str::<Api>(&s).unwrap(), api);
        }
        for f in [Format::OpenAi, Format::Anthropic] {
            let s = serde_json::to_string(&f).unwrap();
            assert_eq!(s, format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<Format>(&s).unwrap(), f);
        }
    }

    #[test]
    fn envelopes_follow_format() {
        assert_eq!(error_envelope(Format::OpenAi), ErrorEnvelope::OpenAi);
        assert_eq!(Format::Anthropic.error_envelope(), ErrorEnvelope::Anthropic);
        assert_eq!(Api::Messages.format(), Format::Anthropic);
        assert_eq!(Api::Responses.format(), Format::OpenAi);
    }
}
