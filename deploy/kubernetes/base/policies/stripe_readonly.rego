# Stripe is read-only for agents: GET and HEAD are allowed (scopes still apply through the
# baseline policy); anything that changes state is denied.
package portcullis.policy.stripe_readonly

import rego.v1

stripe_host := "api.stripe.com"

allow if {
	input.kind == "connect"
	input.request.host == stripe_host
	input.request.port == 443
}

allow if {
	input.kind == "http"
	input.request.host == stripe_host
	upper(input.request.method) in {"GET", "HEAD"}
}

deny contains sprintf("stripe is read-only: %s %s is not allowed", [upper(input.request.method), input.request.path]) if {
	input.kind == "http"
	input.request.host == stripe_host
	not upper(input.request.method) in {"GET", "HEAD"}
}

test_post_denied if {
	count(deny) == 1 with input as {"kind": "http", "request": {"host": "api.stripe.com", "method": "POST", "path": "/v1/charges"}}
}
