-- Fenced commit of a consumer's progress: if the fencing token in KEYS[1] is still ARGV[1]
-- and ARGV[4] still holds the lease KEYS[4] (sorted set holder -> expiry ms, Redis server
-- clock), moves the cursor KEYS[2] to position ARGV[2] ("ms-seq") unless it is already there
-- or later, and trims the stream KEYS[3] to the entries from ARGV[3] on (the id right after
-- ARGV[2]). Returns 1, or 0 with nothing written when the lease was taken over or lapsed since
-- (a holder that stalled past its lease cannot move the cursor back; checking the holder too
-- keeps it out when a failover lost the token's INCR and the next holder got the same token).
-- The keys share a hash tag.
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[4], ARGV[4])
if not expiry or tonumber(expiry) <= now then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local nms, nseq = parse(ARGV[2])
local current = redis.call('GET', KEYS[2])
local newer = true
if current then
  local cms, cseq = parse(current)
  if cms and (cms > nms or (cms == nms and cseq >= nseq)) then
    newer = false
  end
end
if newer then
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
return 1
