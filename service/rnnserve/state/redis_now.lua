-- The shared head of the write scripts: Redis's clock, as ms and as "seconds.micros".
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
