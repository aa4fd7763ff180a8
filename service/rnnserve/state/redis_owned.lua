-- KEYS: owner zset. -> live sessions of that owner (expired ids pruned first)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZCARD', KEYS[1])
