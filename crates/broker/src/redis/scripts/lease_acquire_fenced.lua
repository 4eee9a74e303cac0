-- Fenced single-holder lease: takes lease KEYS[1] (sorted set holder -> expiry ms, Redis
-- server clock) for holder ARGV[1] for ARGV[2] ms, unless another holder's lease is live.
-- KEYS[2] holds the fencing token, incremented each time a new holder takes the lease.
-- Returns the token (>= 1), or 0 if another holder has the lease. Both keys share a hash tag.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not mine and redis.call('ZCARD', KEYS[1]) >= 1 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
if mine then
  local token = tonumber(redis.call('GET', KEYS[2]) or '0')
  if token > 0 then
    return token
  end
end
return redis.call('INCR', KEYS[2])
