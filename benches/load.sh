#!/usr/bin/env bash
# Load benchmark: the same load directly against a local origin and through the
# gateway, in one run. Prints throughput, p50/p99 and the ratios; the targets of
# issue 2 are reported, never asserted (this script exits 0 whatever the figures).
#
#   benches/load.sh                 # builds target/release/portcullis if needed
#   DURATION=10 CONNS=50 benches/load.sh
#   TLS=0 benches/load.sh           # skip the TLS interception section
#   TLS=only benches/load.sh        # only the TLS interception section
#   PROFILE=plain benches/load.sh   # the bare proxy (no auth, no audit, GET of 1 KiB JSON)
#   TELEMETRY=1 benches/load.sh     # [telemetry] on: spans and GenAI metrics exported to a
#                                   # local OTLP sink that accepts and discards them (compare
#                                   # the cpu-us/req column with a TELEMETRY=0 run)
#
# PROFILE=governed (the default) runs the configuration users run: every request
# authenticated (Basic with the agent's secret, and a second chat row with a Bearer
# token from POST /oauth/token), the shipped policies (config/policies) plus one
# that allows the bench hosts, generous per-agent limits (rpm, tpm, max_concurrent
# all checked), LLM classification and the usage tap ([[llm.providers]] for the
# origins), audit to the store (SQLite) and JSONL, and the access log (info) to a
# file. Rows: chat = POST /v1/chat/completions answered with a ~300-byte JSON
# completion that carries usage; stream = the same with "stream": true, answered
# with 24 SSE events (~4.6 KB, usage in the last chunk). The gateway's CPU time per
# request (utime + stime from /proc over the measured window / requests) is the
# figure to watch; instruction counts per request: benches/count.sh.
#
# Tools (chosen because they install from Debian in seconds; `oha` from crates.io
# is a multi-minute build on this 2-core machine):
#   wrk    load generator. It has no proxy option, so for the gateway runs
#          benches/wrk.lua rewrites the request line to absolute form
#          (`GET http://127.0.0.1:ORIGIN/json HTTP/1.1`) while the connections
#          go to the gateway: exactly what a forward-proxy client sends.
#          Fixed rate: wrk has no -R (that is wrk2, not packaged), so the
#          1,000 req/s runs pace 20 connections with a 20 ms pause after each
#          response (wrk's delay() hook); the achieved rate is printed.
#   nginx  the origin: one worker, `return 200` of a 1 KiB JSON body, keep-alive,
#          no access log. It is compiled and fast, so it is not the bottleneck.
#   python3 benches/load_helpers.py: the SSE-like stream origin for the TTFB
#          measurement, the TTFB client, and the holder of 1,000 idle
#          keep-alive connections; and the HTTPS client of the TLS section
#          (`load_helpers.py tls`: N processes, direct TLS or CONNECT + TLS
#          through the gateway, the same code for both sides). wrk cannot
#          CONNECT through a proxy, h2load has no proxy support, and `oha` is
#          a multi-minute build here.
#   openssl a throwaway test CA and a localhost leaf for nginx's TLS listener,
#          generated into the run's temp dir and deleted with it.
# Missing wrk/nginx are installed with apt-get when running as root.
#
# Everything started here (nginx, the stream origin, the gateway, the idle
# connection holder) is stopped on exit by the trap below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/benches"
DURATION="${DURATION:-8}"           # seconds per measured run
WARMUP="${WARMUP:-2}"               # seconds of warm-up before each measured run
ROUNDS="${ROUNDS:-3}"               # direct/gateway pairs, interleaved; medians reported
CONNS="${CONNS:-50}"                # connections for the throughput runs
THREADS="${THREADS:-2}"             # wrk threads
RATE_CONNS="${RATE_CONNS:-20}"      # connections for the fixed-rate runs
RATE_DELAY_MS="${RATE_DELAY_MS:-20}" # pause per connection: 20 conns / 20 ms = 1,000 req/s
TTFB_RUNS="${TTFB_RUNS:-200}"
IDLE_CONNS="${IDLE_CONNS:-1000}"
TLS="${TLS:-1}"                     # 1: also run the TLS section; 0: skip it; only: only it
TLS_PROCS="${TLS_PROCS:-4}"         # client processes for the TLS runs (one connection each)
TLS_DURATION="${TLS_DURATION:-5}"   # seconds per measured TLS run
PROFILE="${PROFILE:-governed}"      # governed | plain (see above)
TELEMETRY="${TELEMETRY:-0}"         # 1: export OTLP to a local discarding sink (see above)
GATEWAY="${GATEWAY:-$ROOT/target/release/portcullis}"
# NICE=-10 runs every benchmark process at that priority (negative needs root):
# on a machine shared with builds it makes the figures less noisy, at the
# cost of slowing the other work for the few minutes of the run.
NICE="${NICE:-}"
# Extra lines for the gateway's [proxy] table, for experiments, e.g.
#   GATEWAY_PROXY_EXTRA='upstream_pool_max_idle = 64' benches/load.sh
#   GATEWAY_CONFIG_EXTRA=$'[audit]\nsinks = []' benches/load.sh   # other sections, e.g. audit off

