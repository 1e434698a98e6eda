#!/usr/bin/env bash
# Instructions and heap allocations per request through the gateway, counted by
# valgrind (callgrind and dhat): deterministic, so a lever can be judged on a noisy
# shared machine where CPU-time figures move by ±15 %. Two fixed-count runs per tool
# (N1 and N2 requests on one keep-alive connection); the difference divided by
# N2 - N1 is the per-request cost, start-up and shutdown cancel out.
#
#   benches/count.sh                       # governed chat (Basic auth), see load.sh
#   LOAD=stream benches/count.sh           # 24-event SSE answers
#   AUTH=bearer benches/count.sh           # a token from POST /oauth/token
#   PROFILE=plain LOAD=json benches/count.sh   # the bare proxy, GET of 1 KiB JSON
#   TOOLS=callgrind N1=100 N2=600 benches/count.sh
#   KEEP=/tmp/prof benches/count.sh        # keep the N2 runs' callgrind/dhat output files
#
# dhat counts the system allocator's blocks: the gateway uses it (mimalloc was measured and
# dropped, see docs/performance.md), so the dhat line is every heap allocation.
#
# Prints one line per tool, e.g.
#   COUNT governed chat basic callgrind instructions/request 412345
#   COUNT governed chat basic dhat blocks/request 118.0 bytes/request 98211
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/benches"
GATEWAY="${GATEWAY:-$ROOT/target/release/portcullis}"
PROFILE="${PROFILE:-governed}"
LOAD="${LOAD:-chat}"
AUTH="${AUTH:-basic}"
N1="${N1:-200}"
N2="${N2:-1200}"
TOOLS="${TOOLS:-callgrind dhat}"
say() { printf '%s\n' "$*" >&2; }
for tool in valgrind python3 curl; do
  command -v "$tool" >/dev/null || { say "missing: $tool (apt-get install $tool)"; exit 1; }
done
[ -x "$GATEWAY" ] || { say "no gateway binary at $GATEWAY (cargo build --release -p portcullis)"; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { say "missing: nginx (apt-get install nginx-light)"; exit 1; }

WORK="$(mktemp -d /tmp/portcullis-count.XXXXXX)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 "$BENCH/load_helpers.py" free-port; }

# --- origin: nginx, the governed answers and a 1 KiB JSON -------------------------
# shellcheck source=benches/bodies.sh
source "$BENCH/bodies.sh"
bench_bodies "$WORK"
ORIGIN_PORT="$(free_port)"
CHAT_PORT="$(free_port)"
SSE_PORT="$(free_port)"
mkdir -p "$WORK/nginx" "$WORK/tls"
PAD="$(printf 'x%.0s' $(seq 1 960))"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    location = /json { default_type application/json; return 200 '{"id":"bench","pad":"$PAD"}'; }
  }
  server {
    listen 127.0.0.1:$CHAT_PORT;
    $(nginx_answer_location /v1/chat/completions "$WORK/chat-answer.json" application/json)
  }
  server {
    listen 127.0.0.1:$SSE_PORT;
    $(nginx_answer_location /v1/chat/completions "$WORK/sse-answer.txt" text/event-stream)
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/stderr" &
PIDS+=($!)
case "$LOAD" in
  json) URL="http://127.0.0.1:$ORIGIN_PORT/json"; METHOD=GET; BODY="" ;;
  chat) URL="http://127.0.0.1:$CHAT_PORT/v1/chat/completions"; METHOD=POST; BODY="$WORK/chat.json" ;;
  stream) URL="http://127.0.0.1:$SSE_PORT/v1/chat/completions"; METHOD=POST; BODY="$WORK/stream.json" ;;
  *) say "LOAD must be json, chat or stream"; exit 2 ;;
esac

# --- gateway configuration ---------------------------------------------------------
"$GATEWAY" ca init --dir "$WORK/gwca" >/dev/null
cp "$WORK/gwca/ca.pem" "$WORK/tls/ca.pem"   # no TLS origin here; any valid PEM will do
if [ "$PROFILE" = governed ]; then
  # shellcheck source=benches/governed.sh
  source "$BENCH/governed.sh"
  governed_config "$WORK" "$ROOT" "$ORIGIN_PORT, $CHAT_PORT, $SSE_PORT" \
    "127.0.0.1:$CHAT_PORT 127.0.0.1:$SSE_PORT"
else
  BENCH_SECRET=""
  cat >"$WORK/gateway.toml" <<EOF
