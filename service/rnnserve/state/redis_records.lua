-- Shared by the scripts that read or write a session's state (see redis_records.py):
-- too_new(fmt, newest): whether a record's `fmt` field names a format this release does not
-- read (absent: format 1; not a number: unknown, so too new).
-- put_state(hash, state_key, fmt, was, whole, ttl_ms, tensor_fields, args): stores a state
-- in record format `fmt` ('1' or '2') over a record of format `was` ('1', '2', or 'new' for
-- a hash just made). Format 2: `whole` goes to the state key, with the hash's TTL, and the
-- format 1 `tensor_fields` go; format 1: the caller's `args` (its HSET) carry those fields,
-- and the `fmt` field and the state key go. `fmt` itself is added to `args` where it changes.
local function too_new(fmt, newest)
  return (tonumber(fmt or '1') or newest + 1) > newest
end

local function put_state(hash, state_key, fmt, was, whole, ttl_ms, tensor_fields, args)
  if fmt == '2' then
    redis.call('SET', state_key, whole, 'PX', ttl_ms)
    if was ~= '2' then
      if was == '1' and #tensor_fields > 0 then redis.call('HDEL', hash, unpack(tensor_fields)) end
      args[#args + 1] = 'fmt'
      args[#args + 1] = fmt
    end
  elseif was ~= '1' then
    redis.call('HDEL', hash, 'fmt')
    redis.call('DEL', state_key)
  end
end
