-- Checks one request against every scope and, only if every limit admits it, charges it to
-- every scope: all or nothing, atomically (a script runs alone on the server). The same
-- semantics as the in-memory limiter (crates/limits/src/memory), in microseconds.
--
-- KEYS: three per scope, in the order tenant, agent, sub-agent: state hash, window hash,
--       lease sorted set.
-- ARGV[1] now, Unix microseconds ('' = the server's clock, TIME)
-- ARGV[2] stage: 0 takes a concurrency slot only, 1 charges only, 2 both
-- ARGV[3] token reservation (-1: none, not an LLM request)
-- ARGV[4] lease id (member of the lease sets when a slot is taken)
-- ARGV[5] lease lifetime, microseconds
-- ARGV[6] index (1-based) of the scope whose usage to report, 0 for none
-- ARGV[7] dollar reservation, micro-dollars (-1: none, not a priced LLM request)
-- then eight per scope: kind (0 tenant, 1 agent, 2 sub-agent), rpm, tpm, tokens per day,
--       max concurrent (each -1 when unset), day-reset offset in seconds, dollars per day
--       and per month in micro-dollars (-1 when unset)
--
-- Reply (integers): admitted (1/0), now (µs), requests in the last minute, tokens today,
-- micro-dollars today and this month (of the reported scope, before this request), number of
-- outcomes, then nine integers per outcome (ok, scope kind, limit 0 rpm/1 concurrent/2 tpm/
-- 3 per day/4 dollars per day/5 dollars per month, limit value, remaining, requested, retry
-- after s, reset Unix s, never fits), then per scope the window second, the day start and the
-- month start the request was charged to.

local SEC = 1000000
local SLOTS = 61
local DAY = 86400
local NEVER = 60
local MAXN = 9007199254740991

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * SEC + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local now_sec = math.floor(now / SEC)
local stage = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local lease = ARGV[4]
local lease_ttl = tonumber(ARGV[5])
local report = tonumber(ARGV[6])
local usd = tonumber(ARGV[7])
local n = #KEYS / 3
local takes_slot = stage ~= 1
local charges = stage ~= 0

local function secs_until_us(at)
  local d = at - now
  if d < 0 then d = 0 end
  local s = math.ceil(d / SEC)
  if s < 1 then s = 1 end
  return s
end

local function secs_until(at_sec)
  return secs_until_us(at_sec * SEC)
end

-- The calendar month (at offset) containing now_sec: Unix seconds of its first midnight and
-- of the next month's (the same arithmetic as UtcOffset::month_bounds in Rust).
local function month_bounds(offset)
  local days = math.floor((now_sec + offset) / DAY)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local len = 31
  if m == 4 or m == 6 or m == 9 or m == 11 then
    len = 30
  elseif m == 2 then
    if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then len = 29 else len = 28 end
  end
  local start = (days - (d - 1)) * DAY - offset
  return start, start + len * DAY
end

local scopes = {}
for i = 1, n do
  local base = 7 + (i - 1) * 8
  local s = {
    skey = KEYS[3 * i - 2], wkey = KEYS[3 * i - 1], zkey = KEYS[3 * i],
    kind = tonumber(ARGV[base + 1]), rpm = tonumber(ARGV[base + 2]),
    tpm = tonumber(ARGV[base + 3]), per_day = tonumber(ARGV[base + 4]),
    max = tonumber(ARGV[base + 5]), offset = tonumber(ARGV[base + 6]),
    usd_day = tonumber(ARGV[base + 7]), usd_month = tonumber(ARGV[base + 8]),
  }
  local h = redis.call('HMGET', s.skey, 'tat', 'iv', 'ds', 'dt', 'head', 'ud', 'ms', 'me', 'um')
  s.tat = tonumber(h[1]) or 0
  s.iv = tonumber(h[2]) or 0
  s.ds = tonumber(h[3])
  s.dt = tonumber(h[4]) or 0
  s.head = tonumber(h[5]) or now_sec
  s.ud = tonumber(h[6]) or 0
  s.ms = tonumber(h[7])
  s.me = tonumber(h[8])
  s.um = tonumber(h[9]) or 0
  if now_sec > s.head then s.head = now_sec end
  -- The minute window: seconds head-60 .. head count; older buckets are dropped.
  s.wt = {}
  s.tokens = 0
  s.requests = 0
  local w = redis.call('HGETALL', s.wkey)
  local stale = {}
  for j = 1, #w, 2 do
    local f = w[j]
    local v = tonumber(w[j + 1]) or 0
    local sec = tonumber(string.sub(f, 2)) or 0
    if sec <= s.head - SLOTS then
      stale[#stale + 1] = f
    elseif string.sub(f, 1, 1) == 't' then
      s.wt[sec] = (s.wt[sec] or 0) + v
      s.tokens = s.tokens + v
    else
      s.requests = s.requests + v
    end
  end
  if #stale > 0 then redis.call('HDEL', s.wkey, unpack(stale)) end
  -- The day rolls over once the stored day has ended (a clock that went back never resets).
  if s.ds == nil or now_sec >= s.ds + DAY then
    s.ds = now_sec - ((now_sec + s.offset) % DAY)
    s.dt = 0
    s.ud = 0
  end
  if s.me == nil or now_sec >= s.me then
    s.ms, s.me = month_bounds(s.offset)
    s.um = 0
  end
  -- Leases whose holder stopped renewing them have expired: their slots are free.
  redis.call('ZREMRANGEBYSCORE', s.zkey, '-inf', now)
  s.in_flight = redis.call('ZCARD', s.zkey)
  scopes[i] = s
end

local refused = false
local out = {}
local function outcome(ok, s, limit, value, remaining, requested, retry, reset, never)
  if ok == 0 then refused = true end
  local r = { ok, s.kind, limit, value, remaining, requested, retry, reset, never }
  for _, v in ipairs(r) do out[#out + 1] = v end
end

local function freed_at(s, excess)
  local freed = 0
  for sec = s.head - SLOTS + 1, s.head do
    freed = freed + (s.wt[sec] or 0)
    if freed >= excess then return sec + SLOTS end
  end
  return nil
end

local function empty_at(s)
  for sec = s.head, s.head - SLOTS + 1, -1 do
    if (s.wt[sec] or 0) > 0 then return sec + SLOTS end
  end
  return s.head
end

for i = 1, n do
  local s = scopes[i]
  if takes_slot and s.max >= 0 and s.in_flight >= s.max then
    if s.max == 0 then
      outcome(0, s, 1, 0, 0, 1, NEVER, now_sec + NEVER, 1)
    else
      outcome(0, s, 1, s.max, 0, 1, 1, now_sec + 1, 0)
    end
  end
  if charges then
    if s.rpm == 0 then
      outcome(0, s, 0, 0, 0, 1, NEVER, now_sec + NEVER, 1)
    elseif s.rpm > 0 then
      -- GCRA: one theoretical arrival time per scope; the debt is rescaled when rpm changes.
      local iv = math.floor(60 * SEC / s.rpm)
      if iv < 1 then iv = 1 end
      local tol = iv * s.rpm
      local tat = s.tat
      if s.iv ~= 0 and s.iv ~= iv and tat > now then
        tat = now + math.floor((tat - now) * iv / s.iv)
      end
      local start = math.max(tat, now)
      local new_tat = start + iv
      local ahead = new_tat - now
      if ahead > tol then
        outcome(0, s, 0, s.rpm, 0, 1, secs_until_us(now + ahead - tol), math.ceil(start / SEC), 0)
      else
        outcome(1, s, 0, s.rpm, math.floor((tol - ahead) / iv), 0, 0, math.ceil(new_tat / SEC), 0)
        s.new_tat = new_tat
        s.new_iv = iv
      end
    end
    if tokens >= 0 then
      if s.tpm >= 0 then
        local used = s.tokens
        local empty = empty_at(s)
        if tokens > s.tpm then
          outcome(0, s, 2, s.tpm, 0, tokens, NEVER, empty, 1)
        elseif used > s.tpm - tokens then
          local at = freed_at(s, used - (s.tpm - tokens)) or empty
          if at < now_sec then at = now_sec end
          outcome(0, s, 2, s.tpm, 0, tokens, secs_until(at), empty, 0)
        else
          local reset = empty
          if tokens > 0 then reset = s.head + SLOTS end
          outcome(1, s, 2, s.tpm, math.max(s.tpm - used - tokens, 0), 0, 0, reset, 0)
        end
      end
      if s.per_day >= 0 then
        local e = s.ds + DAY
        local retry = secs_until(e)
        if tokens > s.per_day then
          outcome(0, s, 3, s.per_day, 0, tokens, retry, e, 1)
        elseif s.dt > s.per_day - tokens then
          outcome(0, s, 3, s.per_day, 0, tokens, retry, e, 0)
        else
          outcome(1, s, 3, s.per_day, math.max(s.per_day - s.dt - tokens, 0), 0, 0, e, 0)
        end
      end
    end
    -- Dollar budgets refuse like the daily token budget; they set no rate headers, so an
    -- admission reports nothing for them.
    if usd >= 0 then
      local budgets = { { 4, s.usd_day, s.ud, s.ds + DAY }, { 5, s.usd_month, s.um, s.me } }
      for _, b in ipairs(budgets) do
        local code, budget, used, e = b[1], b[2], b[3], b[4]
        if budget >= 0 then
          if usd > budget then
            outcome(0, s, code, budget, 0, usd, secs_until(e), e, 1)
          elseif used > budget - usd then
            outcome(0, s, code, budget, 0, usd, secs_until(e), e, 0)
          end
        end
      end
    end
  end
end

local usage_requests, usage_tokens, usage_ud, usage_um = 0, 0, 0, 0
if report > 0 and scopes[report] then
  usage_requests = scopes[report].requests
  usage_tokens = scopes[report].dt
  usage_ud = scopes[report].ud
  usage_um = scopes[report].um
end

local reply = { refused and 0 or 1, now, usage_requests, usage_tokens, usage_ud, usage_um, #out / 9 }
for _, v in ipairs(out) do reply[#reply + 1] = v end
if refused then return reply end

local charge = math.max(tokens, 0)
local charge_usd = math.max(usd, 0)
for i = 1, n do
  local s = scopes[i]
  if takes_slot then
    redis.call('ZADD', s.zkey, now + lease_ttl, lease)
    redis.call('PEXPIRE', s.zkey, math.ceil(lease_ttl / 1000) + 1000)
  end
  if charges then
    if s.new_tat then redis.call('HSET', s.skey, 'tat', s.new_tat, 'iv', s.new_iv) end
    if charge > 0 then redis.call('HINCRBY', s.wkey, 't' .. s.head, charge) end
    redis.call('HINCRBY', s.wkey, 'r' .. s.head, 1)
    s.dt = math.min(s.dt + charge, MAXN)
    s.ud = math.min(s.ud + charge_usd, MAXN)
    s.um = math.min(s.um + charge_usd, MAXN)
    redis.call('HSET', s.skey, 'ds', s.ds, 'dt', s.dt, 'head', s.head,
      'ud', s.ud, 'ms', s.ms, 'me', s.me, 'um', s.um)
    -- Keep the state while it means something: the burst refilling, the window, the day.
    local keep = SLOTS + 1
    local tat = s.new_tat or s.tat
    local until_full = math.ceil(tat / SEC) - now_sec + 1
    if until_full > keep then keep = until_full end
    if (s.dt > 0 or s.ud > 0) and s.ds + DAY - now_sec + 1 > keep then keep = s.ds + DAY - now_sec + 1 end
    if s.um > 0 and s.me - now_sec + 1 > keep then keep = s.me - now_sec + 1 end
    redis.call('EXPIRE', s.skey, keep)
    redis.call('EXPIRE', s.wkey, keep)
  end
  reply[#reply + 1] = s.head
  reply[#reply + 1] = s.ds
  reply[#reply + 1] = s.ms
end
return reply
