#!lua
-- KEYS[1] the members sorted set (node → last heartbeat, ms of the server's clock).
-- ARGV: node, lease ms, "1" to leave. Records this node's heartbeat (or its leaving),
-- drops nodes silent for a lease, and returns the live nodes.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
