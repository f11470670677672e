#!lua
-- KEYS: lease, epoch of each shard held. ARGV: node, lease ms, then each shard's epoch.
-- Extends each lease still held at that epoch; returns 1 (renewed) or 0 (lost) per shard.
local out = {}
for i = 1, #KEYS, 2 do
  local epoch = ARGV[2 + (i + 1) / 2]
  if redis.call('GET', KEYS[i]) == ARGV[1] and redis.call('GET', KEYS[i + 1]) == epoch then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
