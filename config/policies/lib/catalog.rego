# Service catalog: maps (host, method, path) of well-known APIs to the scope a request
# needs, so a policy can say "the token must hold the scope this request needs".
#
#   import data.portcullis.lib.catalog
#   deny contains msg if { not catalog.scope_held; msg := catalog.missing_scope_reason }
#
# Paths are globs with "/" as delimiter: "*" is one segment, "**" any number.
# Granted scopes may use "*" for one segment ("stripe:customer:*", "openai:*:*").
# The first matching route wins, so specific routes come before general ones.
package portcullis.lib.catalog

import rego.v1

llm_hosts := {"api.openai.com", "api.anthropic.com"}

routes := [
	# OpenAI
	{"host": "api.openai.com", "method": "POST", "path": "/v1/chat/completions", "scope": "openai:chat:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/responses", "scope": "openai:responses:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/completions", "scope": "openai:completions:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/embeddings", "scope": "openai:embeddings:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/moderations", "scope": "openai:moderations:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/images/**", "scope": "openai:images:create"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/audio/**", "scope": "openai:audio:create"},
	{"host": "api.openai.com", "method": "GET", "path": "/v1/models", "scope": "openai:models:read"},
	{"host": "api.openai.com", "method": "GET", "path": "/v1/models/*", "scope": "openai:models:read"},
	{"host": "api.openai.com", "method": "GET", "path": "/v1/files/**", "scope": "openai:files:read"},
	{"host": "api.openai.com", "method": "GET", "path": "/v1/files", "scope": "openai:files:read"},
	{"host": "api.openai.com", "method": "POST", "path": "/v1/files", "scope": "openai:files:write"},
	{"host": "api.openai.com", "method": "DELETE", "path": "/v1/files/*", "scope": "openai:files:delete"},
	# Anthropic
	{"host": "api.anthropic.com", "method": "POST", "path": "/v1/messages", "scope": "anthropic:messages:create"},
	{"host": "api.anthropic.com", "method": "POST", "path": "/v1/messages/count_tokens", "scope": "anthropic:messages:count_tokens"},
	{"host": "api.anthropic.com", "method": "POST", "path": "/v1/messages/batches", "scope": "anthropic:batches:create"},
	{"host": "api.anthropic.com", "method": "GET", "path": "/v1/messages/batches/**", "scope": "anthropic:batches:read"},
	{"host": "api.anthropic.com", "method": "GET", "path": "/v1/models", "scope": "anthropic:models:read"},
	{"host": "api.anthropic.com", "method": "GET", "path": "/v1/models/*", "scope": "anthropic:models:read"},
	# Stripe
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/customers", "scope": "stripe:customer:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/customers/**", "scope": "stripe:customer:read"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/customers", "scope": "stripe:customer:write"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/customers/**", "scope": "stripe:customer:write"},
	{"host": "api.stripe.com", "method": "DELETE", "path": "/v1/customers/*", "scope": "stripe:customer:delete"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/charges", "scope": "stripe:charge:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/charges/**", "scope": "stripe:charge:read"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/charges", "scope": "stripe:charge:write"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/charges/**", "scope": "stripe:charge:write"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/payment_intents", "scope": "stripe:payment_intent:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/payment_intents/**", "scope": "stripe:payment_intent:read"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/payment_intents", "scope": "stripe:payment_intent:write"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/payment_intents/**", "scope": "stripe:payment_intent:write"},
	{"host": "api.stripe.com", "method": "POST", "path": "/v1/refunds", "scope": "stripe:refund:write"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/refunds/**", "scope": "stripe:refund:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/invoices", "scope": "stripe:invoice:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/invoices/**", "scope": "stripe:invoice:read"},
	{"host": "api.stripe.com", "method": "GET", "path": "/v1/balance", "scope": "stripe:balance:read"},
	# GitHub
	{"host": "api.github.com", "method": "GET", "path": "/user", "scope": "github:user:read"},
	{"host": "api.github.com", "method": "POST", "path": "/repos/*/*/issues", "scope": "github:issue:write"},
	{"host": "api.github.com", "method": "PATCH", "path": "/repos/*/*/issues/*", "scope": "github:issue:write"},
	{"host": "api.github.com", "method": "POST", "path": "/repos/*/*/issues/*/comments", "scope": "github:issue:write"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*/issues", "scope": "github:issue:read"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*/issues/**", "scope": "github:issue:read"},
	{"host": "api.github.com", "method": "POST", "path": "/repos/*/*/pulls", "scope": "github:pull:write"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*/pulls", "scope": "github:pull:read"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*/pulls/**", "scope": "github:pull:read"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*", "scope": "github:repo:read"},
	{"host": "api.github.com", "method": "GET", "path": "/repos/*/*/**", "scope": "github:repo:read"},
	{"host": "api.github.com", "method": "PUT", "path": "/repos/*/*/contents/**", "scope": "github:contents:write"},
	{"host": "api.github.com", "method": "DELETE", "path": "/repos/*/*", "scope": "github:repo:delete"},
]

# Hosts the catalog knows.
known_hosts := {r.host | some r in routes}

# The scope a (host, method, path) needs, or undefined when no route matches.
scope_for(host, method, path) := scopes[0] if {
	scopes := [r.scope |
		some r in routes
		r.host == host
		r.method == upper(method)
		glob.match(r.path, ["/"], path)
	]
	count(scopes) > 0
}

# The scope the current request needs (undefined for CONNECT and uncatalogued routes).
required_scope := scope_for(input.request.host, input.request.method, input.request.path) if {
	input.kind == "http"
}

# Effective scopes: the token's when authenticated with a token, else the agent's allowed scopes.
effective_scopes contains s if {
	some s in input.token.scopes
}

effective_scopes contains s if {
	not input.token
	some s in input.agent.scopes
}

# Whether the effective scopes grant `scope` (exactly or through a "*" segment).
grants(scope) if {
	some s in effective_scopes
	glob.match(s, [":"], scope)
}

# True when the request needs no catalogued scope or the agent holds it.
scope_held if not required_scope

scope_held if grants(required_scope)

missing_scope_reason := sprintf("missing scope %s for %s %s%s", [required_scope, upper(input.request.method), input.request.host, input.request.path]) if {
	not scope_held
}
