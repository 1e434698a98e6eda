//! What an audit record says about one MCP message (`record.mcp`).

use serde::{Deserialize, Serialize};

/// One JSON-RPC message to an MCP server, as recorded: one record per message of a body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpRecord {
    /// The `[[mcp.servers]]` name.
    pub server: String,
    /// The method exactly as sent (`None` for a client's response or a GET/DELETE).
    pub method: Option<String>,
    /// `request`, `notification` or `response` (`None` for a GET/DELETE).
    pub kind: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC id as its JSON text (`7`, `"abc"`).
    pub id: Option<String>,
    /// The answer's `isError` (a tool error) or `true` for a JSON-RPC error; `None` when no
    /// answer was read (notifications, refused calls, unreadable answers).
    pub is_error: Option<bool>,
    /// The arguments as sent (`audit.mcp_arguments = "full"`).
    pub arguments: Option<serde_json::Value>,
    /// SHA-256 of the canonical JSON of the arguments (`audit.mcp_arguments = "hash"`).
    pub arguments_sha256: Option<String>,
    /// SHA-256 prefix of `Mcp-Session-Id` (never the id itself).
    pub session: Option<String>,
    /// `MCP-Protocol-Version`, when sent.
    pub protocol_version: Option<String>,
    /// Messages in the body (1 unless a batch).
    pub batch_size: u32,
    /// This message's position in the body.
    pub batch_index: u32,
}