say() { printf '%s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
if [ "$TLS" != 0 ]; then command -v openssl >/dev/null || need+=(openssl); fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing: ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    say "missing tools: ${need[*]} (install them, e.g. apt-get install ${need[*]})"
    exit 1
  fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "building the gateway (cargo build --release -p portcullis)"
  (cd "$ROOT" && cargo build --release -p portcullis --quiet)
fi
[ -x "$GATEWAY" ] || { say "no gateway binary at $GATEWAY"; exit 1; }

ulimit -n 8192 2>/dev/null || true
RUN=()
if [ -n "$NICE" ]; then RUN=(nice -n "$NICE"); fi

# --- lifecycle ----------------------------------------------------------------
WORK="$(mktemp -d /tmp/portcullis-load.XXXXXX)"
PIDS=()
HOLDER_PID=""
cleanup() {
  local pid status=$?
  if [ -n "${GW_PID:-}" ] && ! kill -0 "$GW_PID" 2>/dev/null; then
    wait "$GW_PID" 2>/dev/null; say "the gateway exited early (status $?); its stderr:"
    tail -n 30 "$WORK/gateway.err" >&2 2>/dev/null || true
  elif [ "$status" != 0 ] && [ -s "$WORK/gateway.err" ]; then
    say "gateway stderr:"; tail -n 30 "$WORK/gateway.err" >&2
  fi
  if [ -n "$HOLDER_PID" ]; then kill "$HOLDER_PID" 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 "$BENCH/load_helpers.py" free-port; }

wait_http() { # URL [proxy]
  local i
  for i in $(seq 1 100); do
    if curl -fsS -o /dev/null ${2:+-x "$2"} ${PROXY_AUTH:+--proxy-header "Proxy-Authorization: $PROXY_AUTH"} \
      "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  say "timed out waiting for $1"; exit 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# --- origin: nginx -------------------------------------------------------------
ORIGIN_PORT="$(free_port)"
TLS_PORT="$(free_port)"
# A throwaway test CA and a localhost leaf (ECDSA P-256, like the gateway's minted
# leaves, so both handshakes sign with the same algorithm).
mkdir -p "$WORK/tls"
(
  cd "$WORK/tls"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=portcullis load test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out leaf.key 2>/dev/null
  openssl req -new -key leaf.key -subj "/CN=localhost" -out leaf.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile leaf.ext -out leaf.pem 2>/dev/null
)
JSON="$(python3 - <<'EOF'
import json
doc = {"id": "bench", "object": "chat.completion", "items": []}
i = 0
while len(json.dumps(doc, separators=(",", ":"))) < 1000:
    doc["items"].append({"n": i, "text": "lorem ipsum"})
    i += 1
s = json.dumps(doc, separators=(",", ":"))
pad = 1024 - len(s) - len(',"pad":""')
doc["pad"] = "x" * max(pad, 0)
print(json.dumps(doc, separators=(",", ":")))
EOF
)"
CHAT_PORT="$(free_port)"
SSE_PORT="$(free_port)"
# shellcheck source=benches/bodies.sh
source "$BENCH/bodies.sh"
bench_bodies "$WORK"   # the requests and the answers of the chat and stream rows
# nginx's worker runs as an unprivileged user: it must be able to read the answer files.
chmod o+x "$WORK"
chmod o+r "$WORK"/chat-answer.json "$WORK"/sse-answer.txt
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
    location = /json {
      default_type application/json;
      return 200 '$JSON';
    }
  }
  server {
    listen 127.0.0.1:$CHAT_PORT backlog=4096;
    $(nginx_answer_location /v1/chat/completions "$WORK/chat-answer.json" application/json)
  }
  server {
    listen 127.0.0.1:$SSE_PORT backlog=4096;
    $(nginx_answer_location /v1/chat/completions "$WORK/sse-answer.txt" text/event-stream)
  }
  server {
    listen 127.0.0.1:$TLS_PORT ssl backlog=4096;
    ssl_certificate $WORK/tls/leaf.pem;
    ssl_certificate_key $WORK/tls/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /json {
      default_type application/json;
      return 200 '$JSON';
    }
  }
}
EOF
"${RUN[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/stderr" &
PIDS+=($!)
ORIGIN="127.0.0.1:$ORIGIN_PORT"
wait_http "http://$ORIGIN/json"
BODY_BYTES="$(curl -fsS "http://$ORIGIN/json" | wc -c)"
TLS_URL="https://localhost:$TLS_PORT/json"
curl -fsS -o /dev/null --cacert "$WORK/tls/ca.pem" "$TLS_URL" || { say "nginx TLS listener not answering"; exit 1; }
NGINX_WORKER="$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | head -1)"

