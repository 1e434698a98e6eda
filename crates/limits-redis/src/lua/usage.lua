-- Usage of one scope for the policy input: requests in the last minute, tokens and
-- micro-dollars today, micro-dollars this month.
-- KEYS[1] state hash, KEYS[2] window hash; ARGV[1] now, Unix microseconds ('' = TIME).

local SEC = 1000000
local SLOTS = 61
local DAY = 86400
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * SEC + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local now_sec = math.floor(now / SEC)
local h = redis.call('HMGET', KEYS[1], 'ds', 'dt', 'head', 'ud', 'me', 'um')
local ds = tonumber(h[1])
local dt = tonumber(h[2]) or 0
local head = tonumber(h[3]) or now_sec
local ud = tonumber(h[4]) or 0
local me = tonumber(h[5])
local um = tonumber(h[6]) or 0
if now_sec > head then head = now_sec end
local requests = 0
local w = redis.call('HGETALL', KEYS[2])
for j = 1, #w, 2 do
  local f = w[j]
  local sec = tonumber(string.sub(f, 2)) or 0
  if string.sub(f, 1, 1) == 'r' and sec > head - SLOTS then
    requests = requests + (tonumber(w[j + 1]) or 0)
  end
end
local today, today_usd, month_usd = 0, 0, 0
if ds ~= nil and now_sec < ds + DAY then
  today = dt
  today_usd = ud
end
if me ~= nil and now_sec < me then month_usd = um end
return { requests, today, today_usd, month_usd }
