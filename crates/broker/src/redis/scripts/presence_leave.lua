-- Presence leave: removes connection ARGV[2] of user ARGV[1].
-- KEYS[1] the user's connections; KEYS[2] the shard's deadlines (see presence_join.lua).
-- Returns 1 if the user has no live connection left and was still listed in the deadlines
-- (their going offline was not reported by an expiry sweep yet), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[1], ARGV[2])
local latest = 0
local live = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local e = tonumber(fields[i + 1])
  if e <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    live = live + 1
    if e > latest then latest = e end
  end
end
if live == 0 then
  redis.call('DEL', KEYS[1])
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], latest)
redis.call('ZADD', KEYS[2], latest, ARGV[1])
return 0
