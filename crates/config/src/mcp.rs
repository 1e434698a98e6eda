//! `[mcp]`: MCP servers governed per JSON-RPC message, and how refusals are answered.

use serde::{Deserialize, Serialize};

/// How a denied MCP call is answered (`mcp.on_block`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpOnBlock {
    /// A JSON-RPC error for the same id.
    #[default]
    Error,
    /// A `CallToolResult` with `isError: true` for tool calls (errors for other methods).
    ToolResult,
}

/// `[mcp]` and its `[[mcp.servers]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// MCP endpoints (their hosts are intercepted; requests to them are parsed).
    pub servers: Vec<McpServerConfig>,
    /// How a denied call is answered.
    pub on_block: McpOnBlock,
    /// Remove tools an agent may not call from `tools/list` answers.
    pub filter_tools_list: bool,
    /// Largest request body parsed; a larger one is refused (bytes).
    pub max_body: usize,
    /// Most messages in a batch.
    pub max_batch: usize,
    /// Deepest JSON nesting accepted in a message.
    pub max_depth: usize,
    /// Largest answer (JSON body or SSE event) read for outcomes or filtered (bytes).
    pub max_answer: usize,
    /// Tool calls per minute per agent (unset: unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_minute: Option<u64>,
    /// Most distinct (server, tool) metric labels.
    pub max_tool_labels: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            on_block: McpOnBlock::Error,
            filter_tools_list: false,
            max_body: 1024 * 1024,
            max_batch: 64,
            max_depth: 64,
            max_answer: 4 * 1024 * 1024,
            calls_per_minute: None,
            max_tool_labels: 500,
        }
    }
}

/// One `[[mcp.servers]]` entry.
///
/// ```toml
/// [[mcp.servers]]
/// name = "github"                       # policy input, audit and metric label
/// hosts = ["api.githubcopilot.com"]     # host globs ("host" or "*.suffix")
/// path = "/mcp/"                        # optional: only this path (and below)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Name (`^[a-z][a-z0-9_]{1,63}$`).
    pub name: String,
    /// Host globs.
    pub hosts: Vec<String>,
    /// Path prefix of the endpoint; every path of the hosts when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl McpConfig {
    /// Checks names, hosts, paths and bounds.
    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let key = |f: &str| format!("mcp.servers[{i}].{f}");
            if !portcullis_core::is_valid_id(&s.name) {
                return Err(ConfigError::new(
                    key("name"),
                    "must match ^[a-z][a-z0-9_]{1,63}$",
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ConfigError::new(key("name"), "is used twice"));
            }
            if s.hosts.is_empty() {
                return Err(ConfigError::new(
                    key("hosts"),
                    "must name at least one host",
                ));
            }
            if let Some(p) = &s.path {
                if !p.starts_with('/') || p.contains(['?', '#']) {
                    return Err(ConfigError::new(
                        key("path"),
                        "must start with / and carry no query or fragment",
                    ));
                }
            }
        }
        for (k, v, min) in [
            ("mcp.max_body", self.max_body, 2),
            ("mcp.max_batch", self.max_batch, 1),
            ("mcp.max_depth", self.max_depth, 2),
            ("mcp.max_answer", self.max_answer, 1024),
            ("mcp.max_tool_labels", self.max_tool_labels, 0),
        ] {
            if v < min {
                return Err(ConfigError::new(k, format!("must be at least {min}")));
            }
        }
        if self.max_depth > 100 {
            return Err(ConfigError::new("mcp.max_depth", "must be at most 100"));
        }
        if self.calls_per_minute == Some(0) {
            return Err(ConfigError::new(
                "mcp.calls_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        Ok(())
    }
}
