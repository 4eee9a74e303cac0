-- Fixed-window counter: increments KEYS[1] and, on the first increment of a window, makes it
-- expire after ARGV[1] ms. Returns the new count.
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
