"""Which connection of this process holds each session: the latest attach wins.

A device whose connection went half-open reconnects, maybe to another replica, and attaches
to its session again; the old connection must stop stepping it and be told so. The store
numbers attaches (StateStore.attach: holder 1, 2, ...; a session's creator holds 0) and
fences steps by that number; this registry only finds the local connection that lost its
session, when this process or (through the store's watch) another replica attaches, and calls
that connection's `let_go` once, from the event loop."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("rnnserve.sessions")

LetGo = Callable[[], None]


class Attachments:
    """Session id -> (holder, let_go) of the connection of this process that holds it."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, LetGo]] = {}

    def hold(self, session_id: str, holder: int, let_go: LetGo) -> Callable[[], None]:
        """Record that a connection holds `session_id` as `holder`; an older local holder lets
        go now (the store's event may come later or, within one process, first). Returns the
        release to call when the connection ends."""
        current = self._held.get(session_id)
        if current is not None and current[0] > holder:  # a newer attach got here first
            _call(let_go, session_id)
            return lambda: None
        self._held[session_id] = (holder, let_go)
        if current is not None and current[0] < holder:
            _call(current[1], session_id)

        def release() -> None:
            if self._held.get(session_id, (None, None))[1] is let_go:
                del self._held[session_id]

        return release

    def attached(self, session_id: str, holder: int) -> None:
        """The store's AttachEvent: a connection (here or on another replica) now holds the
        session as `holder`; an older local holder lets go."""
        current = self._held.get(session_id)
        if current is not None and current[0] < holder:
            del self._held[session_id]
            _call(current[1], session_id)

    def __len__(self) -> int:
        return len(self._held)


def _call(let_go: LetGo, session_id: str) -> None:
    try:
        let_go()
    except Exception:  # one connection's failure never stops the registry
        log.exception("letting go of session %s failed", session_id)
