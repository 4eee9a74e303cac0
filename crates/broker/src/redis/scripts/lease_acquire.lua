-- Counted lease acquire: at most ARGV[2] live holders in the sorted set KEYS[1], scored by
-- expiry (ms, Redis server clock). Expired holders are dropped first; a current holder
-- re-acquiring extends its lease. Atomic, so concurrent connects on many nodes never overshoot.
-- KEYS[1] lease set; ARGV[1] holder; ARGV[2] limit; ARGV[3] ttl ms. Returns 1 if held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
