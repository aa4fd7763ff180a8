-- KEYS: hash, marker, gen counter, state key, replay window (cleared). ARGV: gathered gen, ttl_ms, marker_ttl_ms,
-- ttl label, live prefix, id, owner prefix, write id, newest record format read, record
-- format written, the whole state (format 2; '' for format 1), n, the n format 1 tensor
-- fields (t:{name}), then (format 1) their n values.
-- -> {'missing', marker} | {'format', fmt} | {'conflict'} | {'ok', now} ('ok' too for a
-- resend of this reset that landed: its write id is stored)
local cur = redis.call('HMGET', KEYS[1], 'gen', 'model', 'owner', 'wid', 'last_used', 'fmt')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if too_new(cur[6], tonumber(ARGV[9])) then return {'format', cur[6]} end
if cur[4] == ARGV[8] then return {'ok', cur[5]} end
if cur[1] ~= ARGV[1] then return {'conflict'} end
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now, 'steps', '0',
              'wid', ARGV[8]}
local n = tonumber(ARGV[12])
local tensor_fields = {unpack(ARGV, 13, 12 + n)}
if ARGV[10] == '1' then
  for j = 1, n do
    args[#args + 1] = tensor_fields[j]
    args[#args + 1] = ARGV[12 + n + j]
  end
end
redis.call('HDEL', KEYS[1], 'last_id', 'last_out')
redis.call('DEL', KEYS[5])
put_state(KEYS[1], KEYS[4], ARGV[10], cur[6] or '1', ARGV[11], ARGV[2], tensor_fields, args)
redis.call('HSET', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4] .. ' 0 ' .. cur[2], 'PX', ARGV[3])
redis.call('ZADD', ARGV[5] .. cur[2], now_ms + tonumber(ARGV[2]), ARGV[6])
redis.call('ZADD', ARGV[7] .. (cur[3] or ''), now_ms + tonumber(ARGV[2]), ARGV[6])
return {'ok', now}
