# Sourced by scripts/test.sh: what the console's browser tests need. Debian's chromium
# (installed with apt when missing; never a browser download) and playwright-core from
# tests/browser/package-lock.json (npm ci when the lock changed). Safe to run repeatedly.

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (apt)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
fi
if ! command -v node >/dev/null 2>&1; then
  echo "== installing nodejs and npm (apt)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq nodejs npm >/dev/null
  else sudo apt-get install -y -qq nodejs npm >/dev/null; fi
fi
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock 2>/dev/null; then
  echo "== npm ci in tests/browser"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent \
    && cp package-lock.json node_modules/.installed-lock)
fi
export PORTCULLIS_CHROMIUM="${PORTCULLIS_CHROMIUM:-$(command -v chromium)}"
