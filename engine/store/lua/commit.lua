#!lua
-- A group of batches in one call, applied in order, each answered alone.
-- KEYS[1] event counter, KEYS[2] event stream, KEYS[3] timers zset, KEYS[4] timer payloads.
-- ARGV[1] the batches, msgpack: an array of one array per batch, of
--   1 the epoch key of the writer's shard and 2 its fencing token ('' for none),
--   3 claims {key, value, ...}, 4 deletes {key, ...}, 5 puts {key, value, ...},
--   6 appends {log key, record, ...}, 7 events {payload, ...}, 8 timer deletes {key, ...},
--   9 timers {key, due, payload, ...}, 10 index deletes {root, member, ...},
--   11 index puts {root, member, score, tags as JSON, ...}, 12 text deletes
--   {root, member, ...}, 13 text puts {root, member, score, words as JSON, ...}
-- (an index's keys are root .. 'all' | 'tags' | 'pairs' | 't:' .. tag, a text index's
-- root .. 'words' | 'w:' .. word; scores and due times as Redis parses doubles).
-- Answers one array per batch: {first event seq, event count} when applied;
-- {-1, position among its claims, value} when a claimed key exists, {-2, message} when
-- its token is not the shard's epoch any more (another node took the shard): both
-- refuse the batch before anything of it is written; {-3, message} when a command
-- failed (inputs Redis would reject are refused before sending, so this is a bug).
local function count_pairs(pairs, tags, delta)
  -- Members per pair of tags (sorted, the first length-prefixed): two-tag counts in O(1).
  for i = 1, #tags do
    for j = i + 1, #tags do
      local field = #tags[i] .. ':' .. tags[i] .. tags[j]
      if redis.call('HINCRBY', pairs, field, delta) == 0 then redis.call('HDEL', pairs, field) end
    end
  end
end

local function unindex(root, member, old)
  local tags = cjson.decode(old)
  for _, t in ipairs(tags) do redis.call('ZREM', root .. 't:' .. t, member) end
  count_pairs(root .. 'pairs', tags, -1)
  redis.call('HDEL', root .. 'tags', member)
  redis.call('ZREM', root .. 'all', member)
end

local function index(root, member, score, tags)
  local old = redis.call('HGET', root .. 'tags', member)
  if old == tags then
    -- the same tags (a ticket's last activity moves, its state does not): a new score
    redis.call('ZADD', root .. 'all', score, member)
    for _, t in ipairs(cjson.decode(tags)) do redis.call('ZADD', root .. 't:' .. t, score, member) end
    return
  end
  if old then unindex(root, member, old) end
  local list = cjson.decode(tags)
  redis.call('ZADD', root .. 'all', score, member)
  for _, t in ipairs(list) do redis.call('ZADD', root .. 't:' .. t, score, member) end
  redis.call('HSET', root .. 'tags', member, tags)
  count_pairs(root .. 'pairs', list, 1)
end

local function unindex_text(root, member)
  local old = redis.call('HGET', root .. 'words', member)
  if old then
    for _, w in ipairs(cjson.decode(old)) do redis.call('ZREM', root .. 'w:' .. w, member) end
    redis.call('HDEL', root .. 'words', member)
  end
end

local function apply(b)
  local claims = b[3]
  for i = 1, #claims, 2 do
    local found = redis.call('GET', claims[i])
    if found then return {-1, (i - 1) / 2, found} end
  end
  for i = 1, #claims, 2 do redis.call('SET', claims[i], claims[i + 1]) end
  for _, k in ipairs(b[4]) do redis.call('DEL', k) end
  local puts = b[5]
  for i = 1, #puts, 2 do redis.call('SET', puts[i], puts[i + 1]) end
  local appends = b[6]
  for i = 1, #appends, 2 do redis.call('RPUSH', appends[i], appends[i + 1]) end
  local events = b[7]
  local first = 0
  if #events > 0 then
    first = redis.call('INCRBY', KEYS[1], #events) - #events + 1
    for i, payload in ipairs(events) do
      redis.call('XADD', KEYS[2], string.format('0-%d', first + i - 1), 'p', payload)
    end
  end
  for _, k in ipairs(b[8]) do
    redis.call('ZREM', KEYS[3], k)
    redis.call('HDEL', KEYS[4], k)
  end
  local timers = b[9]
  for i = 1, #timers, 3 do
    redis.call('ZADD', KEYS[3], timers[i + 1], timers[i])
    redis.call('HSET', KEYS[4], timers[i], timers[i + 2])
  end
  local index_deletes = b[10]
  for i = 1, #index_deletes, 2 do
    local root, member = index_deletes[i], index_deletes[i + 1]
    local old = redis.call('HGET', root .. 'tags', member)
    if old then unindex(root, member, old) end
  end
  local index_puts = b[11]
  for i = 1, #index_puts, 4 do
    index(index_puts[i], index_puts[i + 1], index_puts[i + 2], index_puts[i + 3])
  end
  local text_deletes = b[12]
  for i = 1, #text_deletes, 2 do unindex_text(text_deletes[i], text_deletes[i + 1]) end
  local text_puts = b[13]
  for i = 1, #text_puts, 4 do
    local root, member, score, words = text_puts[i], text_puts[i + 1], text_puts[i + 2], text_puts[i + 3]
    unindex_text(root, member)
    for _, w in ipairs(cjson.decode(words)) do redis.call('ZADD', root .. 'w:' .. w, score, member) end
    redis.call('HSET', root .. 'words', member, words)
  end
  return {first, #events}
end

local answers = {}
for n, b in ipairs(cmsgpack.unpack(ARGV[1])) do
  if b[2] ~= '' and redis.call('GET', b[1]) ~= b[2] then
    answers[n] = {-2, 'FENCED shard epoch moved past ' .. b[2]}
  else
    local ok, answer = pcall(apply, b)
    if ok then
      answers[n] = answer
    else
      answers[n] = {-3, type(answer) == 'table' and answer.err or tostring(answer)}
    end
  end
end
return answers
