#!lua
-- KEYS[1] a shard's mail stream. ARGV: group, consumer, then id, payload pairs.
-- Mail that `consumer` read but must not handle (the shard moved on) goes back to the end
-- of the stream as a new entry, unless another consumer claimed it meanwhile (then that
-- one handles it). Returns how many went back.
local back = 0
for i = 3, #ARGV, 2 do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XADD', KEYS[1], '*', 'm', ARGV[i + 1])
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    back = back + 1
  end
end
return back