# --- origin: stream -------------------------------------------------------------
STREAM_PORT="$(free_port)"
"${RUN[@]}" python3 "$BENCH/load_helpers.py" stream-origin "$STREAM_PORT" &
PIDS+=($!)
STREAM="127.0.0.1:$STREAM_PORT"
wait_http "http://$STREAM/stream"

# --- OTLP sink (TELEMETRY=1) -----------------------------------------------------
if [ "$TELEMETRY" = 1 ]; then
  OTLP_PORT="$(free_port)"
  "${RUN[@]}" python3 "$BENCH/load_helpers.py" otlp-sink "$OTLP_PORT" &
  PIDS+=($!)
  GATEWAY_CONFIG_EXTRA="${GATEWAY_CONFIG_EXTRA:-}
[telemetry]
otlp_endpoint = \"http://127.0.0.1:$OTLP_PORT\"
"
fi

# --- gateway --------------------------------------------------------------------
# The gateway CA comes from `portcullis ca init` into the temp dir (so no dev CA
# is written under the current directory); tunnels to localhost are intercepted
# and the upstream (nginx) is verified against the test CA.
"$GATEWAY" ca init --dir "$WORK/gwca" >/dev/null
if [ "$PROFILE" = governed ]; then
  # shellcheck source=benches/governed.sh
  source "$BENCH/governed.sh"
  governed_config "$WORK" "$ROOT" "$ORIGIN_PORT, $STREAM_PORT, $TLS_PORT, $CHAT_PORT, $SSE_PORT" \
    "127.0.0.1:$CHAT_PORT 127.0.0.1:$SSE_PORT localhost:$TLS_PORT"
else
cat >"$WORK/gateway.toml" <<EOF
[proxy]
listen = "127.0.0.1:0"
allow_unauthenticated = true
allow_private = ["127.0.0.1/32"]
allowed_ports = [$ORIGIN_PORT, $STREAM_PORT, $TLS_PORT, $CHAT_PORT, $SSE_PORT]
${GATEWAY_PROXY_EXTRA:-}
[tls]
ca_cert = "$WORK/gwca/ca.pem"
ca_key = "$WORK/gwca/ca.key"
upstream_ca = ["$WORK/tls/ca.pem"]
intercept = ["localhost"]
[admin]
listen = "127.0.0.1:0"
[log]
level = "warn"
${GATEWAY_CONFIG_EXTRA:-}
EOF
fi
(cd "$WORK" && BENCH_AGENT_SECRET="${BENCH_SECRET:-}" exec "${RUN[@]}" "$GATEWAY" serve \
  --config "$WORK/gateway.toml" >"$WORK/gateway.out" 2>"$WORK/gateway.err") &
GW_PID=$!
PIDS+=("$GW_PID")
for _ in $(seq 1 100); do
  grep -q 'proxy=' "$WORK/gateway.out" 2>/dev/null && break
  kill -0 "$GW_PID" 2>/dev/null || { say "gateway exited:"; cat "$WORK/gateway.err" >&2; exit 1; }
  sleep 0.05
