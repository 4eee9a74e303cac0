-- Presence renewal of one shard: extends the entries of the (user, connection) pairs
-- ARGV[2], ARGV[3], ARGV[4], ARGV[5], ... to ARGV[1] ms from now, making entries that expired
-- meanwhile again. KEYS[1] the shard's deadlines; KEYS[2..] the users' connection hashes, one
-- per pair, in the same order (see presence_join.lua).
-- Returns the users that were no longer listed (reported offline) and are online again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[1])
local back = {}
for i = 2, #KEYS do
  local user = ARGV[2 * (i - 1)]
  local conn = ARGV[2 * (i - 1) + 1]
  if not redis.call('ZSCORE', KEYS[1], user) then
    back[#back + 1] = user
  end
  redis.call('HSET', KEYS[i], conn, exp)
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[1]) then
    redis.call('PEXPIREAT', KEYS[i], exp)
  end
  local score = tonumber(redis.call('ZSCORE', KEYS[1], user) or '0')
  if score < exp then
    redis.call('ZADD', KEYS[1], exp, user)
  end
end
return back
