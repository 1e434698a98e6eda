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

test_override_needs_the_scope_of_every_method if {
	catalog.required_scopes == {"stripe:charge:read", "stripe:charge:write"} with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "GET", "method_override": "POST", "path": "/v1/charges"}}
	catalog.effective_method == "POST" with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "get", "method_override": "POST", "path": "/v1/charges"}}
	not catalog.scope_held with input as {"kind": "http", "agent": {"scopes": ["stripe:charge:read"]}, "request": {"host": "api.stripe.com", "method": "GET", "method_override": "POST", "path": "/v1/charges"}}
}

test_ambiguous_override_holds_no_scope if {
	not catalog.scope_held with input as {"kind": "http", "agent": {"scopes": ["stripe:*:*"]}, "request": {"host": "api.stripe.com", "method": "GET", "method_override": "*", "path": "/v1/charges"}}
	catalog.scope_held with input as {"kind": "http", "agent": {"scopes": []}, "request": {"host": "example.com", "method": "GET", "method_override": "*", "path": "/"}}
}
