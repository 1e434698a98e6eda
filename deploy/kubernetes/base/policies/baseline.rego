# The default policy: authenticated agents may reach the known LLM providers, and every
# request to a catalogued API must carry the scope it needs. Everything else is denied
# unless another policy allows it.
package portcullis.policy.baseline

import rego.v1

import data.portcullis.lib.catalog

default allow := false

# CONNECT tunnels and plain requests to LLM providers, on the standard HTTPS port.
allow if {
	input.kind in {"connect", "http"}
	input.request.host in catalog.llm_hosts
	input.request.port == 443
}

# Token requests are checked against allowed scopes by the token endpoint itself.
allow if input.kind == "token"

deny contains catalog.missing_scope_reason if {
	not catalog.scope_held
}

deny contains "unauthenticated requests are not allowed" if {
	input.agent.id == "anonymous"
}

test_allows_openai_connect if {
	allow with input as {"kind": "connect", "agent": {"id": "a1"}, "request": {"host": "api.openai.com", "port": 443}}
}

test_denies_other_hosts if {
	not allow with input as {"kind": "connect", "agent": {"id": "a1"}, "request": {"host": "example.com", "port": 443}}
}
