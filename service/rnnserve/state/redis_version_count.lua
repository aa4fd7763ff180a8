-- KEYS: the model's live sorted set. ARGV: session prefix.
-- Counts the model's live sessions (expiry score after now) by their hash's version: one
-- pass over the model's live ids (the listing's count; O(live sessions of the model)).
-- -> {version, count, ...}
local counts = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now_ms, '+inf')) do
  local v = redis.call('HGET', ARGV[1] .. id, 'version')
  if v then counts[v] = (counts[v] or 0) + 1 end
end
local out = {}
for v, n in pairs(counts) do
  out[#out + 1] = v
  out[#out + 1] = n
end
return out
