-- Renews leases this process still holds: each lease set KEYS[i] gets member ARGV[2 + i]
-- re-scored to now + lifetime. A lease that already expired (and was removed) is not brought
-- back: its slot may already be taken by another request.
--
-- ARGV[1] now, Unix microseconds ('' = TIME); ARGV[2] lease lifetime, microseconds.

local SEC = 1000000
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * SEC + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local ttl = tonumber(ARGV[2])
local renewed = 0
for i = 1, #KEYS do
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + ttl, ARGV[2 + i])
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl / 1000) + 1000)
end
return renewed
