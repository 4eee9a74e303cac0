-- Presence join: marks connection ARGV[2] of user ARGV[1] present for ARGV[3] ms.
-- KEYS[1] the user's connections (hash: connection -> expiry ms, Redis server clock);
-- KEYS[2] the shard's deadlines (sorted set: user -> latest expiry), what expiry sweeps scan.
-- Both keys share a hash tag. Expired entries are dropped on the way.
-- Returns 1 if the user had no live connection before (came online), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[3])
local latest = exp
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
redis.call('HSET', KEYS[1], ARGV[2], exp)
redis.call('PEXPIREAT', KEYS[1], latest)
redis.call('ZADD', KEYS[2], latest, ARGV[1])
if live == 0 then return 1 end
return 0
