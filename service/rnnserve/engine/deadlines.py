"""The deadline of the call a step belongs to, set by its transport, so that a time-out never
lies about a session step.

A transport runs each call under `TimeLimit(seconds)` (HTTP: --request-timeout-s in the
request middleware; gRPC: the least of that and the client's deadline), which behaves as
`asyncio.timeout` and puts a `CallDeadline` in a context variable. Code that changes nothing keeps
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
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from types import TracebackType


class CallDeadline:
    """One call's deadline (`when`, in the event loop's clock) and the one timer that acts
    there: it tells the call's watchers (a waiting step withdraws itself), then cancels the
    call unless something holds the deadline or was written. A request costs one timer
    handle for its time limit and every step it waits for, not one each: the timer is never
    moved, it only looks, when it fires, at what holds it."""

    __slots__ = ("when", "limit_s", "committed", "_holds", "_watchers", "_cancel")

    def __init__(self, when: float, limit_s: float,
                 cancel: Callable[[], None] | None = None) -> None:
        self.when = when
        self.limit_s = limit_s
        self.committed = False  # something of this call was written: never cancel it now
        self._holds = 0
        self._watchers: dict[int, Callable[[], None]] = {}
        self._cancel = cancel  # None: nothing cancels the call, only its steps watch it

    def hold(self) -> None:
        """The caller owns the deadline from now until `release`: the call is not cancelled
        meanwhile (holds nest: a gateway waits for several steps at once)."""
        self._holds += 1

    def release(self, committed: bool) -> None:
        """End a hold; `committed`: what it guarded was written, so the call must finish and
        answer. With nothing written, a deadline still ahead cancels the call when it comes;
        one that passed while held does not any more (the holder answered for it)."""
        self._holds -= 1
        if committed:
            self.committed = True

    def watch(self, at_deadline: Callable[[], None]) -> int:
        """Call `at_deadline` when the deadline comes (unless `unwatch`ed before); a token."""
        token = id(at_deadline)
        self._watchers[token] = at_deadline
        return token

    def unwatch(self, token: int) -> None:
        self._watchers.pop(token, None)

    def expire(self) -> None:
        """The deadline came (the timer's callback): watchers first, then the call's cancel
        when nothing holds it and nothing was written."""
        watchers, self._watchers = self._watchers, {}
        for at_deadline in watchers.values():
            at_deadline()
        if self._cancel is not None and self._holds == 0 and not self.committed:
            self._cancel()


_current: ContextVar[CallDeadline | None] = ContextVar("rnnserve_call_deadline", default=None)


def current() -> CallDeadline | None:
    """The deadline of the call running now; None: no limit (the WebSocket stream, tests)."""
    return _current.get()


class TimeLimit:
    """`async with TimeLimit(seconds):` (or plain `with`) is `asyncio.timeout(seconds)`
    (TimeoutError at the limit) whose deadline the steps and writes of the call can take
    over (see above). Like asyncio.timeout it cancels the task it runs in and turns that
    cancellation, and only that one, into TimeoutError on the way out; unlike it, its one
    timer also serves the call's steps (CallDeadline)."""

    __slots__ = ("_seconds", "_task", "_cancelling", "_cancelled", "_timer", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._cancelled = False  # this limit cancelled the task
        self._timer: asyncio.TimerHandle | None = None
        self._token: Token[CallDeadline | None] | None = None

    def __enter__(self) -> CallDeadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("TimeLimit must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        deadline = CallDeadline(loop.time() + self._seconds, self._seconds, self._cancel_task)
        self._timer = loop.call_at(deadline.when, deadline.expire)
        self._token = _current.set(deadline)
        return deadline

    def _cancel_task(self) -> None:
        assert self._task is not None
        self._cancelled = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._timer is not None and self._token is not None and self._task is not None
        self._timer.cancel()
        _current.reset(self._token)
        if (self._cancelled and self._task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError):
            raise TimeoutError from exc

    async def __aenter__(self) -> CallDeadline:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


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
