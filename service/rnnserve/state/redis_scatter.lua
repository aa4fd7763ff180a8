-- KEYS: gen counter, live zset of the model, then hash, marker per row.
-- ARGV: ttl_ms, marker_ttl_ms, ttl label, model, k (tensors), k field names, owner prefix,
--       write id, then per row: id, gathered gen, steps to add, owner, step id ('' for none),
--       outputs bytes, k state byte strings.
-- -> {now, then per row: status ('ok' | 'conflict' | 'missing' | 'replay' | 'landed'),
--     steps or marker, recorded outputs (replay only, else '')}
-- 'landed': this very call (its write id) wrote the row before: a resend after a lost reply.
-- It counts as written; its PEXPIRE is a write, so a WAIT after it covers the first run too.
local ttl_ms, marker_ttl_ms = tonumber(ARGV[1]), ARGV[2]
local k = tonumber(ARGV[5])
local owners = ARGV[6 + k]
local write_id = ARGV[7 + k]
local stride = 6 + k
local out = {now}
for r = 0, (#KEYS - 2) / 2 - 1 do
  local hash, marker = KEYS[3 + 2 * r], KEYS[4 + 2 * r]
  local base = 7 + k + r * stride
  local step_id = ARGV[base + 5]
  local cur = redis.call('HMGET', hash, 'gen', 'last_id', 'last_out', 'steps', 'wid')
  if not cur[1] then
    out[#out + 1] = 'missing'
    out[#out + 1] = redis.call('GET', marker) or ''
    out[#out + 1] = ''
  elseif cur[5] == write_id then
    redis.call('PEXPIRE', hash, ttl_ms)
    out[#out + 1] = 'landed'
    out[#out + 1] = cur[4]
    out[#out + 1] = ''
  elseif step_id ~= '' and cur[2] == step_id then
    redis.call('PEXPIRE', hash, ttl_ms)  -- a write, so that a WAIT after it covers the step
    out[#out + 1] = 'replay'
    out[#out + 1] = cur[4]
    out[#out + 1] = cur[3]
  elseif cur[1] ~= ARGV[base + 2] then
    out[#out + 1] = 'conflict'
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    local args = {'last_used', now, 'gen', tostring(redis.call('INCR', KEYS[1])),
                  'wid', write_id}
    for j = 1, k do
      args[#args + 1] = ARGV[5 + j]
      args[#args + 1] = ARGV[base + 6 + j]
    end
    if step_id ~= '' then
      args[#args + 1] = 'last_id'
      args[#args + 1] = step_id
      args[#args + 1] = 'last_out'
      args[#args + 1] = ARGV[base + 6]
    elseif cur[2] then
      redis.call('HDEL', hash, 'last_id', 'last_out')
    end
    redis.call('HSET', hash, unpack(args))
    local steps = redis.call('HINCRBY', hash, 'steps', ARGV[base + 3])
    redis.call('PEXPIRE', hash, ttl_ms)
    redis.call('SET', marker, ARGV[3] .. ' ' .. steps .. ' ' .. ARGV[4], 'PX', marker_ttl_ms)
    redis.call('ZADD', KEYS[2], now_ms + ttl_ms, ARGV[base + 1])
    redis.call('ZADD', owners .. ARGV[base + 4], now_ms + ttl_ms, ARGV[base + 1])
    out[#out + 1] = 'ok'
    out[#out + 1] = tostring(steps)
    out[#out + 1] = ''
  end
end
return out
