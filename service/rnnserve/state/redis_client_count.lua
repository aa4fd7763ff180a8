-- KEYS: client set. ARGV: client address, session prefix.
-- -> live sessions counted against that address (ids past their expiry looked up first)
prune_client(KEYS[1], ARGV[1], ARGV[2], -1)
return redis.call('ZCARD', KEYS[1])
