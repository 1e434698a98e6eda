# Sourced by benches/load.sh and benches/count.sh: the gateway configuration of the
# governed profile, the one users run. governed_config WORK ROOT PORTS PROVIDERS
# writes WORK/gateway.toml and WORK/policies, and sets BENCH_SECRET (the agent's
# secret, passed to the gateway in BENCH_AGENT_SECRET):
#   PORTS      the origin ports, comma-separated (proxy.allowed_ports)
#   PROVIDERS  space-separated host:port entries classified as OpenAI-compatible
#              LLM providers (the last one may be an HTTPS host, intercepted)
# Expects WORK/gwca (portcullis ca init) and WORK/tls/ca.pem (the origin's CA).
governed_config() {
  local work="$1" root="$2" ports="$3" providers="$4" p i=0
  BENCH_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
  mkdir -p "$work/policies"
  cp -r "$root/config/policies/." "$work/policies/"
  rm -f "$work/policies/kustomization.yaml"
  cat >"$work/policies/bench.rego" <<'REGO'
# The bench origins: loopback, reached by the bench agent only.
package portcullis.policy.bench

import rego.v1

allow if {
	input.agent.id == "bench"
	input.request.host in {"127.0.0.1", "localhost"}
}
REGO
  {
    cat <<EOF
[proxy]
listen = "127.0.0.1:0"
allow_private = ["127.0.0.1/32"]
allowed_ports = [$ports]
${GATEWAY_PROXY_EXTRA:-}
[admin]
listen = "127.0.0.1:0"
[log]
level = "info"
[store]
url = "sqlite://$work/data/portcullis.db"
credentials_key = "$work/data/credentials.key"
[identity]
signing_key = "$work/data/signing.key"
create_demo_agent = false
[policy]
dir = "$work/policies"
[audit]
sinks = ["store", "jsonl"]
jsonl_path = "$work/data/audit.jsonl"
[tls]
ca_cert = "$work/gwca/ca.pem"
ca_key = "$work/gwca/ca.key"
upstream_ca = ["$work/tls/ca.pem"]
[[agents]]
id = "bench"
secret_env = "BENCH_AGENT_SECRET"
token_ttl = "24h"
[agents.limits]
rpm = 100000000
tpm = 1000000000000
tokens_per_day = 1000000000000
max_concurrent = 10000
EOF
    for p in $providers; do
      i=$((i + 1))
      printf '[[llm.providers]]\nname = "bench%d"\nhost = "%s"\nformat = "openai"\n' "$i" "$p"
    done
    printf '%s\n' "${GATEWAY_CONFIG_EXTRA:-}"
  } >"$work/gateway.toml"
}
