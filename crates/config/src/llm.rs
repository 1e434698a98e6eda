//! `[llm]`: extra LLM providers recognised (and intercepted) on top of the built-in ones.

use serde::{Deserialize, Serialize};

/// `[llm]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Extra OpenAI- or Anthropic-compatible hosts (`[[llm.providers]]`), on top of the
    /// built-in api.openai.com and api.anthropic.com. Each host is also intercepted (HTTPS).
    pub providers: Vec<ProviderConfig>,
}

/// One `[[llm.providers]]` entry:
///
/// ```toml
/// [[llm.providers]]
/// name = "azure"                 # policy/audit/metric label
/// host = "*.openai.azure.com"   # "host", "host:port" or "*.suffix"
/// format = "openai"             # optional
/// ```
///
/// Name and host syntax are checked by the provider classifier the entry is mapped onto.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Provider name used in policy input, audit and metric labels
    /// (`^[a-z0-9][a-z0-9_.-]{0,63}$`).
    pub name: String,
    /// `host`, `host:port` (only that port) or `*.suffix` (any subdomain of
    /// `suffix`, optionally with `:port`). IPv6 literals in brackets.
    pub host: String,
    /// Wire format; default `anthropic` when `name` is `anthropic`, else `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ProviderFormat>,
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderFormat {
    /// OpenAI and OpenAI-compatible APIs (Azure OpenAI, Groq, Mistral, vLLM, ...).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
}
