# Sourced by scripts/test.sh: the Node clients of the end-to-end tests (the official MCP
# TypeScript SDK) from tests/node/package-lock.json, installed with `npm ci` when the lock
# changed. Node and npm come from apt when missing. Safe to run repeatedly.

if ! command -v node >/dev/null 2>&1; then
  echo "== installing nodejs and npm (apt)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq nodejs npm >/dev/null
  else sudo apt-get install -y -qq nodejs npm >/dev/null; fi
fi
if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.installed-lock 2>/dev/null; then
  echo "== npm ci in tests/node"
  (cd tests/node && npm ci --no-audit --no-fund --silent \
    && cp package-lock.json node_modules/.installed-lock)
fi
