-- KEYS: hash, marker, gen counter, replay window. ARGV: owner, channel, id, write id, newest
-- record format.
-- -> {'missing', marker} | {'format', fmt} | {'other'} |
--    {'ok', holder, model, version, created, last_used, steps, latest step id or '',
--     the `ttl` field or '' (redis_ttl.py)}
-- A connection takes the session over: holder + 1, and a fresh gen so that a step gathered
-- before this attach conflicts at its scatter (and is gathered again, under the new holder).
-- Every replica hears of it on the channel ("{id} {holder}"). A resend of an attach that
-- landed (its write id is stored) answers the same holder, not a second takeover.
local cur = redis.call('HMGET', KEYS[1], 'gen', 'owner', 'wid', 'holder', 'fmt')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if too_new(cur[5], tonumber(ARGV[5])) then return {'format', cur[5]} end
if (cur[2] or '') ~= ARGV[1] then return {'other'} end
local holder = cur[4] or '0'
if cur[3] ~= ARGV[4] then
  holder = redis.call('HINCRBY', KEYS[1], 'holder', 1)
  redis.call('HSET', KEYS[1], 'gen', tostring(redis.call('INCR', KEYS[3])), 'wid', ARGV[4])
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. holder)
end
local meta = redis.call('HMGET', KEYS[1], 'model', 'version', 'created', 'last_used', 'steps',
                        'last_id', 'ttl')
return {'ok', tostring(holder), meta[1], meta[2], meta[3], meta[4], meta[5],
        meta[6] or history_head(KEYS[4]) or '', meta[7] or ''}
