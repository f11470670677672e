#!lua
-- KEYS[1] event counter, KEYS[2] event stream, KEYS[3] timers zset, KEYS[4] timer payloads,
-- KEYS[5] the epoch of the writer's shard; ARGV[1..8] counts of: deletes, puts, appends,
-- events, timer deletes, timer sets, index deletes, index puts; ARGV[9] the writer's
-- fencing token ('' for a write of no shard); then each section's keys and arguments.
-- A token that is not the shard's epoch any more (another node took the shard) refuses
-- the whole batch before anything is written. ARGV[10] counts the claims, the first
-- section (keys set only if they do not exist): one that exists refuses the whole batch,
-- answered {-1, its position among the claims, its value}.
if ARGV[9] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[9] then
  return redis.error_reply('FENCED shard epoch moved past ' .. ARGV[9])
end
local ki, ai = 6, 11
local function key() local k = KEYS[ki]; ki = ki + 1; return k end
local function arg() local a = ARGV[ai]; ai = ai + 1; return a end
local claims = tonumber(ARGV[10])
for i = 0, claims - 1 do
  local found = redis.call('GET', KEYS[6 + i])
  if found then return {-1, i, found} end
end
for _ = 1, claims do local k = key(); redis.call('SET', k, arg()) end
local n = {}
for i = 1, 8 do n[i] = tonumber(ARGV[i]) end
for _ = 1, n[1] do redis.call('DEL', key()) end
for _ = 1, n[2] do local k = key(); redis.call('SET', k, arg()) end
for _ = 1, n[3] do local k = key(); redis.call('RPUSH', k, arg()) end
local first = 0
if n[4] > 0 then
  first = redis.call('INCRBY', KEYS[1], n[4]) - n[4] + 1
  for i = 0, n[4] - 1 do
    redis.call('XADD', KEYS[2], string.format('0-%d', first + i), 'p', arg())
  end
end
for _ = 1, n[5] do
  local k = arg()
  redis.call('ZREM', KEYS[3], k)
  redis.call('HDEL', KEYS[4], k)
end
for _ = 1, n[6] do
  local k = arg(); local due = arg(); local payload = arg()
  redis.call('ZADD', KEYS[3], due, k)
  redis.call('HSET', KEYS[4], k, payload)
end
-- Members per pair of tags (sorted, the first length-prefixed): two-tag counts in O(1).
local function count_pairs(pairs, tags, delta)
  for i = 1, #tags do
    for j = i + 1, #tags do
      local field = #tags[i] .. ':' .. tags[i] .. tags[j]
      if redis.call('HINCRBY', pairs, field, delta) == 0 then redis.call('HDEL', pairs, field) end
    end
  end
end
local function unindex(all, tagmap, pairs, member, tagprefix)
  local old = redis.call('HGET', tagmap, member)
  if old then
    local tags = cjson.decode(old)
    for _, t in ipairs(tags) do redis.call('ZREM', tagprefix .. t, member) end
    count_pairs(pairs, tags, -1)
    redis.call('HDEL', tagmap, member)
    redis.call('ZREM', all, member)
  end
end
for _ = 1, n[7] do
  local all = key(); local tagmap = key(); local pairs = key()
  local member = arg(); local tagprefix = arg()
  unindex(all, tagmap, pairs, member, tagprefix)
end
for _ = 1, n[8] do
  local all = key(); local tagmap = key(); local pairs = key()
  local member = arg(); local score = arg(); local tagprefix = arg()
  local ntags = tonumber(arg()); local tags = arg()
  unindex(all, tagmap, pairs, member, tagprefix)
  redis.call('ZADD', all, score, member)
  for _ = 1, ntags do redis.call('ZADD', key(), score, member) end
  redis.call('HSET', tagmap, member, tags)
  if ntags > 1 then count_pairs(pairs, cjson.decode(tags), 1) end
end
-- Text indexes, after every other section: their own counts (deletes, puts), then per
-- delete KEYS: the member→words hash, ARGV: member, word-set prefix; per put the same
-- and ARGV: score, the words as JSON. Each word's set is prefix .. word (a sorted set).
local function unindex_text(wordmap, member, prefix)
  local old = redis.call('HGET', wordmap, member)
  if old then
    for _, w in ipairs(cjson.decode(old)) do redis.call('ZREM', prefix .. w, member) end
    redis.call('HDEL', wordmap, member)
  end
end
local text_deletes = tonumber(arg()); local text_puts = tonumber(arg())
for _ = 1, text_deletes do
  local wordmap = key(); local member = arg(); local prefix = arg()
  unindex_text(wordmap, member, prefix)
end
for _ = 1, text_puts do
  local wordmap = key(); local member = arg(); local prefix = arg()
  local score = arg(); local words = arg()
  unindex_text(wordmap, member, prefix)
  for _, w in ipairs(cjson.decode(words)) do redis.call('ZADD', prefix .. w, score, member) end
  redis.call('HSET', wordmap, member, words)
end
return {first, n[4]}
