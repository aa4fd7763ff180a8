-- KEYS: gen counter, live zset of the model, then hash, marker, state key, replay window
--       (redis_history) per row.
-- ARGV: ttl_ms, marker_ttl_ms, ttl label, model, newest record format read, record format
--       written, n, the n format 1 tensor fields (t:{name}), owner prefix, write id, how
--       many steps the window keeps besides the hash's latest, the kept inputs' most bytes
--       (0: none kept), their key prefix, the `ttl` field's value, then per row: id, gathered gen, steps to add,
--       owner, step id ('' for none), outputs bytes, then the state: format 1, n tensor byte
--       strings; format 2, one string of them all; then the row's inputs bytes ('' when none
--       are kept).
-- ttl_ms, marker_ttl_ms, the label and the `ttl` field are the version's timeout
-- (redis_ttl.py): every written row takes it, with its marker, window and kept inputs.
-- Kept inputs (redis_inputs.py): a written row's inputs are appended to rnnserve:in:{id},
-- cut to the most bytes from its end, and the hash's `in_steps` set to its steps. When
-- `in_steps` is not the steps before this one (a reset, or a step of an older release that
-- keeps no inputs), the inputs kept so far are dropped: the window restarts with this step.
-- -> {now, then per row: status ('ok' | 'conflict' | 'missing' | 'replay' | 'landed' |
--     'format'), steps or marker or the unread format, recorded outputs (replay only, else '')}
-- 'format': a record of a format newer than this release reads; left as it was.
-- 'replay': the row's step id is the hash's last_id or in the window: applied before.
-- 'landed': this very call (its write id) wrote the row before: a resend after a lost reply.
-- It counts as written; its PEXPIRE is a write, so a WAIT after it covers the first run too.
local ttl_ms, marker_ttl_ms = tonumber(ARGV[1]), ARGV[2]
local newest, fmt = tonumber(ARGV[5]), ARGV[6]
local n = tonumber(ARGV[7])
local tensor_fields = {unpack(ARGV, 8, 7 + n)}
local owners = ARGV[8 + n]
local write_id = ARGV[9 + n]
local keep = tonumber(ARGV[10 + n])
local keep_bytes, inputs_prefix = tonumber(ARGV[11 + n]), ARGV[12 + n]
local ttl_field = ARGV[13 + n]
local head = 13 + n
local values = fmt == '1' and n or 1
local stride = 7 + values
local out = {now}
for r = 0, (#KEYS - 2) / 4 - 1 do
  local hash, marker, state_key = KEYS[3 + 4 * r], KEYS[4 + 4 * r], KEYS[5 + 4 * r]
  local window = KEYS[6 + 4 * r]
  local base = head + r * stride
  local step_id = ARGV[base + 5]
  local cur = redis.call('HMGET', hash, 'gen', 'last_id', 'last_out', 'steps', 'wid', 'fmt',
                        'in_steps')
  local old_steps, old_out = nil, nil
  if cur[1] and step_id ~= '' and cur[2] ~= step_id and cur[5] ~= write_id and keep > 0 then
    old_steps, old_out = history_find(window, step_id)
  end
  if not cur[1] then
    out[#out + 1] = 'missing'
    out[#out + 1] = redis.call('GET', marker) or ''
    out[#out + 1] = ''
  elseif too_new(cur[6], newest) then
    out[#out + 1] = 'format'
    out[#out + 1] = cur[6]
    out[#out + 1] = ''
  elseif cur[5] == write_id then
    redis.call('PEXPIRE', hash, ttl_ms)
    redis.call('PEXPIRE', state_key, ttl_ms)
    if keep_bytes > 0 then redis.call('PEXPIRE', inputs_prefix .. ARGV[base + 1], ttl_ms) end
    out[#out + 1] = 'landed'
    out[#out + 1] = cur[4]
    out[#out + 1] = ''
  elseif step_id ~= '' and cur[2] == step_id then
    redis.call('PEXPIRE', hash, ttl_ms)  -- a write, so that a WAIT after it covers the step
    redis.call('PEXPIRE', state_key, ttl_ms)
    if keep_bytes > 0 then redis.call('PEXPIRE', inputs_prefix .. ARGV[base + 1], ttl_ms) end
    out[#out + 1] = 'replay'
    out[#out + 1] = cur[4]
    out[#out + 1] = cur[3]
  elseif old_steps then
    redis.call('PEXPIRE', hash, ttl_ms)
    redis.call('PEXPIRE', state_key, ttl_ms)
    if keep_bytes > 0 then redis.call('PEXPIRE', inputs_prefix .. ARGV[base + 1], ttl_ms) end
    out[#out + 1] = 'replay'
    out[#out + 1] = old_steps
    out[#out + 1] = old_out
  elseif cur[1] ~= ARGV[base + 2] then
    out[#out + 1] = 'conflict'
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    local args = {'last_used', now, 'gen', tostring(redis.call('INCR', KEYS[1])),
                  'wid', write_id, 'ttl', ttl_field}
    if fmt == '1' then
      for j = 1, n do
        args[#args + 1] = tensor_fields[j]
        args[#args + 1] = ARGV[base + 6 + j]
      end
    end
    if cur[2] then  -- the former latest joins the window
      history_push(window, cur[2], cur[4] or '0', cur[3] or '', keep, ttl_ms)
    end
    if step_id ~= '' then
      args[#args + 1] = 'last_id'
      args[#args + 1] = step_id
      args[#args + 1] = 'last_out'
      args[#args + 1] = ARGV[base + 6]
    elseif cur[2] then
      redis.call('HDEL', hash, 'last_id', 'last_out')
    end
    put_state(hash, state_key, fmt, cur[6] or '1', ARGV[base + 7], ttl_ms, tensor_fields, args)
    redis.call('HSET', hash, unpack(args))
    local steps = redis.call('HINCRBY', hash, 'steps', ARGV[base + 3])
    if keep_bytes > 0 then
      local inputs_key = inputs_prefix .. ARGV[base + 1]
      local kept = ''
      if (cur[7] or '0') == (cur[4] or '0') then  -- no step went unkept since the last append
        kept = redis.call('GET', inputs_key) or ''
      end
      kept = kept .. ARGV[base + 7 + values]
      if #kept > keep_bytes then kept = string.sub(kept, -keep_bytes) end
      redis.call('SET', inputs_key, kept, 'PX', ttl_ms)
      redis.call('HSET', hash, 'in_steps', steps)
    end
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
