-- KEYS: models set, the set of versions with a live zset of their own. ARGV: live prefix,
-- session prefix, marker prefix, limit, version zsets' prefix.
-- Drops ids whose expiry passed from each live zset (re-scoring any whose hash is in fact
-- still alive), and forgets models with no live session left; then the same for each
-- version's zset (prune_version, redis_vlive.lua: it reports no events, the model's do).
-- -> {{model, live count, ...}, {model, steps of an expired session, ...}}
local counts, ended = {}, {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local z = ARGV[1] .. m
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[4]))
  for _, id in ipairs(ids) do
    local h = ARGV[2] .. id
    local pttl = redis.call('PTTL', h)
    if pttl > 0 and redis.call('HGET', h, 'model') == m then
      redis.call('ZADD', z, now_ms + pttl, id)
    else
      redis.call('ZREM', z, id)
      local mark = redis.call('GET', ARGV[3] .. id)
      local steps = '0'
      if mark then steps = string.match(mark, '^%S+ (%S+) ') or '0' end
      ended[#ended + 1] = m
      ended[#ended + 1] = steps
    end
  end
  local n = redis.call('ZCARD', z)
  if n == 0 then
    redis.call('SREM', KEYS[1], m)
  else
    counts[#counts + 1] = m
    counts[#counts + 1] = tostring(n)
  end
end
for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local model, version = string.match(member, '^(.*)/(%d+)$')
  if not model or prune_version(ARGV[5] .. member, model, version, ARGV[2],
                                tonumber(ARGV[4])) == 0 then
    redis.call('SREM', KEYS[2], member)
  end
end
return {counts, ended}
