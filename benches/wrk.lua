-- wrk script for benches/load.sh.
--
-- WRK_TARGET (optional): an absolute URL. When set, wrk's connections go to the
-- URL given on its command line (the gateway) and every request line carries
-- WRK_TARGET in absolute form, as a forward-proxy client sends it.
-- WRK_DELAY_MS (optional): pause this long on each connection after every
-- response; with C connections this paces the load at about C*1000/WRK_DELAY_MS
-- requests per second (an open-ish loop for the fixed-rate latency runs).
-- WRK_METHOD / WRK_BODY_FILE (optional): the request method and a file whose bytes are
-- the request body (sent with Content-Type: application/json), e.g. a chat completion.
-- WRK_PROXY_AUTH (optional): a Proxy-Authorization header value (Basic or Bearer).
-- done() prints one machine-readable line:
--   RESULT <req/s> <p50 us> <p99 us> <requests> <errors> <non-2xx>

local target = os.getenv("WRK_TARGET")
if target and target ~= "" then
  wrk.path = target
  local authority = target:match("^%a+://([^/]+)")
  wrk.headers["Host"] = authority
end

local method = os.getenv("WRK_METHOD")
if method and method ~= "" then
  wrk.method = method
end
local body_file = os.getenv("WRK_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end
local proxy_auth = os.getenv("WRK_PROXY_AUTH")
if proxy_auth and proxy_auth ~= "" then
  wrk.headers["Proxy-Authorization"] = proxy_auth
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.requests, errors, e.status))
end
