"""The deadline of the call a step belongs to, set by its transport, so that a time-out never
lies about a session step.

A transport runs each call under `TimeLimit(seconds)` (HTTP: --request-timeout-s in the
request middleware; gRPC: the least of that and the client's deadline), which is
`asyncio.timeout` plus a `CallDeadline` in a context variable. Code that changes nothing keeps
the plain behaviour: at the limit the call is cancelled and answered 504 / DEADLINE_EXCEEDED.
Code that writes takes the deadline over instead (`hold`), so it is never cut in the middle:

- a step's wait (sessions.py) withdraws the step at the deadline if it has not reached its
  commit point, the state write (then StepTimedOut: not applied, safe to retry), and
  otherwise keeps waiting and answers the real result, late;
- a session write (create, reset, delete: `writing`) finishes and is answered.

Once something was written (`release(committed=True)`), the call is not cancelled any more:
its answer must say what was written. Before that, the limit is restored when the hold ends,
if time is left. The engine imports no transport: this module is its only view of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token
from types import TracebackType


class CallDeadline:
    """One call's deadline (`when`, in the event loop's clock) and the transport's timeout
    that would cancel the call there (None: nothing cancels it, only its steps watch it)."""

    __slots__ = ("when", "limit_s", "committed", "_timeout", "_holds")

    def __init__(self, when: float, limit_s: float,
                 timeout: asyncio.Timeout | None = None) -> None:
        self.when = when
        self.limit_s = limit_s
        self.committed = False  # something of this call was written: never cancel it now
        self._timeout = timeout
        self._holds = 0

    def hold(self) -> None:
        """The caller owns the deadline from now until `release`: the transport does not
        cancel the call meanwhile (holds nest: a gateway waits for several steps at once)."""
        self._holds += 1
        if self._holds == 1:
            self._reschedule(None)

    def release(self, committed: bool) -> None:
        """End a hold; `committed`: what it guarded was written, so the call must finish and
        answer. With nothing written and time left, the transport's limit applies again."""
        self._holds -= 1
        if committed:
            self.committed = True
        if (self._holds == 0 and not self.committed
                and asyncio.get_running_loop().time() < self.when):
            self._reschedule(self.when)

    def _reschedule(self, when: float | None) -> None:
        timeout = self._timeout
        if timeout is None or timeout.expired():  # (expired: the cancel is already on its way)
            return
        try:
            timeout.reschedule(when)
        except RuntimeError:  # the call left its timeout already
            pass


_current: ContextVar[CallDeadline | None] = ContextVar("rnnserve_call_deadline", default=None)


def current() -> CallDeadline | None:
    """The deadline of the call running now; None: no limit (the WebSocket stream, tests)."""
    return _current.get()


class TimeLimit:
    """`async with TimeLimit(seconds):` is `asyncio.timeout(seconds)` (TimeoutError at the
    limit) whose deadline the steps and writes of the call can take over (see above)."""

    __slots__ = ("_seconds", "_timeout", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._timeout: asyncio.Timeout | None = None
        self._token: Token[CallDeadline | None] | None = None

    async def __aenter__(self) -> CallDeadline:
        timeout = self._timeout = asyncio.timeout(self._seconds)
        await timeout.__aenter__()
        when = timeout.when()
        assert when is not None
        deadline = CallDeadline(when, self._seconds, timeout)
        self._token = _current.set(deadline)
        return deadline

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._timeout is not None and self._token is not None
        _current.reset(self._token)
        await self._timeout.__aexit__(exc_type, exc, tb)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Around a session write of the current call (create, reset, delete): it is never cut
    in the middle by the call's time limit, and once it ran the call answers what it did."""
    deadline = _current.get()
    if deadline is None:
        yield
        return
    deadline.hold()
    try:
        yield
    finally:
        deadline.release(committed=True)