done
PROXY="$(grep -o 'proxy=[0-9.:]*' "$WORK/gateway.out" | head -1 | cut -d= -f2)"
ADMIN="$(grep -o 'admin=[0-9.:]*' "$WORK/gateway.out" | head -1 | cut -d= -f2)"
[ -n "$PROXY" ] || { say "no banner from the gateway"; cat "$WORK/gateway.err" >&2; exit 1; }
sleep 1
RSS_START="$(rss_kb "$GW_PID")"
BASIC=""; BEARER=""
if [ "$PROFILE" = governed ]; then
  BASIC="Basic $(printf 'bench:%s' "$BENCH_SECRET" | base64 -w0)"
  BEARER="Bearer $(curl -fsS -u "bench:$BENCH_SECRET" -d grant_type=client_credentials \
    "http://$PROXY/oauth/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
fi
export PROXY_AUTH="$BASIC"   # load_helpers.py: every request through the gateway
wait_http "http://$ORIGIN/json" "http://$PROXY"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
say "origin=$ORIGIN ($BODY_BYTES-byte JSON) stream=$STREAM gateway proxy=$PROXY admin=$ADMIN"
say "load average before: $LOAD_BEFORE"

field() { echo "$1" | awk -v i="$2" '{print $i}'; }

# Interleaved rounds (direct, gateway, direct, gateway, ...) so a burst of
# outside load hits both sides alike; the median of the rounds is reported.
median_result() { # file -> a RESULT line whose every field is the median over rounds
  awk '{for (i = 2; i <= NF; i++) v[i, NR] = $i; n = NR; nf = NF}
    END {printf "RESULT"
      for (i = 2; i <= nf; i++) {
        for (a = 1; a <= n; a++) c[a] = v[i, a]
        for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++) if (c[b] + 0 < c[a] + 0) {t = c[a]; c[a] = c[b]; c[b] = t}
        printf " %s", (n % 2) ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2
      }
      printf "\n"}' "$1"
}
if [ "$TLS" != only ]; then
# --- idle keep-alive connections (first, on a fresh gateway) ----------------------
say "opening $IDLE_CONNS idle keep-alive connections through the gateway"
RSS_IDLE_BEFORE="$(rss_kb "$GW_PID")"
mkfifo "$WORK/holder.in"
"${RUN[@]}" python3 "$BENCH/load_helpers.py" idle-conns "$PROXY" "http://$ORIGIN/json" "$IDLE_CONNS" \
  <"$WORK/holder.in" >"$WORK/holder.out" 2>"$WORK/holder.err" &
HOLDER_PID=$!
exec 9>"$WORK/holder.in"
for _ in $(seq 1 600); do
  grep -q READY "$WORK/holder.out" 2>/dev/null && break
  kill -0 "$HOLDER_PID" 2>/dev/null || break
  sleep 0.05
done
HOLDER_STATUS="$(cat "$WORK/holder.out" 2>/dev/null || true)"
[ -n "$HOLDER_STATUS" ] || { say "idle-connection holder failed:"; cat "$WORK/holder.err" >&2; }
sleep 1
RSS_IDLE_WITH="$(rss_kb "$GW_PID")"
ACTIVE_CONNS="$(curl -fsS "http://$ADMIN/metrics" | awk '/^portcullis_connections_active/ {print $2}')"
exec 9>&-
wait "$HOLDER_PID" 2>/dev/null || true
HOLDER_PID=""
sleep 1
RSS_IDLE_AFTER="$(rss_kb "$GW_PID")"

# --- wrk runs -------------------------------------------------------------------
run_wrk() { # conns duration target-env delay-env url auth
  local out
  out="$(WRK_TARGET="$3" WRK_DELAY_MS="$4" WRK_PROXY_AUTH="$6" "${RUN[@]}" wrk -t"$THREADS" -c"$1" \
    -d"$2"s -s "$BENCH/wrk.lua" "$5" 2>&1)" || { say "wrk failed: $out"; exit 1; }
  echo "$out" | grep '^RESULT' | tail -1
}

# CPU time (user + system, all threads) of a process in clock ticks, from /proc/PID/stat.
# The command name (field 2) may hold spaces, so the fields are counted after its ')'.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK="$(getconf CLK_TCK)"

