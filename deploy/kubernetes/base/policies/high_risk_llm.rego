# Shadow-mode example: would refuse LLM calls by high-risk agents that ask for long
# outputs or streams. `mode := "shadow"` makes it audit-only (`would_deny`) until promoted
# with `PUT /v1/policies/high_risk_llm/mode` or a `[[policy.bindings]]` entry.
package portcullis.policy.high_risk_llm

import rego.v1

mode := "shadow"

high_risk if input.agent.risk_level in {"HIGH", "CRITICAL"}

deny contains sprintf("%s-risk agent may not request more than 4096 output tokens", [lower(input.agent.risk_level)]) if {
	high_risk
	input.llm.max_tokens > 4096
}

deny contains sprintf("%s-risk agent may not stream LLM responses", [lower(input.agent.risk_level)]) if {
	high_risk
	input.llm.stream == true
}
