-- Appends to stream KEYS[1] under id ARGV[1] (trimming entries older than MINID ARGV[2]),
-- unless the stream's top id is already ARGV[1] or later, keeps at most the newest ARGV[5]
-- entries (0: no limit), and makes the whole stream expire ARGV[4] ms after its last append
-- (idle users' logs go away). Returns 1 if appended, 0 if the stream already had it, so
-- replaying a batch that was partly stored is harmless. Any other failure (out of memory, a
-- key of another type) is raised: the caller must not take it for "already stored".
local ok = redis.pcall('XADD', KEYS[1], 'MINID', ARGV[2], ARGV[1], 'd', ARGV[3])
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'equal or smaller', 1, true) then
    return 0
  end
  return redis.error_reply(ok.err)
end
local max = tonumber(ARGV[5])
if max > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', max)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
