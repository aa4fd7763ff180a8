-- Shared by the scripts that count or prune a model version's live ids (redis_create.py):
-- prune_version(key, model, version, session_prefix, limit): the version's sorted set
-- (rnnserve:vlive:{model}/{version}) scores each id with a lower bound of its expiry (its
-- create's; steps and resets extend the hash's TTL without touching the set). An id whose
-- score passed is looked up: its hash still alive and of this model version gets its real
-- expiry (now + PTTL) as its score; any other (expired, deleted, replaced by a session of
-- another version) leaves the set. `limit` (0: all) bounds the ids looked at. Returns how
-- many ids the set holds after it: the version's live sessions once nothing is left to look
-- at, whether or not any replica ran a sweep while they expired.
local function prune_version(key, model, version, session_prefix, limit)
  local stale
  if limit > 0 then
    stale = redis.call('ZRANGEBYSCORE', key, '-inf', now_ms, 'LIMIT', 0, limit)
  else
    stale = redis.call('ZRANGEBYSCORE', key, '-inf', now_ms)
  end
  for _, id in ipairs(stale) do
    local hash = session_prefix .. id
    local pttl = redis.call('PTTL', hash)
    local mv = redis.call('HMGET', hash, 'model', 'version')
    if pttl > 0 and mv[1] == model and mv[2] == version then
      redis.call('ZADD', key, now_ms + pttl, id)
    else
      redis.call('ZREM', key, id)
    end
  end
  return redis.call('ZCARD', key)
end