[proxy]
listen = "127.0.0.1:0"
allow_unauthenticated = true
allow_private = ["127.0.0.1/32"]
allowed_ports = [$ORIGIN_PORT, $CHAT_PORT, $SSE_PORT]
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
[store]
url = "sqlite://$WORK/data/portcullis.db"
credentials_key = "$WORK/data/credentials.key"
[identity]
signing_key = "$WORK/data/signing.key"
create_demo_agent = false
[tls]
ca_cert = "$WORK/gwca/ca.pem"
ca_key = "$WORK/gwca/ca.key"
EOF
fi

# --- one counted run: start under valgrind, N requests, SIGINT, read the total -----
count_run() { # tool n -> "instructions" (callgrind) or "bytes blocks" (dhat)
  local tool="$1" n="$2" vg pid proxy auth=""
  rm -rf "$WORK/data" "$WORK/gw.out" "$WORK/gw.err"
  if [ "$tool" = callgrind ]; then
    # Instrumentation is switched on once the gateway is up (callgrind_control -i on), so
    # the kept profile shows the requests, not the policy compilation at start.
    vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out")
  else
    vg=(valgrind --tool=dhat --dhat-out-file="$WORK/dhat.out")
  fi
  (cd "$WORK" && BENCH_AGENT_SECRET="$BENCH_SECRET" exec "${vg[@]}" "$GATEWAY" serve \
    --config "$WORK/gateway.toml" >"$WORK/gw.out" 2>"$WORK/gw.err") &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q 'proxy=' "$WORK/gw.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { say "gateway exited:"; tail -20 "$WORK/gw.err" >&2; exit 1; }
    sleep 0.1
  done
  proxy="$(grep -o 'proxy=[0-9.:]*' "$WORK/gw.out" | head -1 | cut -d= -f2)"
  if [ "$PROFILE" = governed ]; then
    auth="Basic $(printf 'bench:%s' "$BENCH_SECRET" | base64 -w0)"
    if [ "$AUTH" = bearer ]; then
      auth="Bearer $(curl -fsS -u "bench:$BENCH_SECRET" -d grant_type=client_credentials \
        "http://$proxy/oauth/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
    fi
  fi
  if [ "$tool" = callgrind ]; then callgrind_control -i on "$pid" >/dev/null; fi
  if python3 - "$proxy" "$URL" "$METHOD" "$BODY" "$n" "$auth" <<'PY'
import http.client, sys
proxy, url, method, body_file, n, auth = sys.argv[1:7]
host, port = proxy.rsplit(":", 1)
body = open(body_file, "rb").read() if body_file else None
headers = {"Proxy-Authorization": auth} if auth else {}
if body:
    headers["Content-Type"] = "application/json"
c = http.client.HTTPConnection(host, int(port), timeout=120)
bad = 0
for _ in range(int(n)):
    c.request(method, url, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        bad += 1
        last = (r.status, r.read()[:300])
if bad:
    sys.exit(f"{bad} of {n} requests were not answered 200, last: {last}")
PY
  then :; else say "gateway log:"; tail -5 "$WORK/gw.err" >&2; kill -INT "$pid"; exit 1; fi
  kill -INT "$pid"
  wait "$pid" || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$WORK"/cg.out "$WORK"/dhat.out "$KEEP/" 2>/dev/null || true; fi
  if [ "$tool" = callgrind ]; then
    grep -o 'Collected : [0-9]*' "$WORK/gw.err" | awk '{print $3}'
  else
    grep -E '^==[0-9]+== Total:' "$WORK/gw.err" | sed 's/,//g' | awk '{print $3, $6}'
  fi
}

for tool in $TOOLS; do
  a="$(count_run "$tool" "$N1")"
  b="$(count_run "$tool" "$N2")"
  if [ "$tool" = callgrind ]; then
    awk -v a="$a" -v b="$b" -v n="$((N2 - N1))" -v l="$PROFILE $LOAD $AUTH" \
      'BEGIN {printf "COUNT %s callgrind instructions/request %d\n", l, (b - a) / n}'
  else
    awk -v a="$a" -v b="$b" -v n="$((N2 - N1))" -v l="$PROFILE $LOAD $AUTH" \
      'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "COUNT %s dhat blocks/request %.1f bytes/request %d\n", l, (y[2] - x[2]) / n, (y[1] - x[1]) / n}'
  fi
done
