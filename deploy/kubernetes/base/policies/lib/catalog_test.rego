# Tests of the service catalog (run by `portcullis policy test`).
package portcullis.lib.catalog_test

import rego.v1

import data.portcullis.lib.catalog

test_chat_needs_chat_scope if {
	catalog.scope_for("api.openai.com", "post", "/v1/chat/completions") == "openai:chat:create"
}

test_specific_route_wins if {
	catalog.scope_for("api.github.com", "GET", "/repos/o/r/issues/3") == "github:issue:read"
	catalog.scope_for("api.github.com", "GET", "/repos/o/r/commits") == "github:repo:read"
}

test_uncatalogued_is_undefined if {
	not catalog.scope_for("example.com", "GET", "/")
}

test_wildcard_grant if {
	catalog.grants("stripe:customer:read") with input as {"agent": {"scopes": ["stripe:customer:*"]}}
	not catalog.grants("stripe:charge:read") with input as {"agent": {"scopes": ["stripe:customer:*"]}}
}

test_token_scopes_replace_agent_scopes if {
	not catalog.grants("openai:chat:create") with input as {"agent": {"scopes": ["openai:chat:create"]}, "token": {"scopes": []}}
}
