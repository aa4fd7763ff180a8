-- KEYS: hash, marker, gen counter. ARGV: gathered gen, ttl_ms, marker_ttl_ms, ttl label,
-- live prefix, id, owner prefix, write id, then field, value pairs of the new state.
-- -> {'missing', marker} | {'conflict'} | {'ok', now} ('ok' too for a resend of this reset
-- that landed: its write id is stored)
local cur = redis.call('HMGET', KEYS[1], 'gen', 'model', 'owner', 'wid', 'last_used')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if cur[4] == ARGV[8] then return {'ok', cur[5]} end
if cur[1] ~= ARGV[1] then return {'conflict'} end
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now, 'steps', '0',
              'wid', ARGV[8]}
for i = 9, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('HDEL', KEYS[1], 'last_id', 'last_out')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4] .. ' 0 ' .. cur[2], 'PX', ARGV[3])
redis.call('ZADD', ARGV[5] .. cur[2], now_ms + tonumber(ARGV[2]), ARGV[6])
redis.call('ZADD', ARGV[7] .. (cur[3] or ''), now_ms + tonumber(ARGV[2]), ARGV[6])
return {'ok', now}