# The request of a workload: URL at the origin, method and body file (WRK_METHOD and
# WRK_BODY_FILE, read by wrk.lua), set by workload().
workload() { # json | chat | stream
  case "$1" in
    json) W_URL="http://$ORIGIN/json"; export WRK_METHOD=GET WRK_BODY_FILE="" ;;
    chat) W_URL="http://127.0.0.1:$CHAT_PORT/v1/chat/completions"; export WRK_METHOD=POST WRK_BODY_FILE="$WORK/chat.json" ;;
    stream) W_URL="http://127.0.0.1:$SSE_PORT/v1/chat/completions"; export WRK_METHOD=POST WRK_BODY_FILE="$WORK/stream.json" ;;
  esac
}

measure() { # conns delay side(direct|basic|bearer|open) -> RESULT line + CPU us per request
  # The CPU column is the gateway's for gateway runs and the nginx worker's for direct
  # runs: CPU time over the measured window divided by the requests wrk completed.
  local conns="$1" delay="$2" side="$3" target="" url="$W_URL" pid="$NGINX_WORKER" auth=""
  local before line
  if [ "$side" != direct ]; then target="$W_URL"; url="http://$PROXY/"; pid="$GW_PID"; fi
  if [ "$side" = basic ]; then auth="$BASIC"; elif [ "$side" = bearer ]; then auth="$BEARER"; fi
  run_wrk "$conns" "$WARMUP" "$target" "$delay" "$url" "$auth" >/dev/null
  before="$(cpu_ticks "$pid")"
  line="$(run_wrk "$conns" "$DURATION" "$target" "$delay" "$url" "$auth")"
  echo "$line $(awk -v d="$(( $(cpu_ticks "$pid") - before ))" -v n="$(field "$line" 5)" -v hz="$CLK_TCK" \
    'BEGIN {printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0)}')"
}

rounds() { # conns delay prefix side... : interleaved rounds, one result file per side
  local conns="$1" delay="$2" prefix="$3" r side
  shift 3
  for side in "$@"; do : >"$WORK/$prefix.$side"; done
  for r in $(seq 1 "$ROUNDS"); do
    local progress="  round $r:"
    for side in "$@"; do
      measure "$conns" "$delay" "$side" >>"$WORK/$prefix.$side"
      progress="$progress $side $(cut -d' ' -f2-4,8 "$WORK/$prefix.$side" | tail -1)"
    done
    say "$progress  (req/s p50us p99us cpu-us/req)"
  done
}
if [ "$PROFILE" = governed ]; then
  GW_SIDES=(basic bearer); RATE_SIDE=basic; THR_LOADS=(chat stream)
else
  GW_SIDES=(open); RATE_SIDE=open; THR_LOADS=(json)
fi
for load in "${THR_LOADS[@]}"; do
  workload "$load"
  sides=(direct "${GW_SIDES[@]}")
  if [ "$load" = stream ]; then sides=(direct "${GW_SIDES[0]}"); fi
  say "throughput, $load, $CONNS connections, $ROUNDS x ${DURATION}s per side (${sides[*]})"
  rounds "$CONNS" 0 "thr-$load" "${sides[@]}"
done
workload "${THR_LOADS[0]}"
say "fixed rate (~$((RATE_CONNS * 1000 / RATE_DELAY_MS)) req/s), ${THR_LOADS[0]}, $ROUNDS x ${DURATION}s each side"
rounds "$RATE_CONNS" "$RATE_DELAY_MS" rate direct "$RATE_SIDE"
R_DIRECT="$(median_result "$WORK/rate.direct")"
R_GW="$(median_result "$WORK/rate.$RATE_SIDE")"
RSS_AFTER_LOAD="$(rss_kb "$GW_PID")"

