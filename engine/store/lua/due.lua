#!lua flags=no-writes
-- KEYS[1] timers zset, KEYS[2] payloads. ARGV: until, limit. Returns key, due, payload, ...
local rows = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0,
                        tonumber(ARGV[2]), 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
