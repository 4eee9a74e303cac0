-- Takes leases (ttl ARGV[1] ms) for several requests in order. After ARGV[1] come, per
-- request, its holder, its number of keys n, and the limits of its n keys; KEYS holds every
-- request's keys in the same order. A request takes a lease in each of its sorted sets, each
-- limited to its live holders, or in none (expired holders are dropped first; a current
-- holder counts as admitted). Returns one 1 (all held) or 0 (a quota was full) per request.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local answers = {}
local k, a = 1, 2
while a <= #ARGV do
  local holder, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local fits = 1
  for i = 0, n - 1 do
    local key = KEYS[k + i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if not redis.call('ZSCORE', key, holder) and redis.call('ZCARD', key) >= tonumber(ARGV[a + i]) then
      fits = 0
      break
    end
  end
  if fits == 1 then
    for i = 0, n - 1 do
      local key = KEYS[k + i]
      redis.call('ZADD', key, now + ttl, holder)
      if redis.call('PTTL', key) < ttl then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
  answers[#answers + 1] = fits
  k, a = k + n, a + n
end
return answers
