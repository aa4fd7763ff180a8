"""The Redis store's connection: how it is opened, and its errors as Unavailable (a refused
password and a full Redis, at maxmemory with noeviction, each with its own message).

A command is retried once, at once, on a fresh connection, when its pooled connection fails
with a connection error or a timeout (after a Redis restart or failover every pooled
connection is closed by the server, and the first command on each finds out only then).
That is safe for writes because every write script carries a write id of its own, stored
with what it wrote: a script resent after a lost reply whose first run landed finds its id
and answers as that run did (redis_scatter: 'landed', written once), never a conflict that
would run the step again. Reads just read again. What still fails after that one retry
surfaces as Unavailable (503, retry after 1 s): StoreUnreachable for a connection error.
A write to a socket the server closed is a connection error too (redis_closed_socket).

Connections are pooled, at most POOL_CONNECTIONS of them; a command that finds every one busy
waits for one (up to the command timeout) instead of failing. redis-py's own pool fails it at
once when its cap is reached, and the redis-py that installs today (8.1) defaults that cap to
100: 256 sequences starting at once got "Too many connections" 503s from the Redis store.
redis-py 5 defaulted it to 2**31: one connection per concurrent command, without bound, each
kept open afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, OutOfMemoryError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rnnserve.errors import StoreFull, StoreUnreachable, Unavailable
from rnnserve.redact import safe_url
from rnnserve.state.redis_closed_socket import checking_closed_sockets
from rnnserve.state.redis_sentinel import connect_sentinel
from rnnserve.state.redis_url import is_sentinel_url, parse_sentinel_url

__all__ = ["POOL_CONNECTIONS", "connect", "guard", "safe_url"]

POOL_CONNECTIONS = 256
"""Connections one server keeps to Redis at most (its step batches need one or two; bursts of
creates and reads each hold one while they run)."""


def retry_once() -> Retry:
    """Each command once more on a fresh connection after a connection error or timeout."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError, RedisTimeoutError))


def connect(url: str, connect_timeout_s: float, command_timeout_s: float) -> aioredis.Redis:
    """A client for `url` that retries a command once and waits for a pooled connection
    (see above): one Redis, or with redis+sentinel:// whichever node the sentinels name master
    now (redis_sentinel)."""
    options: dict[str, Any] = {
        "max_connections": POOL_CONNECTIONS, "timeout": command_timeout_s,  # waiting for one
        "socket_connect_timeout": connect_timeout_s, "socket_timeout": command_timeout_s,
        "retry": retry_once(), "health_check_interval": 10, "decode_responses": False,
    }
    if is_sentinel_url(url):
        return connect_sentinel(parse_sentinel_url(url), options)
    pool = aioredis.BlockingConnectionPool.from_url(url, **options)
    checking_closed_sockets(pool)
    return aioredis.Redis.from_pool(pool)


FULL_ADVICE = ("Redis reached its maxmemory and refuses writes (maxmemory-policy noeviction "
               "keeps every session instead of evicting one); sessions can still be read and "
               "deleted: delete sessions you no longer need, wait for idle ones to expire, or "
               "raise Redis's maxmemory (docs/deploy.md, Redis: password, memory, sizing)")
"""Why a write was refused and what frees room: what the client and the operator read."""


def _unavailable(where: str, exc: RedisError) -> NoReturn:
    if isinstance(exc, AuthenticationError):  # wrong, missing or unexpected password
        raise StoreUnreachable(f"the state store (Redis at {where}) refused the connection's "
                               f"credentials ({exc}): put Redis's password in the store URL, "
                               "redis://:PASSWORD@HOST:PORT/DB", retry_after_s=1) from exc
    if isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM "):
        raise StoreFull(f"the state store (Redis at {where}) is full: {FULL_ADVICE}",
                        retry_after_s=5) from exc
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        raise StoreUnreachable(f"the state store (Redis at {where}) is unreachable: "
                               f"{exc}", retry_after_s=1) from exc
    raise Unavailable(f"the state store (Redis at {where}) failed: {exc}",
                      retry_after_s=1) from exc


@contextlib.asynccontextmanager
async def guard(where: str) -> AsyncIterator[None]:
    """Redis errors become Unavailable here: nothing of redis-py leaks past the store.
    `where` is the store's safe_url, for the message."""
    try:
        yield
    except RedisError as exc:
        _unavailable(where, exc)
    except OSError as exc:  # a socket error redis-py did not wrap
        raise StoreUnreachable(f"the state store (Redis at {where}) is unreachable: "
                               f"{exc}", retry_after_s=1) from exc
