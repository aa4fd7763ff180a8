"""The Redis store's connections: under a burst, more commands at once than its pool holds wait
for a connection instead of failing, and the connections it opens stay within the pool's cap
(against a real redis-server, and through real Redis Sentinels: its pool is another class);
and their replies are parsed by hiredis, in C."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import pytest

from tests.state.conftest import GRU, NO_REDIS_PY, MakeStore, rec
from tests.state.redis_sentinel_cluster import REDIS_SENTINEL, SentinelCluster
from tests.state.redis_server import RedisServer

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


class ResettingProxy:
    """A TCP relay to Redis that can reset (RST) every client connection at once: a Redis that
    dies with the clients' sockets open, as a killed master does, while Redis itself stays up
    behind it for the retry."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.clients: list[asyncio.StreamWriter] = []
        self.connections = 0  # accepted so far
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def reset_all(self) -> None:
        for writer in self.clients:  # closed at once with SO_LINGER 0: an RST, not a FIN
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self.clients.clear()


@pytest.mark.parametrize("how", ["command", "pipeline"])
def test_a_connection_reset_after_the_pools_check_is_retried_on_a_fresh_one(
        redis_server: RedisServer, how: str) -> None:
    """Under uvloop, the server's loop, a write to a socket Redis reset raised RuntimeError,
    a 500 (seen when a Sentinel master was killed). The pool checks a connection when it hands
    it out; here Redis resets it right after that check, and the command must still run once,
    on a fresh connection, through redis_client's one retry."""
    uvloop = pytest.importorskip("uvloop")
    from rnnserve.state.redis_client import connect

    async def scenario() -> tuple[int, int, int]:
        proxy = ResettingProxy(redis_server.port)
        client = connect(f"redis://127.0.0.1:{await proxy.start()}/0", 2.0, 5.0)
        key = f"reset-{how}"
        await client.set(key, 1)
        pool = client.connection_pool
        checked = pool.ensure_connection

        resets = []

        async def check_then_reset(connection: Any) -> None:
            await checked(connection)
            pool.ensure_connection = checked  # once
            resets.append(proxy.connections)
            proxy.reset_all()
            await asyncio.sleep(0.1)  # the loop sees the reset and closes the transport

        pool.ensure_connection = check_then_reset
        try:
            if how == "command":
                value = int(await client.incr(key))
            else:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.incr(key)
                    value = int((await pipe.execute())[0])
            return value, len(resets), proxy.connections - resets[0]
        finally:
            await client.aclose()
            assert proxy.server is not None
            proxy.server.close()

    value, resets, reconnected = uvloop.run(scenario())
    assert resets == 1 and reconnected >= 1  # the reset came after the check; a fresh one ran it
    assert value == 2  # run once: not lost, not applied twice


async def test_a_write_on_a_connection_another_task_disconnected_is_a_connection_error(
        redis_url: str) -> None:
    """The write's own step (what redis-py runs after its is-connected check, a loop turn
    later) on a connection that another task disconnected in between, as a pool-wide
    disconnect at shutdown does: a ConnectionError, which the retry answers with a fresh
    connection, not an AttributeError on the dropped writer."""
    from rnnserve.state.redis_client import connect
    from rnnserve.state.redis_closed_socket import ClosedSocketCheck

    client = connect(redis_url, 2.0, 5.0)
    checked = ClosedSocketCheck._send_packed_command
    writes: list[Any] = []

    async def counted(self: Any, command: Any) -> None:
        writes.append(command)
        await checked(self, command)

    try:
        ClosedSocketCheck._send_packed_command = counted  # type: ignore[method-assign]
        try:  # redis-py writes every command through the checked method
            assert await client.ping() and writes
        finally:
            ClosedSocketCheck._send_packed_command = checked  # type: ignore[method-assign]
        connection = await client.connection_pool.get_connection()
        await connection.disconnect()
        with pytest.raises(ConnectionResetError):
            await connection._send_packed_command([b"PING\r\n"])
        await client.connection_pool.release(connection)
        assert await client.ping()
    finally:
        await client.aclose()


def test_through_sentinels_every_pool_checks_its_sockets() -> None:
    """The master's pool and each sentinel's (where the RuntimeError was first seen, when a
    master was killed) open connections that check their socket before writing (no I/O)."""
    from rnnserve.state.redis_client import connect
    from rnnserve.state.redis_closed_socket import ClosedSocketCheck

    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/0", 1.0, 5.0)
    pools = [client.connection_pool, *(s.connection_pool
                                       for s in client.sentinels.sentinels)]  # type: ignore[attr-defined]
    assert len(pools) == 3
    assert all(issubclass(p.connection_class, ClosedSocketCheck) for p in pools)
