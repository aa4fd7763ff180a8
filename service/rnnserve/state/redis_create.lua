-- KEYS: hash, marker, gen counter, models set, live zset of the model, owner zset,
--       client set, clients index, state key, replay window (redis_history: cleared), the
--       version's live zset (redis_vlive.lua), the set of versions with one.
-- ARGV: replace (0/1), max_sessions, ttl_ms, marker_ttl_ms, ttl label, id, model, live prefix,
--       owner prefix, client address ('' if not counted), max per client (0: no cap),
--       session prefix, client prefix, write id, newest record format read, record format
--       written, the whole state (format 2; '' for format 1), the version's max_sessions (0:
--       none), the version, the version zsets' prefix, then field, value pairs (without gen,
--       last_used, wid and fmt; format 1's tensor fields and the `ttl` field among them).
--       ttl_ms, marker_ttl_ms and the label are the version's timeout (redis_ttl.py).
-- -> {'taken'} | {'full', n} | {'client-full', n} | {'version-full', n} | {'format', fmt} |
--    {'ok', now, replaced_model, replaced_steps, expired_model, expired_steps} (empty strings
--    where nothing was replaced or found expired; also for a resend of a create that landed:
--    its write id is stored)
-- 'format': the id is held by a record of a newer format than this release reads, which a
-- replace would delete unread: refused, left as it was.
-- 'version-full': the version holds its max_sessions already (a replace of one of its own
-- sessions does not count that one): refused before anything is written, so a refused
-- replace leaves the session it would have replaced as it was.
local old = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner', 'client', 'wid',
                       'last_used', 'fmt', 'version')
if old[5] == ARGV[14] then return {'ok', old[6], '', '', '', ''} end
local client = ARGV[10]
if client ~= '' and tonumber(ARGV[11]) > 0 then  -- the address's cap, before any write
  prune_client(KEYS[7], client, ARGV[12], -1)
  local held = redis.call('ZCARD', KEYS[7])
  if old[1] and old[4] == client and redis.call('ZSCORE', KEYS[7], ARGV[6]) then
    held = held - 1  -- a restart of its own sequence replaces: it does not count twice
  end
  if held >= tonumber(ARGV[11]) then return {'client-full', tostring(held)} end
end
local version_cap = tonumber(ARGV[18])
if version_cap > 0 and (ARGV[1] == '1' or not old[1]) then  -- the version's own cap
  local held = prune_version(KEYS[11], ARGV[7], ARGV[19], ARGV[12], 0)
  if old[1] and redis.call('ZSCORE', KEYS[11], ARGV[6]) then
    held = held - 1  -- a replace of one of the version's own sessions: not counted twice
  end
  if held >= version_cap then return {'version-full', tostring(held)} end
end
local rmodel, rsteps, emodel, esteps = '', '', '', ''
if old[1] then
  if ARGV[1] ~= '1' then return {'taken'} end
  if too_new(old[7], tonumber(ARGV[15])) then return {'format', old[7]} end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[8] .. old[1], ARGV[6])
  redis.call('ZREM', ARGV[9] .. (old[3] or ''), ARGV[6])
  redis.call('ZREM', ARGV[20] .. old[1] .. '/' .. (old[8] or ''), ARGV[6])
  if old[4] and old[4] ~= '' then redis.call('ZREM', ARGV[13] .. old[4], ARGV[6]) end
  rmodel, rsteps = old[1], old[2] or '0'
else
  local mark = redis.call('GET', KEYS[2])
  if mark then  -- an expiry no sweep has counted yet: count it now, exactly once
    local label, steps, model = string.match(mark, '^(%S+) (%S+) (.*)$')
    if model and redis.call('ZREM', ARGV[8] .. model, ARGV[6]) == 1 then
      emodel, esteps = model, steps
    end
  end
  local total = 0
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    total = total + redis.call('ZCOUNT', ARGV[8] .. m, '(' .. now_ms, '+inf')
  end
  if total >= tonumber(ARGV[2]) then return {'full', tostring(total)} end
end
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now,
              'wid', ARGV[14]}
for i = 21, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('DEL', KEYS[10])  -- no replay of another incarnation's step ids
put_state(KEYS[1], KEYS[9], ARGV[16], 'new', ARGV[17], ARGV[3], {}, args)
redis.call('HSET', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[5] .. ' 0 ' .. ARGV[7], 'PX', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[7])
redis.call('ZADD', KEYS[5], now_ms + tonumber(ARGV[3]), ARGV[6])
redis.call('ZADD', KEYS[11], now_ms + tonumber(ARGV[3]), ARGV[6])
redis.call('SADD', KEYS[12], ARGV[7] .. '/' .. ARGV[19])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
redis.call('ZADD', KEYS[6], now_ms + tonumber(ARGV[3]), ARGV[6])
if client ~= '' then  -- counted against its address; the index learns when to look again
  redis.call('HSET', KEYS[1], 'client', client)
  redis.call('ZADD', KEYS[7], now_ms + tonumber(ARGV[3]), ARGV[6])
  redis.call('ZADD', KEYS[8], redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')[2], client)
end
return {'ok', now, rmodel, rsteps, emodel, esteps}
