-- Ends a request: frees its concurrency slot (removes its lease) and, with usage, replaces
-- its token reservation by the actual tokens (the difference is refunded to the second and
-- the day it was charged to, when they still count; an excess is charged now).
--
-- KEYS: three per scope: state hash, window hash, lease sorted set.
-- ARGV[1] now, Unix microseconds ('' = TIME); ARGV[2] lease id ('' = none to free);
-- ARGV[3] actual tokens (-1: usage missing, keep the reservation); ARGV[4] tokens reserved;
-- then three per scope: window second and day start charged to (-1 when nothing was
-- charged), day-reset offset in seconds.

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
local n = #KEYS / 3

for i = 1, n do
  local skey, wkey, zkey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local base = 4 + (i - 1) * 3
  local csec, cds, offset = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if lease ~= '' then redis.call('ZREM', zkey, lease) end
  if usage >= 0 and csec >= 0 and usage ~= reserved then
    local h = redis.call('HMGET', skey, 'tat', 'ds', 'dt', 'head')
    local tat = tonumber(h[1]) or 0
    local ds = tonumber(h[2])
    local dt = tonumber(h[3]) or 0
    local head = tonumber(h[4]) or now_sec
    if now_sec > head then head = now_sec end
    if ds == nil or now_sec >= ds + DAY then
      ds = now_sec - ((now_sec + offset) % DAY)
      dt = 0
    end
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
    redis.call('HSET', skey, 'ds', ds, 'dt', dt, 'head', head)
    local keep = SLOTS + 1
    local until_full = math.ceil(tat / SEC) - now_sec + 1
    if until_full > keep then keep = until_full end
    if dt > 0 and ds + DAY - now_sec + 1 > keep then keep = ds + DAY - now_sec + 1 end
    redis.call('EXPIRE', skey, keep)
    redis.call('EXPIRE', wkey, keep)
  end
end
return 1
