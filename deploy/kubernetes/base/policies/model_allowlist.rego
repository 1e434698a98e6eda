# Only approved models, with a cap on requested output tokens.
package portcullis.policy.model_allowlist

import rego.v1

# Exact model names, then glob patterns (for dated snapshots), per provider.
allowed_models := {
	"openai": {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini", "o4-mini", "text-embedding-3-small", "text-embedding-3-large"},
	"anthropic": set(),
}

allowed_model_patterns := {
	"openai": ["gpt-4o-2024-*", "gpt-4.1-2025-*"],
	"anthropic": ["claude-sonnet-4-*", "claude-opus-4-*", "claude-3-5-haiku-*", "claude-3-7-sonnet-*", "claude-haiku-4-*"],
}

max_output_tokens := 32768

model_allowed(provider, model) if model in allowed_models[provider]

model_allowed(provider, model) if {
	some pattern in allowed_model_patterns[provider]
	glob.match(pattern, [], model)
}

deny contains sprintf("model %s is not on the %s allowlist", [input.llm.model, input.llm.provider]) if {
	input.llm.provider in object.keys(allowed_models)
	is_string(input.llm.model)
	not model_allowed(input.llm.provider, input.llm.model)
}

deny contains sprintf("%s requests must name a model", [input.llm.provider]) if {
	input.llm.provider in object.keys(allowed_models)
	input.llm.api in {"chat.completions", "responses", "messages", "embeddings"}
	not is_string(input.llm.model)
}

deny contains sprintf("max_tokens %d exceeds %d", [input.llm.max_tokens, max_output_tokens]) if {
	input.llm.max_tokens > max_output_tokens
}

# The classifier reads the API and the body of POST requests only: a method override
# (GET asking for POST) would hide the model from the checks above.
deny contains sprintf("method override %s is not allowed on %s requests", [input.request.method_override, input.llm.provider]) if {
	input.llm.provider in object.keys(allowed_models)
	is_string(input.request.method_override)
	input.request.method_override != upper(input.request.method)
}

test_dated_claude_model_allowed if {
	model_allowed("anthropic", "claude-sonnet-4-20250514")
}

test_unknown_model_denied if {
	count(deny) == 1 with input as {"llm": {"provider": "openai", "api": "chat.completions", "model": "gpt-3.5-turbo"}}
}
