"""Build the state store named by `--state-store`."""

from __future__ import annotations

from rnnserve.settings import Settings
from rnnserve.state.base import StateStore
from rnnserve.state.memory import MemoryStateStore, SessionEvent


def make_store(settings: Settings, on_event: SessionEvent) -> StateStore:
    """`memory`, or `redis://HOST:PORT/DB` (needs the redis extra)."""
    url = settings.state_store
    if url == "memory":
        return MemoryStateStore(ttl_s=settings.session_ttl_s, max_sessions=settings.max_sessions,
                                when_full=settings.when_full, on_event=on_event)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from rnnserve.state.redis import RedisStateStore

        return RedisStateStore(url, ttl_s=settings.session_ttl_s,
                               max_sessions=settings.max_sessions, on_event=on_event)
    raise ValueError(f"--state-store {url!r}: use memory or redis://HOST:PORT/DB")
