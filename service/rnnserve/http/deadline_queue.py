"""Time limits of one length for many requests, kept with one event-loop timer.

The sequence lane (http/sequence_lane.py) answers each step from its batch's callback, with no
task per request; its time limit was one timer per request, armed and then cancelled. With
uvloop that pair costs about 2.5 µs of the event loop's time in a tight loop, and several
times that amid the rest of a request's work. All the lane's limits have one length
(--request-timeout-s), so they end in the order they began: a queue in arrival order needs
one timer, for its oldest unanswered entry. Answered entries leave from the front as new
ones arrive, so the queue holds about the requests in flight (more only while an old one
stays unanswered: what arrived behind it since)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

EARLY_S = 0.002
"""A timer that fires this close to its deadline counts as on time (event loop timers keep
whole milliseconds)."""


class Limited(Protocol):
    """A request under a time limit."""

    answered: bool

    def at_limit(self) -> None:
        """Its time is up (called once, and only if it is not answered yet)."""


class DeadlineQueue:
    """The time limits of requests of one loop, each `seconds` long from when it is added."""

    __slots__ = ("_loop", "_seconds", "_queue", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._queue: deque[tuple[float, Limited]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, request: Limited) -> None:
        """Start `request`'s time limit now."""
        queue = self._queue
        while queue and queue[0][1].answered:
            queue.popleft()
        deadline = self._loop.time() + self._seconds
        queue.append((deadline, request))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fired)

    def _fired(self) -> None:
        self._timer = None
        queue, now = self._queue, self._loop.time()
        while queue:
            deadline, request = queue[0]
            if request.answered:
                queue.popleft()
            elif deadline - now > EARLY_S:  # the oldest unanswered one's turn comes later
                self._timer = self._loop.call_at(deadline, self._fired)
                return
            else:
                queue.popleft()
                request.at_limit()
