"""uvicorn's HTTP/1.1 protocols (httptools, or h11 where httptools is missing) with three
things uvicorn does not do, passed to it as `http=` by `rnnserve serve`:

* **A time limit on the request head.** uvicorn has none: a client that trickles header lines
  keeps its connection (and a file descriptor) for as long as it likes. A timer is armed when the
  connection is made and again when a response completes (the next head of a keep-alive
  connection); if no new request head is complete when it fires, the connection is closed (with
  a 408 when a head was begun). The timer is not cancelled when a head completes: on expiry it
  sees that a new request started and does nothing. Nor is it replaced when a response
  completes: the new deadline is written beside it, and a timer that fires before that deadline
  waits again for the rest. So a busy keep-alive connection costs one timer handle per time
  limit, not one per request, and nothing per byte received.
* **A cap on open connections per client address** (`http/connections.py`): over it, the new
  connection gets a 429 and is closed.
* **A clear 400 for a body whose framing breaks** (a chunk size that is not hexadecimal, say).
  uvicorn answers such a parser error with a plain-text 400 and closes; the request's handler,
  still reading the body, then sees a disconnect. Here the answer is the contract's JSON error,
  and the request is marked (`errors.MALFORMED_BODY`) so that its handler's disconnect is
  counted as the 400 the client got, not as a client that went away.
* **A bad request after pipelined good ones waits its turn** (httptools). uvicorn writes the
  400 and closes at once, so a client that pipelined a step and then a malformed request read
  the 400 as its step's answer, although the step was applied, and the step's own answer was
  never sent. Here the requests before the malformed one are answered first, in order, then
  the 400 (JSON, for a malformed head too), then the connection closes."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

from rnnserve.http.connections import (
    ConnectionGuard,
    GuardedWebSocketProtocol,
    bound_to,
    raw_response,
)
from rnnserve.http.deadline_queue import EARLY_S
from rnnserve.http.direct_path import DirectExchanges, DirectPath
from rnnserve.http.errors import MALFORMED_BODY, MALFORMED_BODY_MESSAGE

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn without httptools
    HttpToolsProtocol = None  # type: ignore[assignment, misc]


class HeadDeadline:
    """What the two protocol classes below share: it wraps uvicorn's connection_made,
    connection_lost and on_response_complete (uvicorn's own attributes are declared here for
    the type checker)."""

    guard: ClassVar[ConnectionGuard]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any  # uvicorn's RequestResponseCycle of the latest request head; None before one
    _head_timer: asyncio.TimerHandle | None = None
    _head_deadline = 0.0  # the event loop's clock by which the next head must be complete
    _armed_at_cycle: Any = None

    # uvicorn's methods, wrapped: the mixin comes first, so super() is uvicorn's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.guard.admit(cast(asyncio.Transport, transport)):  # else the guard answered 429
            super().connection_made(transport)  # type: ignore[misc]
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]
        self.guard.release(self.transport)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._rearm_after_response()

    def _arm_head_timer(self) -> None:
        """The next head has `header_timeout_s` from now. A timer still pending stays: each
        new deadline is later than the one it was set for, so when it fires early it waits
        again for the rest. Cancelling it and making a new one after every response cost
        about 4 µs of the event loop's time per request."""
        self._armed_at_cycle = self.cycle
        self._head_deadline = self.loop.time() + self.guard.header_timeout_s
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timer_fired)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _rearm_after_response(self) -> None:
        """After a response: the client's next head has the time limit again, unless the
        connection is closing or a pipelined request already started."""
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm_head_timer()

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_deadline - self.loop.time() > EARLY_S:  # armed again since it was set
            self._head_timer = self.loop.call_at(self._head_deadline, self._head_timer_fired)
            return
        if self.cycle is not self._armed_at_cycle:
            return  # a request head completed since the timer was armed
        self.guard.head_timed_out(self.transport, self._head_begun())

    def _head_begun(self) -> bool:
        """Whether the client sent part of a request head since its last request."""
        raise NotImplementedError

    def _answer_malformed_body(self) -> bool:
        """On a parser error: if it broke the body of the request in progress, answer the
        client a JSON 400 (unless its response began), tell the handler the client is gone,
        mark the request, close, and return True. False: the error is in a request head, and
        uvicorn's answer stands."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.disconnected:
            return False
        cycle.scope[MALFORMED_BODY] = True
        if not cycle.response_started:
            self.transport.write(raw_response(400, MALFORMED_BODY_MESSAGE))
        cycle.disconnected = True  # the handler's receive() says "disconnect", its send() is
        cycle.message_event.set()  # dropped: the answer above is the one the client gets
        self.transport.close()
        return True


MALFORMED_HEAD_MESSAGE = (
    "malformed request head: the request line or a header is not valid HTTP/1.1 (a bad "
    "method or target, a header name or value with forbidden characters, a Content-Length "
    "that is no single number, or both Content-Length and Transfer-Encoding); fix the request")


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HeadDeadline, DirectExchanges, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head time limit, the per-client cap, the
        JSON 400 for a malformed body or head (after the answers to the requests before it),
        and the hot routes' direct path (http/direct_path.py) when the server sets one."""

        _last_answer: bytes | None = None  # the 400 that ends the connection, when its turn comes

        def handle_websocket_upgrade(self) -> None:
            self._disarm_head_timer()  # the WebSocket protocol takes the connection over
            super().handle_websocket_upgrade()

        def send_400_response(self, msg: str) -> None:
            if self._last_answer is not None:  # already refused: the parser stays broken
                return
            if self._after_earlier_requests():
                return
            if not self._answer_malformed_body():
                self.transport.write(raw_response(400, MALFORMED_HEAD_MESSAGE))
                self.transport.close()

        def _after_earlier_requests(self) -> bool:
            """When a request before the malformed one is still unanswered: drop the malformed
            one if it was queued, keep its 400 for after the others' answers, stop reading,
            and return True. (One whose body breaks while its own handler runs is answered
            now, by `_answer_malformed_body`: nothing before it is waiting.)"""
            cycle = self.cycle
            if cycle is None:
                return False
            queued = bool(self.pipeline) and self.pipeline[0][0] is cycle
            if queued and cycle.more_body:  # its body broke before it started: never runs
                self.pipeline.popleft()
                self._last_answer = raw_response(400, MALFORMED_BODY_MESSAGE)
            elif not cycle.more_body and not cycle.response_complete:  # a head broke
                self._last_answer = raw_response(400, MALFORMED_HEAD_MESSAGE)
            else:
                return False
            self.flow.pause_reading()
            return True

        def on_response_complete(self) -> None:
            was_last = not self.pipeline  # else uvicorn starts the next one queued, now
            super().on_response_complete()
            if was_last and self._last_answer is not None:
                self._answer_last()

        def _answer_last(self) -> None:
            answer, self._last_answer = self._last_answer, None
            if answer is not None and not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        def _head_begun(self) -> bool:
            # httptools makes a new scope when a message begins and names its method when the
            # head is complete: a scope without one is a head in progress.
            scope: Any = self.scope
            return scope is not None and "method" not in scope


class GuardedH11Protocol(HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with the same additions (used where httptools is missing)."""

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm_head_timer()
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        if not self._answer_malformed_body():
            super().send_400_response(msg)

    def _head_begun(self) -> bool:
        # h11 buffers a head until it is whole: bytes in its buffer are a head in progress.
        return bool(self.conn.trailing_data[0])


def server_protocols(guard: ConnectionGuard, *, h11: bool = False,
                     direct: DirectPath | None = None,
                     ) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The `http=` and `ws=` protocol classes for uvicorn.Config, bound to `guard`: httptools
    when installed (uvicorn's own choice), else (or with `h11`) h11. `direct`: the hot
    routes' direct path (httptools only; h11 serves every request through ASGI)."""
    if h11 or HttpToolsProtocol is None:
        return bound_to(GuardedH11Protocol, guard), bound_to(GuardedWebSocketProtocol, guard)
    return (bound_to(GuardedHttpToolsProtocol, guard, direct=direct),
            bound_to(GuardedWebSocketProtocol, guard))
