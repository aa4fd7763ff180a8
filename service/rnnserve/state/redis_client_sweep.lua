-- KEYS: clients index. ARGV: client prefix, session prefix, limit.
-- Looks up the ids past their expiry in the client sets that are due (their earliest score
-- has passed), at most `limit` ids in all; forgets addresses with no live session left, so
-- the sets of clients that never come back do not stay. -> addresses looked at
local budget = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, budget)
for _, client in ipairs(due) do
  if budget <= 0 then break end
  local z = ARGV[1] .. client
  budget = budget - 1 - prune_client(z, client, ARGV[2], budget)
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', KEYS[1], first[2], client)
  else
    redis.call('ZREM', KEYS[1], client)
  end
end
return #due
