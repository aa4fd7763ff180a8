"""Build the state store named by `--state-store` (validated by Settings)."""

from __future__ import annotations

from rnnserve.settings import Settings
from rnnserve.state.base import SessionEvent, StateStore
from rnnserve.state.memory import MemoryStateStore


def make_store(settings: Settings, on_event: SessionEvent) -> StateStore:
    """`memory`, or else a Redis URL such as `redis://HOST:PORT/DB` (needs the redis extra)."""
    url = settings.state_store
    if url == "memory":
        return MemoryStateStore(ttl_s=settings.session_ttl_s, max_sessions=settings.max_sessions,
                                when_full=settings.when_full, on_event=on_event,
                                max_sessions_per_client=settings.max_sessions_per_client)
    from rnnserve.state.redis import RedisStateStore

    return RedisStateStore(url, ttl_s=settings.session_ttl_s,
                           max_sessions=settings.max_sessions, on_event=on_event,
                           max_sessions_per_client=settings.max_sessions_per_client,
                           wait_replicas=settings.redis_wait_replicas,
                           wait_timeout_s=settings.redis_wait_timeout_s)
