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
- a session write (create, reset, delete, a migration's move: `writing`) finishes and is
  answered, unless the state store has not finished it `grace_s` after the deadline (the
  lesser of LATE_WRITE_S and the limit): then the call is cut there and answered
  WriteMayBeApplied (503), rather than held to the store's own time-outs (5 s a command,
  its retry another 5, a wait for a pooled connection): with Redis stopped, creates under a
  1 s limit were answered after 10 and 20 s (tests/state/test_stalled_store_writes.py).

Once something was written (`release(committed=True)`), the call is not cancelled any more:
its answer must say what was written. Before that, the limit is restored when the hold ends,
if time is left. The engine imports no transport: this module is its only view of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Literal

from rnnserve.errors import WriteMayBeApplied

LATE_WRITE_S = 1.0
"""How long past its call's deadline a session write under way is still awaited (at most the
limit itself): a healthy store finishes one in milliseconds, so a write begun just before the
deadline is answered with what it did; a stalled one is answered by then."""

WriteKind = Literal["creation", "reset", "deletion", "move"]

AFTER_UNFINISHED: dict[WriteKind, str] = {
    "creation": "look it up or create again; a session never stepped expires after its idle "
                "timeout",
    "reset": "a reset is safe to repeat",
    "deletion": "delete it again (not found then means it is gone)",
    "move": "look the session up (its version says whether it moved) before migrating again",
}
"""What a client does about a session write of each kind that may have been applied."""


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

    @property
    def grace_s(self) -> float:
        """How long after the deadline a session write under way is still awaited."""
        return min(LATE_WRITE_S, self.limit_s)

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


@contextlib.asynccontextmanager
async def writing(kind: WriteKind, of: str) -> AsyncIterator[None]:
    """`async with` around a session write of the current call (a `kind` in AFTER_UNFINISHED,
    `of` what: "session 'x'"): it is not cut by the call's time limit, and once it ran the call
    answers what it did. A write the store has not finished `grace_s` after the deadline is cut
    there (asyncio's own timeout, at one bound for all the call's writes, however late one
    began): the call is answered WriteMayBeApplied, saying what to do about it."""
    deadline = _current.get()
    if deadline is None:
        yield
        return
    deadline.hold()
    try:
        async with asyncio.timeout_at(deadline.when + deadline.grace_s) as cut:
            yield
    except TimeoutError:
        if not cut.expired():
            raise
        raise WriteMayBeApplied(
            f"the state store had not finished the {kind} of {of} {deadline.grace_s:g} s "
            f"after the call's time limit of {deadline.limit_s:g} s ran out, so it may "
            f"have been applied: {AFTER_UNFINISHED[kind]}", retry_after_s=1) from None
    finally:
        deadline.release(committed=True)