say "time to first byte of a stream, $TTFB_RUNS requests per row"
H="$BENCH/load_helpers.py"
ttfb() { "${RUN[@]}" python3 "$H" ttfb "$@"; }
ttfb 10 "http://$STREAM/stream" "$PROXY" >/dev/null
ttfb 10 "http://$STREAM/stream" "" >/dev/null
ttfb_stats() { # -> "median p90 mean" in microseconds
  sort -n | awk '{v[NR]=$1; s+=$1} END {printf "%d %d %d\n", v[int((NR+1)/2)], v[int(NR*0.9)], s/NR}'
}
TK_DIRECT="$(ttfb "$TTFB_RUNS" "http://$STREAM/stream" "" keepalive | ttfb_stats)"
TK_GW="$(ttfb "$TTFB_RUNS" "http://$STREAM/stream" "$PROXY" keepalive | ttfb_stats)"
TT_DIRECT="$(ttfb "$TTFB_RUNS" "http://$STREAM/stream" "" | ttfb_stats)"
TT_GW="$(ttfb "$TTFB_RUNS" "http://$STREAM/stream" "$PROXY" | ttfb_stats)"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
UPSTREAM_ERRORS="$(curl -fsS "http://$ADMIN/metrics" | awk '/^portcullis_upstream_errors_total/ {s+=$2} END {print s+0}')"
TELEMETRY_LINE="off"
if [ "$TELEMETRY" = 1 ]; then
  TELEMETRY_LINE="$(curl -fsS "http://$ADMIN/metrics" | awk '
    /^portcullis_telemetry_exported_total\{signal="traces"/ {e+=$2}
    /^portcullis_telemetry_dropped_total\{.*signal="traces"/ {d+=$2}
    END {printf "on (spans exported %d, dropped %d)", e, d}')"
fi

# --- report ---------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN {printf "%.3f", u/1000}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo MISSED; fi; }

rd_p99="$(field "$R_DIRECT" 4)"; rg_p99="$(field "$R_GW" 4)"
rd_p50="$(field "$R_DIRECT" 3)"; rg_p50="$(field "$R_GW" 3)"
added_p99="$(awk -v a="$rg_p99" -v b="$rd_p99" 'BEGIN {print a-b}')"
added_p50="$(awk -v a="$rg_p50" -v b="$rd_p50" 'BEGIN {print a-b}')"
ttd="$(field "$TT_DIRECT" 1)"; ttg="$(field "$TT_GW" 1)"
added_tt="$(awk -v a="$ttg" -v b="$ttd" 'BEGIN {print a-b}')"
tkd="$(field "$TK_DIRECT" 1)"; tkg="$(field "$TK_GW" 1)"
added_tk="$(awk -v a="$tkg" -v b="$tkd" 'BEGIN {print a-b}')"
idle_delta="$((RSS_IDLE_WITH - RSS_IDLE_BEFORE))"

throughput_report() { # one table per workload: medians per side, ratios to direct
  local load side m d_rps rps ratio label
  for load in "${THR_LOADS[@]}"; do
    printf 'throughput, %s, %s connections   req/s        p50 ms    p99 ms   errors  non-2xx   CPU us/req\n' "$load" "$CONNS"
    d_rps="$(field "$(median_result "$WORK/thr-$load.direct")" 2)"
    for side in direct "${GW_SIDES[@]}"; do
      [ -f "$WORK/thr-$load.$side" ] || continue
      m="$(median_result "$WORK/thr-$load.$side")"
      case "$side" in
        direct) label="direct (nginx worker CPU)" ;;
        open) label="gateway (gateway CPU)" ;;
        *) label="gateway, $side auth" ;;
      esac
      printf '  %-28s %10s  %9s  %9s  %6s  %6s  %9s\n' "$label" "$(field "$m" 2)" "$(ms "$(field "$m" 3)")" \
        "$(ms "$(field "$m" 4)")" "$(field "$m" 6)" "$(field "$m" 7)" "$(field "$m" 8)"
    done
    for side in "${GW_SIDES[@]}"; do
      [ -f "$WORK/thr-$load.$side" ] || continue
      rps="$(field "$(median_result "$WORK/thr-$load.$side")" 2)"
      ratio="$(awk -v a="$rps" -v b="$d_rps" 'BEGIN {printf "%.2f", a/b}')"
      printf '  ratio %-22s %s     (target >= 0.45: %s)\n' "$side/direct" "$ratio" "$(verdict "$ratio >= 0.45")"
    done
  done
}

cat <<EOF

portcullis load benchmark  $(date -u +%Y-%m-%dT%H:%MZ)  $(nproc) CPUs  load avg before: $LOAD_BEFORE  after: $LOAD_AFTER
priority: ${NICE:-default (nice 0)}; profile: $PROFILE; telemetry: $TELEMETRY_LINE; origin: nginx 1 worker; wrk ${THREADS} threads; medians of $ROUNDS interleaved ${DURATION}s runs per side, each after ${WARMUP}s warm-up

