-- KEYS: hash, marker, receipt (rnnserve:w:{write id}), state key, replay window. ARGV: live prefix, id,
-- owner prefix, client prefix, receipt ms, newest record format read, version zsets' prefix
-- (redis_vlive.lua).
-- -> {'missing', marker} | {'format', fmt} | {'deleted', model, steps}
-- The hash is gone after a delete, so its write id cannot live there: a receipt key holds
-- "{steps} {model}" for a while, and a resend of a delete that landed answers from it.
local v = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner', 'client', 'fmt', 'version')
if not v[1] then
  local receipt = redis.call('GET', KEYS[3])
  if receipt then
    local steps, model = string.match(receipt, '^(%S+) (.*)$')
    return {'deleted', model, steps}
  end
  return {'missing', redis.call('GET', KEYS[2]) or ''}
end
if too_new(v[5], tonumber(ARGV[6])) then return {'format', v[5]} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
redis.call('SET', KEYS[3], (v[2] or '0') .. ' ' .. v[1], 'PX', ARGV[5])
redis.call('ZREM', ARGV[1] .. v[1], ARGV[2])
redis.call('ZREM', ARGV[3] .. (v[3] or ''), ARGV[2])
redis.call('ZREM', ARGV[7] .. v[1] .. '/' .. (v[6] or ''), ARGV[2])
if v[4] and v[4] ~= '' then redis.call('ZREM', ARGV[4] .. v[4], ARGV[2]) end
return {'deleted', v[1], v[2] or '0'}
