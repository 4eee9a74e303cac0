-- Which users of one shard are online: KEYS[1..] their connection hashes (see
-- presence_join.lua). Returns one 1 or 0 per key, in order.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local online = 0
  local expiries = redis.call('HVALS', KEYS[i])
  for _, e in ipairs(expiries) do
    if tonumber(e) > now then
      online = 1
      break
    end
  end
  out[i] = online
end
return out
