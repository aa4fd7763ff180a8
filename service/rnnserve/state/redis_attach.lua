-- KEYS: hash, marker, gen counter. ARGV: owner, channel, id.
-- -> {'missing', marker} | {'other'} | {'ok', holder, model, version, created, last_used, steps}
-- A connection takes the session over: holder + 1, and a fresh gen so that a step gathered
-- before this attach conflicts at its scatter (and is gathered again, under the new holder).
-- Every replica hears of it on the channel ("{id} {holder}").
local cur = redis.call('HMGET', KEYS[1], 'gen', 'owner')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if (cur[2] or '') ~= ARGV[1] then return {'other'} end
local holder = redis.call('HINCRBY', KEYS[1], 'holder', 1)
redis.call('HSET', KEYS[1], 'gen', tostring(redis.call('INCR', KEYS[3])))
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. holder)
local meta = redis.call('HMGET', KEYS[1], 'model', 'version', 'created', 'last_used', 'steps')
return {'ok', tostring(holder), meta[1], meta[2], meta[3], meta[4], meta[5]}
