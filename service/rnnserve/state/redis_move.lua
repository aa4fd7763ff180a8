-- KEYS: hash, marker, gen counter, state key, kept inputs (redis_inputs), replay window
--       (redis_history), the target version's live ids (redis_vlive), the set of versions
--       with one, the old version's live ids.
-- ARGV: gathered gen, ttl_ms, marker_ttl_ms, ttl label, live prefix, id, owner prefix, write
--       id, newest record format read, record format written, the whole state (format 2; ''
--       for format 1), the new version, its layout (JSON), the kept inputs' bytes, `created`
--       (the move's time), the target's ttl field, its cap (0: none), the session prefix,
--       n_old, the
--       old layout's n_old format 1 tensor fields, n, the new layout's n format 1 tensor
--       fields, then (format 1) their n values.
-- -> {'missing', marker} | {'format', fmt} | {'conflict'} | {'full', n} | {'ok', now} ('ok' too for a
-- resend of this move that landed: its write id is stored)
-- A migration's write (engine/migration.py): the session takes another version of its model
-- and a new state, written only if its gen is still the one read (no step, reset, attach or
-- other move came between: else 'conflict', and the migration reads again). Everything else
-- stays: steps, owner, client, the replay window (last_id, last_out and
-- rnnserve:h:{id}); the kept inputs become the ones replayed, as of the session's steps.
local cur = redis.call('HMGET', KEYS[1], 'gen', 'model', 'owner', 'wid', 'last_used', 'fmt',
                       'steps')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if too_new(cur[6], tonumber(ARGV[9])) then return {'format', cur[6]} end
if cur[4] == ARGV[8] then return {'ok', cur[5]} end
if cur[1] ~= ARGV[1] then return {'conflict'} end
local cap = tonumber(ARGV[17])
if cap > 0 and prune_version(KEYS[7], cur[2], ARGV[12], ARGV[18], 0) >= cap then
  return {'full', tostring(redis.call('ZCARD', KEYS[7]))}
end
local n_old = tonumber(ARGV[19])
local at = 20 + n_old
local n = tonumber(ARGV[at])
local tensor_fields = {unpack(ARGV, at + 1, at + n)}
if (cur[6] or '1') == '1' and n_old > 0 then  -- the old layout's tensors, maybe other names
  redis.call('HDEL', KEYS[1], unpack(ARGV, 20, 19 + n_old))
end
local steps = cur[7] or '0'
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now, 'wid', ARGV[8],
              'version', ARGV[12], 'layout', ARGV[13], 'in_steps', steps,
              'created', ARGV[15], 'ttl', ARGV[16]}
if ARGV[10] == '1' then
  for j = 1, n do
    args[#args + 1] = tensor_fields[j]
    args[#args + 1] = ARGV[at + n + j]
  end
end
put_state(KEYS[1], KEYS[4], ARGV[10], cur[6] or '1', ARGV[11], ARGV[2], tensor_fields, args)
redis.call('HSET', KEYS[1], unpack(args))
if ARGV[14] ~= '' then
  redis.call('SET', KEYS[5], ARGV[14], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[6], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4] .. ' ' .. steps .. ' ' .. cur[2], 'PX', ARGV[3])
redis.call('ZADD', ARGV[5] .. cur[2], now_ms + tonumber(ARGV[2]), ARGV[6])
redis.call('ZADD', KEYS[7], now_ms + tonumber(ARGV[2]), ARGV[6])
if KEYS[9] ~= KEYS[7] then  -- its place under the old version's cap is free at once
  redis.call('ZREM', KEYS[9], ARGV[6])
end
redis.call('SADD', KEYS[8], cur[2] .. '/' .. ARGV[12])
redis.call('ZADD', ARGV[7] .. (cur[3] or ''), now_ms + tonumber(ARGV[2]), ARGV[6])
return {'ok', now}
