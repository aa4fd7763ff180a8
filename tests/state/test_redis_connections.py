"""The Redis store's connections: under a burst, more commands at once than its pool holds wait
for a connection instead of failing, and the connections it opens stay within the pool's cap
(against a real redis-server, and through real Redis Sentinels: its pool is another class);
and their replies are parsed by hiredis, in C."""

from __future__ import annotations

import asyncio

import pytest

from tests.state.conftest import GRU, NO_REDIS_PY, MakeStore, rec
from tests.state.redis_sentinel_cluster import REDIS_SENTINEL, SentinelCluster

redis = pytest.importorskip("redis", reason=NO_REDIS_PY)

from rnnserve.state.redis_client import POOL_CONNECTIONS  # noqa: E402

BURST = 3 * POOL_CONNECTIONS  # creates started at once, each a command of its own


def connections_to(url: str, password: str | None = None) -> int:
    """Clients connected to the Redis at `url` now, this probe's own connection excepted."""
    client = redis.Redis.from_url(url, password=password)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


async def create_burst(make_store: MakeStore, url: str | None = None) -> list[BaseException]:
    store = await make_store(max_sessions=2 * BURST, url=url)
    results = await asyncio.gather(
        *(store.create(GRU, rec(f"burst-{i}", GRU), None) for i in range(BURST)),
        return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


async def test_a_burst_beyond_the_pool_waits_for_connections(make_redis: MakeStore,
                                                             redis_url: str) -> None:
    before = connections_to(redis_url)
    assert await create_burst(make_redis) == []
    # every create holds a connection while it runs: without a cap, one each (768); the pool's
    # cap, and the store's attach listener on a connection of its own at most
    assert 1 <= connections_to(redis_url) - before <= POOL_CONNECTIONS + 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard("rnnserve:live:gru") == BURST
    finally:
        client.close()


@pytest.mark.skipif(REDIS_SENTINEL is None,
                    reason="redis-sentinel is not installed (apt-get install redis-sentinel)")
async def test_through_sentinels_a_burst_waits_for_connections_too(
        make_redis: MakeStore, cluster: SentinelCluster) -> None:
    master = f"redis://127.0.0.1:{cluster.master.port}/0"
    before = connections_to(master, cluster.password)  # the replicas' and the sentinels'
    assert await create_burst(make_redis, cluster.url) == []
    assert 1 <= connections_to(master, cluster.password) - before <= POOL_CONNECTIONS + 1


async def test_replies_are_parsed_by_hiredis(make_redis: MakeStore) -> None:
    """The `redis` extra installs hiredis: redis-py's pure-Python reply parser cost a KServe v2
    step on Redis about a fifth of its server CPU (bench.v2_replicas: 0.93-1.07 ms a step
    without, 0.74-0.87 with)."""
    from redis._parsers import _AsyncHiredisParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE, "hiredis is not installed: pip install -e '.[redis]'"
    store = await make_redis()
    await store.create(GRU, rec("parsed", GRU), None)
    pool = store._client.connection_pool  # type: ignore[attr-defined]
    connections = [*pool._available_connections, *pool._in_use_connections]
    assert connections and all(isinstance(c._parser, _AsyncHiredisParser) for c in connections)
