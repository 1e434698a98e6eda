# Sourced by scripts/test.sh: makes a Redis available to the tests that need one (shared
# limits) and exports PORTCULLIS_TEST_REDIS_URL.
#
# With PORTCULLIS_TEST_REDIS_URL already set, that Redis is used as is. Otherwise
# redis-server is installed from Debian's packages when missing and a throwaway server is
# started on a free loopback port in a temporary directory, without persistence; it is
# stopped and its directory removed when the calling shell exits. Tests that start and stop
# their own servers (to test outages) find the binary through PORTCULLIS_TEST_REDIS_SERVER.

portcullis_redis_setup() {
  local bin
  bin="$(command -v redis-server || true)"
  if [ -z "$bin" ]; then
    echo "== installing redis-server"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
      sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null
    fi
    bin="$(command -v redis-server)"
  fi
  # A distribution's service may have started one on 6379; ours never uses that port.
  export PORTCULLIS_TEST_REDIS_SERVER="$bin"
  if [ -n "${PORTCULLIS_TEST_REDIS_URL:-}" ]; then
    echo "== using Redis at PORTCULLIS_TEST_REDIS_URL"
    return 0
  fi
  local port dir
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  dir="$(mktemp -d -t portcullis-redis.XXXXXX)"
  "$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  local i
  for i in $(seq 1 50); do
    if [ -s "$dir/redis.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  PORTCULLIS_REDIS_TEST_DIR="$dir"
  # Chain onto an EXIT trap another service script may have set.
  local prev
  prev="$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")"
  trap "portcullis_redis_teardown${prev:+; $prev}" EXIT
  export PORTCULLIS_TEST_REDIS_URL="redis://127.0.0.1:$port"
  echo "== started a throwaway Redis at $PORTCULLIS_TEST_REDIS_URL"
}

portcullis_redis_teardown() {
  local dir="${PORTCULLIS_REDIS_TEST_DIR:-}"
  if [ -n "$dir" ] && [ -s "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  fi
  if [ -n "$dir" ]; then
    rm -rf "$dir"
  fi
}

portcullis_redis_setup
