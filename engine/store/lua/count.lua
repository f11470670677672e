#!lua flags=no-writes
-- KEYS[1] the index's `all` set, KEYS[2] its pair counts, KEYS[3..] its tag sets;
-- ARGV[1] the pair-count field when there are exactly two tags.
if #KEYS == 2 then return redis.call('ZCARD', KEYS[1]) end
if #KEYS == 3 then return redis.call('ZCARD', KEYS[3]) end
if #KEYS == 4 then return tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') end
return redis.call('ZINTERCARD', #KEYS - 2, unpack(KEYS, 3))
