#!lua
-- One schema migration step, atomically: rewrite fields of a hash that still hold what the
-- step read, then record the new version. KEYS[1] the version key, KEYS[2] the hash.
-- ARGV: from, to, then field, old value, new value, ... Returns the version now stored;
-- a store already past `from` (another process migrated it) is left alone.
local found = tonumber(redis.call('GET', KEYS[1]) or '1')
if found ~= tonumber(ARGV[1]) then
  return found
end
for i = 3, #ARGV, 3 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return tonumber(ARGV[2])
