# Service catalog: maps (host, method, path) of well-known APIs to the scope a request
# needs, so a policy can say "the token must hold the scope this request needs".
#
#   import data.portcullis.lib.catalog
#   deny contains msg if { not catalog.scope_held; msg := catalog.missing_scope_reason }
#
# A request is classified by every method it may be performed as (`methods`): its own and
# the method override it carries, so X-HTTP-Method-Override cannot turn a write into a read.
#
# Routes are indexed by host and method: `exact` maps literal paths, `patterns` lists globs
# with "/" as delimiter ("*" is one segment, "**" any number) tried in order after an exact
# miss, so specific patterns come before general ones. Granted scopes may use "*" for one
# segment ("stripe:customer:*", "openai:*:*").
package portcullis.lib.catalog

import rego.v1

llm_hosts := {"api.openai.com", "api.anthropic.com"}

exact := {
	"api.openai.com": {
		"POST": {
			"/v1/chat/completions": "openai:chat:create",
			"/v1/responses": "openai:responses:create",
			"/v1/completions": "openai:completions:create",
			"/v1/embeddings": "openai:embeddings:create",
			"/v1/moderations": "openai:moderations:create",
			"/v1/files": "openai:files:write",
		},
		"GET": {
			"/v1/models": "openai:models:read",
			"/v1/files": "openai:files:read",
		},
	},
	"api.anthropic.com": {
		"POST": {
			"/v1/messages": "anthropic:messages:create",
			"/v1/messages/count_tokens": "anthropic:messages:count_tokens",
			"/v1/messages/batches": "anthropic:batches:create",
		},
		"GET": {
			"/v1/models": "anthropic:models:read",
		},
	},
	"api.stripe.com": {
		"GET": {
			"/v1/customers": "stripe:customer:read",
			"/v1/charges": "stripe:charge:read",
			"/v1/payment_intents": "stripe:payment_intent:read",
			"/v1/invoices": "stripe:invoice:read",
			"/v1/balance": "stripe:balance:read",
		},
		"POST": {
			"/v1/customers": "stripe:customer:write",
			"/v1/charges": "stripe:charge:write",
			"/v1/payment_intents": "stripe:payment_intent:write",
			"/v1/refunds": "stripe:refund:write",
		},
	},
	"api.github.com": {
		"GET": {
			"/user": "github:user:read",
		},
	},
}

patterns := {
	"api.openai.com": {
		"POST": [["/v1/images/**", "openai:images:create"], ["/v1/audio/**", "openai:audio:create"]],
		"GET": [["/v1/models/*", "openai:models:read"], ["/v1/files/**", "openai:files:read"]],
		"DELETE": [["/v1/files/*", "openai:files:delete"]],
	},
	"api.anthropic.com": {
		"GET": [["/v1/messages/batches/**", "anthropic:batches:read"], ["/v1/models/*", "anthropic:models:read"]],
	},
	"api.stripe.com": {
		"GET": [["/v1/customers/**", "stripe:customer:read"], ["/v1/charges/**", "stripe:charge:read"], ["/v1/payment_intents/**", "stripe:payment_intent:read"], ["/v1/refunds/**", "stripe:refund:read"], ["/v1/invoices/**", "stripe:invoice:read"]],
		"POST": [["/v1/customers/**", "stripe:customer:write"], ["/v1/charges/**", "stripe:charge:write"], ["/v1/payment_intents/**", "stripe:payment_intent:write"]],
		"DELETE": [["/v1/customers/*", "stripe:customer:delete"]],
	},
	"api.github.com": {
		"POST": [["/repos/*/*/issues", "github:issue:write"], ["/repos/*/*/issues/*/comments", "github:issue:write"], ["/repos/*/*/pulls", "github:pull:write"]],
		"PATCH": [["/repos/*/*/issues/*", "github:issue:write"]],
		"GET": [["/repos/*/*/issues", "github:issue:read"], ["/repos/*/*/issues/**", "github:issue:read"], ["/repos/*/*/pulls", "github:pull:read"], ["/repos/*/*/pulls/**", "github:pull:read"], ["/repos/*/*", "github:repo:read"], ["/repos/*/*/**", "github:repo:read"]],
		"PUT": [["/repos/*/*/contents/**", "github:contents:write"]],
		"DELETE": [["/repos/*/*", "github:repo:delete"]],
	},
}

# Hosts the catalog knows.
known_hosts := {h | some h, _ in exact} | {h | some h, _ in patterns}

# The scope a (host, method, path) needs, or undefined when no route matches.
scope_for(host, method, path) := exact[host][upper(method)][path]

scope_for(host, method, path) := scopes[0] if {
	not exact[host][upper(method)][path]
	scopes := [p[1] |
		some p in patterns[host][upper(method)]
		glob.match(p[0], ["/"], path)
	]
	count(scopes) > 0
}

# Methods an upstream may perform for this request: its own and, when it asks for another
# one (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override or the `_method` query
# parameter; the gateway exposes it as input.request.method_override), that one too.
# Whether an upstream honours an override is unknown, so a request must be acceptable as
# every one of them: a GET asking for POST needs the POST's scope, and a POST asking for
# GET still needs it too.
methods contains upper(input.request.method)

methods contains input.request.method_override if is_string(input.request.method_override)

# The method the request asks the upstream to perform: the override when present.
effective_method := input.request.method_override if is_string(input.request.method_override)

effective_method := upper(input.request.method) if not is_string(input.request.method_override)

# The override could not be read as one method ("*": conflicting overrides or a value that
# is not a method). On a catalogued host it could be anything, so no scope suffices.
ambiguous_method if {
	input.kind == "http"
	input.request.host in known_hosts
	input.request.method_override == "*"
}

# The scope the effective method needs (undefined for CONNECT and uncatalogued routes).
required_scope := scope_for(input.request.host, effective_method, input.request.path) if {
	input.kind == "http"
}

# Every scope the request needs: one per method in `methods` that the catalog knows.
required_scopes contains scope if {
	input.kind == "http"
	some m in methods
	scope := scope_for(input.request.host, m, input.request.path)
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
grants(scope) if scope in effective_scopes

grants(scope) if {
	some s in effective_scopes
	contains(s, "*")
	glob.match(s, [":"], scope)
}

# True when the agent holds every scope the request needs (none for uncatalogued routes).
scope_held if {
	not ambiguous_method
	count(missing_scopes) == 0
}

# [method, scope] for each needed scope the agent does not hold, sorted.
missing_scopes := sort([[m, scope] |
	some m in methods
	scope := scope_for(input.request.host, m, input.request.path)
	input.kind == "http"
	not grants(scope)
])

# The missing scope of the effective method, if it misses one (named first in reasons).
effective_missing_scope := pair[1] if {
	some pair in missing_scopes
	pair[0] == effective_method
}

missing_scope_reason := sprintf("ambiguous method override for %s %s%s: conflicting or invalid X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override or _method", [upper(input.request.method), input.request.host, input.request.path]) if {
	ambiguous_method
}

missing_scope_reason := sprintf("missing scope %s for %s %s%s", [effective_missing_scope, effective_method, input.request.host, input.request.path]) if {
	not ambiguous_method
}

missing_scope_reason := sprintf("missing scope %s for %s %s%s", [missing_scopes[0][1], missing_scopes[0][0], input.request.host, input.request.path]) if {
	not ambiguous_method
	not effective_missing_scope
	count(missing_scopes) > 0
}
