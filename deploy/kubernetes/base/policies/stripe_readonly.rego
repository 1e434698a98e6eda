# Stripe is read-only for agents: GET and HEAD are allowed (scopes still apply through the
# baseline policy); anything that changes state is denied, also when asked for through a
# method override (X-HTTP-Method-Override: POST on a GET).
package portcullis.policy.stripe_readonly

import rego.v1

import data.portcullis.lib.catalog

stripe_host := "api.stripe.com"

read_only := {"GET", "HEAD"}

allow if {
	input.kind == "connect"
	input.request.host == stripe_host
	input.request.port == 443
}

# Every method the request may be performed as (its own and any method override) reads.
allow if {
	input.kind == "http"
	input.request.host == stripe_host
	count(catalog.methods) > 0
	every m in catalog.methods {
		m in read_only
	}
}

deny contains sprintf("stripe is read-only: %s %s is not allowed", [m, input.request.path]) if {
	input.kind == "http"
	input.request.host == stripe_host
	some m in catalog.methods
	not m in read_only
}

test_post_denied if {
	count(deny) == 1 with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "POST", "path": "/v1/charges"}}
}

test_override_to_post_denied if {
	deny == {"stripe is read-only: POST /v1/charges is not allowed"} with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "GET", "method_override": "POST", "path": "/v1/charges"}}
	not allow with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "GET", "method_override": "POST", "path": "/v1/charges"}}
}
