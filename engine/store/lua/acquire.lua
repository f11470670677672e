#!lua
-- KEYS[1] a shard's lease, KEYS[2] its epoch. ARGV: node, lease ms.
-- Take the lease when it is free (or already this node's, after a restart) and return the
-- new epoch, the fencing token of every write of the shard from now on; 0 when taken.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
