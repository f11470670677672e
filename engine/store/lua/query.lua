#!lua flags=no-writes
-- KEYS[1] the index's `all` set, KEYS[2..] its tag sets. ARGV: limit, descending (1/0),
-- has cursor (1/0), cursor score, cursor member. Returns member, score, member, ...
local limit = tonumber(ARGV[1])
local desc = ARGV[2] == '1'
local driver, others = KEYS[1], {}
if #KEYS > 1 then
  -- Walk the rarest tag's set in score order and keep the members the others have.
  local best, bestn = 2, -1
  for i = 2, #KEYS do
    local c = redis.call('ZCARD', KEYS[i])
    if c == 0 then return {} end
    if bestn < 0 or c < bestn then best, bestn = i, c end
  end
  driver = KEYS[best]
  for i = 2, #KEYS do if i ~= best then others[#others + 1] = KEYS[i] end end
end
local size = redis.call('ZCARD', driver)
-- Bytewise order, as Redis orders ties; Lua's `<` follows the server's locale.
local function less(a, b)
  local m = math.min(#a, #b)
  for i = 1, m do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- pos: ascending rank where the walk starts.
local pos
if ARGV[3] == '1' then
  local s, m = ARGV[4], ARGV[5]
  -- Ranks [lo, hi) hold the ties at score s, in member order: binary search the cursor.
  local lo = redis.call('ZCOUNT', driver, '-inf', '(' .. s)
  local hi = redis.call('ZCOUNT', driver, '-inf', s)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local x = redis.call('ZRANGE', driver, mid, mid)[1]
    local beyond
    if desc then beyond = not less(x, m) else beyond = less(m, x) end
    if beyond then hi = mid else lo = mid + 1 end
  end
  if desc then pos = lo - 1 else pos = lo end
else
  if desc then pos = size - 1 else pos = 0 end
end
local out, found = {}, 0
local chunk = limit
if #others > 0 then chunk = math.max(limit * 2, 64) end
while found < limit and pos >= 0 and pos < size do
  local rows, from, to, step
  if desc then
    local lo = math.max(pos - chunk + 1, 0)
    rows = redis.call('ZRANGE', driver, lo, pos, 'WITHSCORES')
    from, to, step = #rows - 1, 1, -2
    pos = lo - 1
  else
    rows = redis.call('ZRANGE', driver, pos, pos + chunk - 1, 'WITHSCORES')
    from, to, step = 1, #rows - 1, 2
    pos = pos + chunk
  end
  for i = from, to, step do
    local member = rows[i]
    local keep = true
    for _, o in ipairs(others) do
      if not redis.call('ZSCORE', o, member) then keep = false; break end
    end
    if keep then
      out[#out + 1] = member
      out[#out + 1] = rows[i + 1]
      found = found + 1
      if found >= limit then break end
    end
  end
end
return out
