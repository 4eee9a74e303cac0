-- Expiry sweep of one shard: users whose deadline has passed and who have no live connection
-- left are unlisted and returned (at most ARGV[1] of them), so each is reported offline once.
-- Users with a live connection get their deadline moved to their latest expiry.
-- KEYS[1] the shard's deadlines; ARGV[2] the prefix of the users' connection hashes, which
-- share KEYS[1]'s hash tag (see presence_join.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local gone = {}
for _, user in ipairs(due) do
  local key = ARGV[2] .. user
  local latest = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local e = tonumber(fields[i + 1])
    if e > now and e > latest then latest = e end
  end
  if latest == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], user)
    gone[#gone + 1] = user
  else
    redis.call('ZADD', KEYS[1], latest, user)
  end
end
return gone
