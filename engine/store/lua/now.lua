#!lua flags=no-writes
-- KEYS[1] any key of the store: it routes the call to the store's hash slot on a Redis
-- Cluster, where a bare TIME names no slot. The server's time: {seconds, microseconds}.
return redis.call('TIME')
