# MCP tool calls (docs/mcp.md): which tools each agent group may call on each registered MCP
# server ([[mcp.servers]] names), a rule on arguments (file tools stay under one directory),
# and only the methods MCP defines (a method differing in case or Unicode is not a tool call:
# it is denied here rather than left to the server's interpretation).
#
# Inert for requests that are not to an MCP server (no input.mcp). The CONNECT tunnel to an
# MCP server's host carries no MCP message: allow it in a policy of yours (input.kind ==
# "connect", input.request.host), as for any other host.
package portcullis.policy.mcp_tools

import rego.v1

# server -> agent group -> tools; the group "*" is every agent.
tool_allowlist := {
	"files": {
		"*": {"read_file", "list_directory"},
		"maintainers": {"write_file"},
	},
	"github": {
		"*": {"list_issues", "get_issue", "search_code"},
		"maintainers": {"create_issue", "add_issue_comment"},
	},
}

# Tools whose `path` argument must name something under path_prefix.
path_tools := {"read_file", "list_directory", "write_file"}

path_prefix := "/workspace/"

known_methods := {
	"initialize", "ping", "server/discover",
	"tools/list", "tools/call",
	"resources/list", "resources/templates/list", "resources/read",
	"resources/subscribe", "resources/unsubscribe",
	"prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
	"notifications/initialized", "notifications/cancelled", "notifications/progress",
	"notifications/roots/list_changed",
}

# Every message to a server listed above is allowed unless a rule below denies it (the
# endpoint's GET stream and DELETE included: they have no method).
allow if {
	input.kind == "http"
	input.mcp.server in object.keys(tool_allowlist)
}

tool_allowed(server, tool) if tool in tool_allowlist[server]["*"]

tool_allowed(server, tool) if {
	some group in input.agent.groups
	tool in tool_allowlist[server][group]
}

deny contains sprintf("MCP method %s is not allowed", [json.marshal(input.mcp.method)]) if {
	is_string(input.mcp.method)
	not input.mcp.method in known_methods
}

deny contains sprintf("tool %v is not allowed on %s for this agent", [input.mcp.tool, input.mcp.server]) if {
	input.mcp.method == "tools/call"
	input.mcp.server in object.keys(tool_allowlist)
	not tool_allowed(input.mcp.server, input.mcp.tool)
}

# A call with arguments must keep `path` under the prefix (no `..`). The tools/list filter
# asks about a call without arguments, so a path tool stays listed.
deny contains sprintf("%s: path must be under %s", [input.mcp.tool, path_prefix]) if {
	input.mcp.tool in path_tools
	input.mcp.arguments != null
	not path_ok(input.mcp.arguments)
}

path_ok(args) if {
	is_string(args.path)
	startswith(args.path, path_prefix)
	not contains(args.path, "..")
}

test_listed_tool_allowed if {
	allow with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "tools/call", "tool": "read_file", "arguments": {"path": "/workspace/a.txt"}}}
	count(deny) == 0 with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "tools/call", "tool": "read_file", "arguments": {"path": "/workspace/a.txt"}}}
}

test_group_tool if {
	count(deny) == 1 with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "tools/call", "tool": "write_file", "arguments": {"path": "/workspace/a"}}}
	count(deny) == 0 with input as {"kind": "http", "agent": {"groups": ["maintainers"]}, "mcp": {"server": "files", "method": "tools/call", "tool": "write_file", "arguments": {"path": "/workspace/a"}}}
}

test_path_rule if {
	deny == {"read_file: path must be under /workspace/"} with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "tools/call", "tool": "read_file", "arguments": {"path": "/workspace/../etc/passwd"}}}
	deny == {"read_file: path must be under /workspace/"} with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "tools/call", "tool": "read_file", "arguments": {"path": 7}}}
}

test_case_variant_method_denied if {
	deny == {`MCP method "Tools/Call" is not allowed`} with input as {"kind": "http", "agent": {"groups": []}, "mcp": {"server": "files", "method": "Tools/Call", "tool": null}}
}
