#!lua
-- KEYS[1] the stream a mail came from, KEYS[2] the stream it goes on to.
-- ARGV: group, consumer, the mail's id, the payload to pass on.
-- An ask handed on (`Forward`) by `consumer`: the new mail is appended and the old one
-- acknowledged, atomically, but only while the old one is still `consumer`'s; if its
-- shard's next owner claimed it meanwhile (this node paused past its lease), that owner
-- handles it and nothing is passed on. Returns 1 when passed on.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not (pending[1] and pending[1][2] == ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'm', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
