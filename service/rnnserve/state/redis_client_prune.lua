-- The shared head of the scripts that count a client address's live sessions (after
-- redis_now.lua). A client set (rnnserve:client:{address}) scores each id with an expiry
-- as of its create; steps do not refresh it. So an id whose score has passed is looked up:
-- re-scored from its hash's TTL if the session lives on and is still this address's, else
-- dropped. Returns how many ids it looked up (at most `limit`; -1: all that are due).
local function prune_client(z, client, session_prefix, limit)
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local h = session_prefix .. id
    local pttl = redis.call('PTTL', h)
    if pttl > 0 and redis.call('HGET', h, 'client') == client then
      redis.call('ZADD', z, now_ms + pttl, id)
    else
      redis.call('ZREM', z, id)
    end
  end
  return #ids
end
