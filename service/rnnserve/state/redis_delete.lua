-- KEYS: hash, marker. ARGV: live prefix, id, owner prefix.
-- -> {'missing', marker} | {'deleted', model, steps}
local v = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner')
if not v[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', ARGV[1] .. v[1], ARGV[2])
redis.call('ZREM', ARGV[3] .. (v[3] or ''), ARGV[2])
return {'deleted', v[1], v[2] or '0'}
