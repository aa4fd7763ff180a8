-- Shared by the scripts that read or write a session's replay window (see redis_history.py):
-- the steps before the latest one that carried step ids, newest first, in a list key of its
-- own (rnnserve:h:{id}); the latest stays in the hash's last_id and last_out, as ever, so a
-- replica of an older release still replays it. Each element is
-- "{steps after it} {length of the id} {id}{outputs bytes}".
-- history_find(key, step_id) -> steps, outputs | nil: the step if the window holds it.
-- history_push(key, step_id, steps, outputs, keep, ttl_ms): the hash's former latest step
-- goes to the window's head; the window keeps `keep` elements and the hash's TTL.
-- history_head(key) -> the newest step id in the window, or nil.
local function history_split(element)
  local steps, size, at = string.match(element, '^(%d+) (%d+) ()')
  if not steps then return nil end
  size = tonumber(size)
  return string.sub(element, at, at + size - 1), steps, string.sub(element, at + size)
end

local function history_find(key, step_id)
  for _, element in ipairs(redis.call('LRANGE', key, 0, -1)) do
    local id, steps, outputs = history_split(element)
    if id == step_id then return steps, outputs end
  end
  return nil
end

local function history_push(key, step_id, steps, outputs, keep, ttl_ms)
  if keep < 1 then return end
  redis.call('LPUSH', key, steps .. ' ' .. #step_id .. ' ' .. step_id .. outputs)
  redis.call('LTRIM', key, 0, keep - 1)
  redis.call('PEXPIRE', key, ttl_ms)
end

local function history_head(key)
  local element = redis.call('LINDEX', key, 0)
  if not element then return nil end
  return (history_split(element))
end
