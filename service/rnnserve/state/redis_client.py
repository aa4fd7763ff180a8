"""The Redis store's connection: how it is opened, and its errors as Unavailable (a refused
password and a full Redis, at maxmemory with noeviction, each with its own message).

Delivery is at-least-once: redis-py is told not to retry, because a scatter whose reply was
lost may have been applied; a retried one would then fail its gen check and the step would
run twice. A connection error surfaces as Unavailable (503, retry after 1 s) instead."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import NoReturn

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, OutOfMemoryError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rnnserve.errors import StoreFull, StoreUnreachable, Unavailable
from rnnserve.redact import safe_url

__all__ = ["connect", "guard", "safe_url"]


def connect(url: str, connect_timeout_s: float, command_timeout_s: float) -> aioredis.Redis:
    """A client for `url` that never retries a command (see above)."""
    return aioredis.from_url(
        url, decode_responses=False, socket_connect_timeout=connect_timeout_s,
        socket_timeout=command_timeout_s, retry=Retry(NoBackoff(), 0),
        health_check_interval=10,
    )


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
