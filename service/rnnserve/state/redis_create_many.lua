-- Many new sessions of one model version in one call (a bulk create): each item as
-- redis_create.lua without `replace`, the counts read once and carried along.
-- KEYS: gen counter, models set, live zset of the model, owner zset, client set, clients index,
--       the version's live zset (redis_vlive.lua), the set of versions with one.
-- ARGV: 1 max_sessions, 2 ttl_ms, 3 marker_ttl_ms, 4 ttl label, 5 model, 6 live prefix,
--       7 client address ('' if not counted), 8 max per client (0: no cap), 9 session prefix,
--       10 marker prefix, 11 state key prefix, 12 write id, 13 newest record format read,
--       14 record format written, 15 count S of shared values, 16 count N of state field
--       names (format 1: one per tensor; format 2: 0), 17 the version's max_sessions (0:
--       none), 18 the version, then the S shared field, value pairs (model, version,
--       created, steps, owner, layout, ttl), the N names, the state's zeros (N
--       values; format 2: 1, the whole state), then per item its id and its state values as
--       many as the zeros ('' for zeros).
-- ttl_ms, marker_ttl_ms and the label are the version's timeout (redis_ttl.py).
-- -> {now, statuses, expired}: one status per item in order, 'ok' | 'taken' | 'full' |
--    'client-full' | 'version-full'; expired: model, steps of each expiry found at an id and
--    counted now.
-- A resent call (same write id) answers 'ok' for the items its first run created.
local max_sessions, ttl_ms, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[8])
local client, wid, fmt = ARGV[7], ARGV[12], ARGV[14]
local nshared, nnames = tonumber(ARGV[15]), tonumber(ARGV[16])
local per = nnames
if fmt == '2' then per = 1 end
local version_cap, version = tonumber(ARGV[17]), ARGV[18]
local at = 19
local shared = {}
for i = 1, nshared do shared[i] = ARGV[at + i - 1] end
at = at + nshared
local names, zeros = {}, {}
for i = 1, nnames do names[i] = ARGV[at + i - 1] end
at = at + nnames
for i = 1, per do zeros[i] = ARGV[at + i - 1] end
at = at + per
local counted = client ~= '' and cap > 0
local held = 0
if counted then  -- the address's cap, before any write
  prune_client(KEYS[5], client, ARGV[9], -1)
  held = redis.call('ZCARD', KEYS[5])
end
local total = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  total = total + redis.call('ZCOUNT', ARGV[6] .. m, '(' .. now_ms, '+inf')
end
local version_held = 0
if version_cap > 0 then version_held = prune_version(KEYS[7], ARGV[5], version, ARGV[9], 0) end
local expiry = now_ms + ttl_ms
local statuses, expired = {}, {}
local made = 0
while at <= #ARGV do
  local id = ARGV[at]
  local hash = ARGV[9] .. id
  local old = redis.call('HMGET', hash, 'model', 'wid')
  local status = 'ok'
  if old[1] then
    if old[2] ~= wid then status = 'taken' end  -- equal: this call's first run made it
  elseif counted and held >= cap then
    status = 'client-full'
  elseif version_cap > 0 and version_held >= version_cap then
    status = 'version-full'
  elseif total >= max_sessions then
    status = 'full'
  else
    local mark = redis.call('GET', ARGV[10] .. id)
    if mark then  -- an expiry no sweep has counted yet: count it now, exactly once
      local label, steps, model = string.match(mark, '^(%S+) (%S+) (.*)$')
      if model and redis.call('ZREM', ARGV[6] .. model, id) == 1 then
        expired[#expired + 1] = model
        expired[#expired + 1] = steps
      end
    end
    local args = {'gen', tostring(redis.call('INCR', KEYS[1])), 'last_used', now, 'wid', wid}
    for i = 1, nshared do args[#args + 1] = shared[i] end
    for j = 1, nnames do
      local value = ARGV[at + j]
      if value == '' then value = zeros[j] end
      args[#args + 1] = names[j]
      args[#args + 1] = value
    end
    local whole = ''
    if fmt == '2' then
      whole = ARGV[at + 1]
      if whole == '' then whole = zeros[1] end
    end
    if client ~= '' then
      args[#args + 1] = 'client'
      args[#args + 1] = client
    end
    put_state(hash, ARGV[11] .. id, fmt, 'new', whole, ARGV[2], {}, args)
    redis.call('HSET', hash, unpack(args))
    redis.call('PEXPIRE', hash, ARGV[2])
    redis.call('SET', ARGV[10] .. id, ARGV[4] .. ' 0 ' .. ARGV[5], 'PX', ARGV[3])
    redis.call('ZADD', KEYS[3], expiry, id)
    redis.call('ZADD', KEYS[4], expiry, id)
    redis.call('ZADD', KEYS[7], expiry, id)
    version_held = version_held + 1
    if client ~= '' then
      redis.call('ZADD', KEYS[5], expiry, id)
      held = held + 1
    end
    total = total + 1
    made = made + 1
  end
  statuses[#statuses + 1] = status
  at = at + 1 + per
end
if made > 0 then
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('SADD', KEYS[8], ARGV[5] .. '/' .. version)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms)
  if client ~= '' then  -- the index learns when to look at the address's set again
    redis.call('ZADD', KEYS[6], redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')[2], client)
  end
end
return {now, statuses, expired}
