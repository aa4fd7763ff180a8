-- KEYS: hash, marker. ARGV: live prefix, id, owner prefix, client prefix.
-- -> {'missing', marker} | {'deleted', model, steps}
local v = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner', 'client')
if not v[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', ARGV[1] .. v[1], ARGV[2])
redis.call('ZREM', ARGV[3] .. (v[3] or ''), ARGV[2])
if v[4] and v[4] ~= '' then redis.call('ZREM', ARGV[4] .. v[4], ARGV[2]) end
return {'deleted', v[1], v[2] or '0'}
