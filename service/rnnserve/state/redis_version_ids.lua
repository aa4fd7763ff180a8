-- KEYS: the model's live sorted set. ARGV: session prefix, version, owner.
-- The ids of the model's live sessions (expiry score after now) of that version and owner:
-- one pass over the model's live ids, as redis_version_count.lua (a bulk migration's list).
-- -> {id, ...}
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now_ms, '+inf')) do
  local v = redis.call('HMGET', ARGV[1] .. id, 'version', 'owner')
  if v[1] == ARGV[2] and (v[2] or '') == ARGV[3] then out[#out + 1] = id end
end
return out
