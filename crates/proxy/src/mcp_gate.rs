//! The MCP phase's configuration and shared state: which endpoints are MCP servers, how their
//! messages are bounded and answered, tool labels and tool-call counters. A leaf of the data
//! plane: the pipeline holds it, the exchange and the MCP phase read it.

use portcullis_limits::McpCallCounter;
use portcullis_mcp::{ArgumentsAudit, Limits, OnBlock};
use portcullis_tls::HostMatcher;
use std::sync::Arc;

/// One `[[mcp.servers]]` endpoint.
pub struct McpServer {
    /// Name (policy input, audit, metric label).
    pub name: String,
    /// Its hosts.
    pub hosts: HostMatcher,
    /// Path prefix (every path when `None`).
    pub path: Option<String>,
}

impl McpServer {
    fn matches(&self, host: &str, path: &str) -> bool {
        self.hosts.matches(host)
            && self.path.as_deref().is_none_or(|p| {
                path == p
                    || path.starts_with(p)
                        && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/'))
            })
    }
}

/// `[mcp]` as the data plane uses it.
pub struct McpSettings {
    /// The endpoints.
    pub servers: Vec<McpServer>,
    /// How a denied call is answered.
    pub on_block: OnBlock,
    /// Filter `tools/list` answers.
    pub filter_tools_list: bool,
    /// Request parsing bounds.
    pub limits: Limits,
    /// Largest answer read or filtered.
    pub max_answer: usize,
    /// How arguments are recorded.
    pub arguments: ArgumentsAudit,
    /// Tool calls per minute per agent.
    pub calls_per_minute: Option<u64>,
    /// Most (server, tool) metric labels.
    pub max_tool_labels: usize,
}

/// The MCP phase's shared state: settings, tool labels, tool-call counters.
pub struct McpGate {
    pub(crate) settings: McpSettings,
    pub(crate) labels: portcullis_mcp::labels::ToolLabels,
    pub(crate) counter: McpCallCounter,
}

impl McpGate {
    /// The gate for `settings`, counting calls on `clock`.
    pub fn new(settings: McpSettings, clock: Arc<dyn portcullis_core::Clock>) -> Self {
        Self {
            labels: portcullis_mcp::labels::ToolLabels::new(settings.max_tool_labels),
            counter: McpCallCounter::new(clock),
            settings,
        }
    }

    /// Whether `host` is an MCP server's (its tunnels are intercepted).
    pub fn intercepts(&self, host: &str) -> bool {
        self.settings.servers.iter().any(|s| s.hosts.matches(host))
    }

    /// The server whose endpoint `host` and `path` are.
    pub(crate) fn server(&self, host: &str, path: &str) -> Option<&McpServer> {
        self.settings.servers.iter().find(|s| s.matches(host, path))
    }

    /// The name of the server whose endpoint `host` and `path` are (the admin simulator reads
    /// described requests with this).
    pub fn server_name(&self, host: &str, path: &str) -> Option<&str> {
        self.server(host, path).map(|s| s.name.as_str())
    }

    /// The request parsing bounds.
    pub fn limits(&self) -> Limits {
        self.settings.limits
    }

    /// Forgets idle tool-call counters.
    pub fn sweep(&self) {
        self.counter.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(path: Option<&str>) -> McpServer {
        McpServer {
            name: "s".into(),
            hosts: HostMatcher::new(["mcp.example.com"]).unwrap(),
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn endpoints_match_on_host_and_path_segments() {
        let any = server(None);
        assert!(any.matches("mcp.example.com", "/anything"));
        assert!(!any.matches("other.example.com", "/mcp"));
        let p = server(Some("/mcp"));
        assert!(p.matches("mcp.example.com", "/mcp"));
        assert!(p.matches("mcp.example.com", "/mcp/x"));
        assert!(!p.matches("mcp.example.com", "/mcpx"));
        assert!(!p.matches("mcp.example.com", "/"));
        let slash = server(Some("/mcp/"));
        assert!(slash.matches("mcp.example.com", "/mcp/"));
        assert!(!slash.matches("mcp.example.com", "/mcp"));
    }
}
