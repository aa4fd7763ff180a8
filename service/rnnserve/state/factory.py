"""Build the state store named by `--state-store` (validated by Settings)."""

from __future__ import annotations

from typing import Any

from rnnserve.settings import Settings
from rnnserve.state.base import SessionEvent, StateStore
from rnnserve.state.memory import MemoryStateStore


def store_details(settings: Settings) -> dict[str, Any]:
    """What /v1/models says of the store besides its health: for Redis, the record format
    this replica writes and the ones it reads, so an operator can see a format switch roll
    out replica by replica."""
    if settings.state_store == "memory":
        return {}
    from rnnserve.state.redis_records import NEWEST

    return {"record_format": {"writes": settings.redis_record_format,
                              "reads": list(range(1, NEWEST + 1))}}


def make_store(settings: Settings, on_event: SessionEvent) -> StateStore:
    """`memory`, or else a Redis URL such as `redis://HOST:PORT/DB` (needs the redis extra)."""
    url = settings.state_store
    history = settings.replay_window()
    if url == "memory":
        return MemoryStateStore(ttl_s=settings.session_ttl_s, max_sessions=settings.max_sessions,
                                when_full=settings.when_full, on_event=on_event,
                                max_sessions_per_client=settings.max_sessions_per_client,
                                step_history=history)
    from rnnserve.state.redis import RedisStateStore

    return RedisStateStore(url, ttl_s=settings.session_ttl_s,
                           max_sessions=settings.max_sessions, on_event=on_event,
                           max_sessions_per_client=settings.max_sessions_per_client,
                           wait_replicas=settings.redis_wait_replicas,
                           wait_timeout_s=settings.redis_wait_timeout_s,
                           record_format=settings.redis_record_format,
                           step_history=history)