$(throughput_report)

fixed rate, $RATE_CONNS conns x 1/${RATE_DELAY_MS}ms     req/s        p50 ms    p99 ms
  direct                        $(printf '%10s  %9s  %9s' "$(field "$R_DIRECT" 2)" "$(ms "$rd_p50")" "$(ms "$rd_p99")")
  gateway                       $(printf '%10s  %9s  %9s' "$(field "$R_GW" 2)" "$(ms "$rg_p50")" "$(ms "$rg_p99")")
  added by the gateway                       $(printf '%9s  %9s' "$(ms "$added_p50")" "$(ms "$added_p99")")   (target p99 <= 0.300 ms: $(verdict "$added_p99 <= 300"))

stream time to first byte, $TTFB_RUNS requests   median ms   p90 ms   mean ms
  keep-alive connection, direct     $(printf '%9s  %9s  %9s' "$(ms "$tkd")" "$(ms "$(field "$TK_DIRECT" 2)")" "$(ms "$(field "$TK_DIRECT" 3)")")
  keep-alive connection, gateway    $(printf '%9s  %9s  %9s' "$(ms "$tkg")" "$(ms "$(field "$TK_GW" 2)")" "$(ms "$(field "$TK_GW" 3)")")
  added (median)                    $(printf '%9s' "$(ms "$added_tk")")   (target <= 0.100 ms: $(verdict "$added_tk <= 100"))
  new connection each, direct       $(printf '%9s  %9s  %9s' "$(ms "$ttd")" "$(ms "$(field "$TT_DIRECT" 2)")" "$(ms "$(field "$TT_DIRECT" 3)")")
  new connection each, gateway      $(printf '%9s  %9s  %9s' "$(ms "$ttg")" "$(ms "$(field "$TT_GW" 2)")" "$(ms "$(field "$TT_GW" 3)")")
  added (median)                    $(printf '%9s' "$(ms "$added_tt")")   (the gateway reuses a pooled upstream connection,
                                               so the origin's own accept cost is skipped on that path)

gateway memory (VmRSS)                          MB
  idle after start                      $(printf '%6s' "$(mb "$RSS_START")")   (target <= 20: $(verdict "$RSS_START <= 20480"))
  before idle connections               $(printf '%6s' "$(mb "$RSS_IDLE_BEFORE")")
  with $IDLE_CONNS idle keep-alive conns      $(printf '%6s' "$(mb "$RSS_IDLE_WITH")")   delta $(mb "$idle_delta") (target <= +30: $(verdict "$idle_delta <= 30720"))
  after they closed                     $(printf '%6s' "$(mb "$RSS_IDLE_AFTER")")
  after the load runs                   $(printf '%6s' "$(mb "$RSS_AFTER_LOAD")")
  holder: ${HOLDER_STATUS:-failed}; portcullis_connections_active while held: ${ACTIVE_CONNS:-?}
  portcullis_upstream_errors_total at the end: $UPSTREAM_ERRORS
EOF
fi

# --- TLS interception ------------------------------------------------------------
# The same Python HTTPS client (load_helpers.py tls) against nginx's TLS listener,
# directly and through the gateway (CONNECT localhost:PORT, intercepted: the
# client handshakes with a leaf the gateway minted, the gateway re-encrypts to
# nginx over its pooled upstream connections). Keep-alive: one connection per
# client process, reused. Handshake: a fresh TCP (+ CONNECT) and a full TLS
# handshake (no resumption) plus one request per connection. Interleaved rounds,
# medians, as above. CPU per operation of the client, the gateway and the nginx
# worker comes from /proc over the measured window.
if [ "$TLS" != 0 ]; then
  GWCA="$WORK/gwca/ca.pem"
  PROXY_HEADER=()
  if [ -n "$PROXY_AUTH" ]; then PROXY_HEADER=(--proxy-header "Proxy-Authorization: $PROXY_AUTH"); fi
  curl -fsS -o /dev/null -x "http://$PROXY" "${PROXY_HEADER[@]}" --cacert "$GWCA" "$TLS_URL" \
    || { say "no intercepted HTTPS through the gateway"; exit 1; }
  tls_version() { curl -sv -o /dev/null "$@" "$TLS_URL" 2>&1 | grep -o 'SSL connection using [^ ]*' | head -1 | cut -d' ' -f4; }
  TLS_VER_DIRECT="$(tls_version --cacert "$WORK/tls/ca.pem")"
  TLS_VER_GW="$(tls_version -x "http://$PROXY" "${PROXY_HEADER[@]}" --cacert "$GWCA")"
  TLS_LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
  tls_run() { # mode direct|gateway
    local ca="$WORK/tls/ca.pem" proxy=""
    if [ "$2" = gateway ]; then ca="$GWCA"; proxy="$PROXY"; fi
    "${RUN[@]}" python3 "$BENCH/load_helpers.py" tls "$1" "$TLS_PROCS" "$TLS_DURATION" \
      "$TLS_URL" "$ca" "$proxy" "$GW_PID,$NGINX_WORKER" | grep '^RESULT' | tail -1
  }
  for mode in keepalive handshake; do
    say "TLS $mode, $TLS_PROCS client processes, $ROUNDS x ${TLS_DURATION}s each side"
    : >"$WORK/tls.$mode.direct"; : >"$WORK/tls.$mode.gateway"
    for r in $(seq 1 "$ROUNDS"); do
      tls_run "$mode" direct >>"$WORK/tls.$mode.direct"
      tls_run "$mode" gateway >>"$WORK/tls.$mode.gateway"
      say "  round $r: direct $(cut -d' ' -f2- "$WORK/tls.$mode.direct" | tail -1)  gateway $(cut -d' ' -f2- "$WORK/tls.$mode.gateway" | tail -1)  (per s, errors, client/gateway/nginx CPU us per op)"
    done
  done
  K_DIRECT="$(median_result "$WORK/tls.keepalive.direct")"
  K_GW="$(median_result "$WORK/tls.keepalive.gateway")"
  H_DIRECT="$(median_result "$WORK/tls.handshake.direct")"
  H_GW="$(median_result "$WORK/tls.handshake.gateway")"
  TLS_LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
  METRICS="$(curl -fsS "http://$ADMIN/metrics")"
  MINTED="$(echo "$METRICS" | awk '/^portcullis_certs_minted_total/ {s+=$2} END {print s+0}')"
  HS_FAIL="$(echo "$METRICS" | awk '/^portcullis_tls_handshake_failures_total/ {s+=$2} END {print s+0}')"
  kratio="$(awk -v a="$(field "$K_GW" 2)" -v b="$(field "$K_DIRECT" 2)" 'BEGIN {printf "%.2f", a/b}')"
  hratio="$(awk -v a="$(field "$H_GW" 2)" -v b="$(field "$H_DIRECT" 2)" 'BEGIN {printf "%.2f", a/b}')"
  tls_row() { printf '%10s  %6s  %10s  %10s  %10s' "$(field "$1" 2)" "$(field "$1" 3)" "$(field "$1" 4)" "$(field "$1" 5)" "$(field "$1" 6)"; }
  if awk "BEGIN {exit !($kratio >= 0.5)}"; then kverdict=met; else kverdict=MISSED; fi
  cat <<EOF

TLS interception  $(date -u +%Y-%m-%dT%H:%MZ)  $(nproc) CPUs  load avg before: $TLS_LOAD_BEFORE  after: $TLS_LOAD_AFTER
client: load_helpers.py tls, $TLS_PROCS processes x 1 connection, Python $(python3 -c 'import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'); origin: nginx 1 worker, ECDSA P-256 leaf; curl negotiated ${TLS_VER_DIRECT:-?} direct, ${TLS_VER_GW:-?} with the gateway
medians of $ROUNDS interleaved ${TLS_DURATION}s runs per side; CPU columns are microseconds of CPU per request (or connection)

HTTPS keep-alive                   req/s  errors   client us  gateway us    nginx us
  direct TLS                $(tls_row "$K_DIRECT")
  intercepted via gateway   $(tls_row "$K_GW")
  ratio intercepted/direct  $kratio     (target >= 0.5: $kverdict)

new connection + handshake         conn/s  errors   client us  gateway us    nginx us
  direct TLS                $(tls_row "$H_DIRECT")
  CONNECT + intercepted     $(tls_row "$H_GW")
  ratio intercepted/direct  $hratio
portcullis_certs_minted_total: $MINTED   portcullis_tls_handshake_failures_total: $HS_FAIL
EOF
fi
