-- Ends a request: frees its concurrency slot (removes its lease) and, with usage, replaces
-- its token reservation by the actual tokens and its dollar reservation by the actual cost
-- (the difference is refunded to the second, day and month it was charged to, when they
-- still count; an excess is charged now).
--
-- KEYS: three per scope: state hash, window hash, lease sorted set.
-- ARGV[1] now, Unix microseconds ('' = TIME); ARGV[2] lease id ('' = none to free);
-- ARGV[3] actual tokens (-1: usage missing, keep the reservation); ARGV[4] tokens reserved;
-- ARGV[5] actual micro-dollars (-1: keep the reservation); ARGV[6] micro-dollars reserved;
-- then four per scope: window second, day start and month start charged to (-1 when nothing
-- was charged), day-reset offset in seconds.

local SEC = 1000000
local SLOTS = 61
local DAY = 86400
local MAXN = 9007199254740991

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * SEC + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local now_sec = math.floor(now / SEC)
local lease = ARGV[2]
local usage = tonumber(ARGV[3])
local reserved = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local reserved_usd = tonumber(ARGV[6])
local n = #KEYS / 3

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

for i = 1, n do
  local skey, wkey, zkey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local base = 6 + (i - 1) * 4
  local csec, cds = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local cms, offset = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  if lease ~= '' then redis.call('ZREM', zkey, lease) end
  local tokens_change = usage >= 0 and csec >= 0 and usage ~= reserved
  local usd_change = cost >= 0 and csec >= 0 and cost ~= reserved_usd
  if tokens_change or usd_change then
    local h = redis.call('HMGET', skey, 'tat', 'ds', 'dt', 'head', 'ud', 'ms', 'me', 'um')
    local tat = tonumber(h[1]) or 0
    local ds = tonumber(h[2])
    local dt = tonumber(h[3]) or 0
    local head = tonumber(h[4]) or now_sec
    local ud = tonumber(h[5]) or 0
    local ms = tonumber(h[6])
    local me = tonumber(h[7])
    local um = tonumber(h[8]) or 0
    if now_sec > head then head = now_sec end
    if ds == nil or now_sec >= ds + DAY then
      ds = now_sec - ((now_sec + offset) % DAY)
      dt = 0
      ud = 0
    end
    if me == nil or now_sec >= me then
      ms, me = month_bounds(offset)
      um = 0
    end
    if tokens_change then
      if usage < reserved then
        local back = reserved - usage
        if csec <= head and head - csec < SLOTS then
          local f = 't' .. csec
          local cur = tonumber(redis.call('HGET', wkey, f)) or 0
          local b = math.min(back, cur)
          if b > 0 then redis.call('HINCRBY', wkey, f, -b) end
        end
        -- A settlement after the day rolled over refunds nothing to the new day.
        if ds == cds then dt = math.max(dt - back, 0) end
      else
        local extra = usage - reserved
        redis.call('HINCRBY', wkey, 't' .. head, extra)
        dt = math.min(dt + extra, MAXN)
      end
    end
    if usd_change then
      if cost < reserved_usd then
        local back = reserved_usd - cost
        if ds == cds then ud = math.max(ud - back, 0) end
        -- A settlement after the month rolled over refunds nothing to the new month.
        if ms == cms then um = math.max(um - back, 0) end
      else
        local extra = cost - reserved_usd
        ud = math.min(ud + extra, MAXN)
        um = math.min(um + extra, MAXN)
      end
    end
    redis.call('HSET', skey, 'ds', ds, 'dt', dt, 'head', head, 'ud', ud, 'ms', ms, 'me', me,
      'um', um)
    local keep = SLOTS + 1
    local until_full = math.ceil(tat / SEC) - now_sec + 1
    if until_full > keep then keep = until_full end
    if (dt > 0 or ud > 0) and ds + DAY - now_sec + 1 > keep then keep = ds + DAY - now_sec + 1 end
    if um > 0 and me - now_sec + 1 > keep then keep = me - now_sec + 1 end
    redis.call('EXPIRE', skey, keep)
    redis.call('EXPIRE', wkey, keep)
  end
end
return 1
