#!lua
-- KEYS[1] a shard's lease, KEYS[2] its epoch. ARGV: node, epoch.
-- Give the lease up, only if this node still holds it at that epoch.
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
