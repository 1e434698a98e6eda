#!/usr/bin/env bash
# Runs the whole test suite after setting up what the tests need:
# curl (apt), a Python venv with pinned real clients, and what scripts/services/ provides:
# Chromium and playwright-core (browser.sh), a throwaway PostgreSQL (postgres.sh) and Redis
# (redis.sh), the Node MCP SDK (node.sh). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${PORTCULLIS_VENV:-.venv}"
REQS="scripts/requirements-test.txt"

if ! command -v curl >/dev/null 2>&1; then
  echo "== installing curl"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq curl >/dev/null; fi
fi

if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQS" "$VENV/.requirements"; then
  echo "== preparing Python venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REQS"
  cp "$REQS" "$VENV/.requirements"
fi
export PORTCULLIS_TEST_PYTHON="$PWD/$VENV/bin/python"
source scripts/services/browser.sh

# A throwaway PostgreSQL unless PORTCULLIS_TEST_POSTGRES_URL names one (stopped on exit).
source scripts/services/postgres.sh

source scripts/services/redis.sh
source scripts/services/node.sh

echo "== cargo test --workspace"
cargo test --workspace --locked "$@"
