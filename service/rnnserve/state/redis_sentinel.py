"""A client for the master that Sentinel names now, for `--state-store redis+sentinel://`.

redis-py's Sentinel pool asks the sentinels for the master's address each time it opens a
connection, and drops idle connections to an address that is no longer the master; a
connection to a demoted master that answers READONLY is closed and reported as a connection
error. So after a failover the store's next connections, its pub/sub listener's included,
reach the promoted replica, while a command that was in flight on the dead master fails
unless redis_client's one retry on a fresh connection (safe: every write carries a write id,
see its docstring) reaches the new master; otherwise Unavailable, 503, and the client retries
with the same step_id. The command options, that retry included, are redis_client.connect's.

The sentinels are asked with the same timeouts and no retry: the pool tries each sentinel
in turn anyway, and a connect to a master that is not there yet fails at once and is
answered 503 rather than held."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from rnnserve.state.redis_closed_socket import checking_closed_sockets
from rnnserve.state.redis_url import SentinelTarget


class SentinelMaster(aioredis.Redis):
    """The master's client, which also closes its sentinels' connections when closed
    (redis-py leaves those to the Sentinel object, which nothing else holds)."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


class WaitingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master's connections, at most `max_connections`: a command that finds every one
    busy waits for one (up to `timeout`) instead of failing, as with one Redis
    (redis_client.POOL_CONNECTIONS). The Sentinel pool finds the master's address; the blocking
    pool hands out its connections."""


class _Sentinels(Sentinel):
    """redis-py's Sentinel, whose "no master" error says where it asked in a short line
    (its own holds the repr of every sentinel's client and connection options)."""

    _addresses: tuple[tuple[str, int], ...] = ()

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError as exc:
            asked = ",".join(f"{h}:{p}" for h, p in self._addresses)
            raise MasterNotFoundError(
                f"no sentinel of {asked} names a master {service_name!r} that is up (none "
                f"answered, none monitors that name, or a failover is under way)") from exc


def connect_sentinel(target: SentinelTarget, options: dict[str, Any]) -> aioredis.Redis:
    """A client of `target`'s master, found through its sentinels (no I/O until used).
    `options` are the master's pool and connection options (redis_client.connect: its
    timeouts, retry and connection cap, a command waiting for a free connection here too, in
    WaitingSentinelPool); the sentinels are asked with the same timeouts and no retry."""
    asked: dict[str, Any] = {"socket_connect_timeout": options["socket_connect_timeout"],
                             "socket_timeout": options["socket_timeout"],
                             "retry": Retry(NoBackoff(), 0)}
    sentinel = _Sentinels(list(target.sentinels), sentinel_kwargs=asked)  # type: ignore[no-untyped-call]
    sentinel._addresses = target.sentinels
    client = sentinel.master_for(
        target.master_name, redis_class=SentinelMaster,
        connection_pool_class=WaitingSentinelPool, db=target.db,
        username=target.username, password=target.password, **options,
    )
    assert isinstance(client, SentinelMaster)
    client.sentinels = sentinel
    for pool in (client.connection_pool, *(s.connection_pool for s in sentinel.sentinels)):
        checking_closed_sockets(pool)
    return client
