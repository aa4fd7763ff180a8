"""The direct path: the hot POST routes (http/hot_routes.py) answered from uvicorn's HTTP
protocol, without the ASGI machinery between the protocol and the route.

Measured on a KServe v2 sequence step, the machinery around the route (uvicorn's request
cycle with its ASGI send and receive, five middleware layers each wrapping send, Starlette
writing a response as messages) cost more server CPU than the route and the step together.
The direct path does what those layers do by calling their rules, not by passing through
them: `RequestContext.run` (request id, span, time limit, metrics, log line),
`AuthAndRateLimit.refusal` (API keys, rate limit) and `HotRoutes.respond` (the route function
and the application's error handlers). Its instances are the application's own (found in its
built middleware stack), so rate-limit buckets and metric children are shared, not copied.

A POST that arrives whole in one read of an idle connection is read by the protocol's own
parser (http/whole_reads.py), without uvicorn's per-request objects; the rest of the hot
requests are parsed by uvicorn and answered here alike.

A hot request takes the ASGI path instead, unchanged, when any rule it needs is not one of
those: CORS is on and it carries an Origin header; it carries X-Forwarded-* headers (uvicorn's
proxy-headers layer would rewrite its client); its body is not framed by a Content-Length
within --max-body-bytes (413 and chunked bodies are the size-limit layer's) or it asks
`Expect: 100-continue`; or its body did not end in the read that completed its head (a body
still arriving is read under the ASGI path's time limit)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Message, Scope

from rnnserve.http.auth import AuthAndRateLimit
from rnnserve.http.deadline_queue import EARLY_S
from rnnserve.http.errors import error_message
from rnnserve.http.hot_routes import Handler, HotRoutes
from rnnserve.http.limits import BodySizeLimit
from rnnserve.http.repeat_steps import Repeat
from rnnserve.http.request_context import Exchange, RequestContext
from rnnserve.http.responses import Answer, written
from rnnserve.http.sequence_lane import V2_INFER, Miss, Remembered, SequenceLane
from rnnserve.http.whole_reads import WholeReader, WholeRequest

log = logging.getLogger("rnnserve.http")

Found = tuple[str, Handler, dict[str, str]]

NOT_WHOLE_MAX = 3
"""POST reads in a row that a connection's own reader leaves to uvicorn before it stops
trying (http/whole_reads.py)."""


class _Layers:
    """The application's own middleware instances whose rules the direct path calls."""

    def __init__(self, stack: Any, app: FastAPI) -> None:
        found: dict[type, Any] = {}
        layer = stack
        while layer is not None and not isinstance(layer, HotRoutes):
            found[type(layer)] = layer
            layer = getattr(layer, "app", None)
        if layer is None or RequestContext not in found or AuthAndRateLimit not in found \
                or BodySizeLimit not in found:
            raise RuntimeError("the application's middleware stack is not the one "
                               "http/app.py builds: the direct path cannot serve it")
        self.hot: HotRoutes = layer
        self.context: RequestContext = found[RequestContext]
        self.auth: AuthAndRateLimit = found[AuthAndRateLimit]
        self.max_body = int(found[BodySizeLimit].max_bytes)
        self.cors = CORSMiddleware in found
        self.counted = self.context.metrics.direct_requests
        self.lane_counted = self.context.metrics.sequence_lane
        self.lane = SequenceLane(app.state.engine, app.state.v2, self)


class DirectPath:
    """Which requests the protocol may answer directly, and their answers."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._layers: _Layers | None = None

    def layers(self) -> _Layers:
        """Found on first use: Starlette builds the middleware stack at the first event (the
        lifespan's), and the direct path then uses that very stack."""
        if self._layers is None:
            if self.app.middleware_stack is None:
                self.app.middleware_stack = self.app.build_middleware_stack()
            self._layers = _Layers(self.app.middleware_stack, self.app)
        return self._layers

    def takes(self, scope: Scope) -> Found | None:
        """The hot route of a request whose every rule the direct path applies, else None
        (the module's docstring says which go the ASGI path)."""
        if scope["method"] != "POST":
            return None
        layers = self.layers()
        found = layers.hot.match(scope["path"])
        if found is None:
            return None
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":  # (bytes.isdigit is ASCII only; the parser refused
                length = int(value) if value.isdigit() else -1  # a length past 64 bits)
            elif (name == b"transfer-encoding" or name.startswith(b"x-forwarded-")
                  or (name == b"origin" and layers.cors)):
                return None
        return found if 0 <= length <= layers.max_body else None

    async def answer(self, scope: Scope, body: bytes, found: Found) -> Answer:
        """Status, headers (with the request id) and body of a hot request taken directly."""
        layers = self.layers()
        layers.counted.inc()
        scope["app"] = self.app  # as the application's own __call__ sets it
        exchange = Exchange(layers.context.request_id(scope))
        reply: list[Answer] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        def refused(status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
            exchange.status = status
            head, payload = error_message(message, headers)
            reply.append((status, head, payload))

        async def respond() -> None:
            refusal = layers.auth.refusal(scope)
            if refusal is not None:
                refused(*refusal)
                return
            response = await layers.hot.respond(scope, receive, found, body)
            exchange.status = response.status_code
            reply.append(await written(response, scope, receive))

        async def timed_out(message: str) -> None:
            refused(504, message, [])

        await layers.context.run(scope, exchange, respond, timed_out)
        status, headers, payload = reply[-1]
        headers.append((b"x-request-id", exchange.rid.encode()))
        return status, headers, payload


class DirectExchanges:
    """Mixed into uvicorn's httptools protocol (http/http_protocols.py): takes the requests
    `direct` takes, answers them in one task, and writes each answer in one write. Everything
    else (and every request when `direct` is None) is uvicorn's ASGI cycle, unchanged."""

    direct: ClassVar[DirectPath | None] = None
    # uvicorn's attributes, declared for the type checker
    app: Any
    cycle: Any
    loop: asyncio.AbstractEventLoop
    tasks: set[asyncio.Task[None]]
    transport: asyncio.Transport
    pipeline: Any
    limit_concurrency: int | None
    connections: set[Any]
    flow: Any
    server_state: Any
    timeout_keep_alive: Any
    on_response_complete: Any
    _unset_keepalive_if_required: Any
    _rearm_after_response: Any  # (http_protocols.HeadDeadline's)
    _feeding = False
    _waiting: Any = None  # a cycle taken directly whose body is still being parsed
    _sequences: dict[str, Remembered] | None = None  # made at the first v2 sequence step
    _in_message = False  # uvicorn's parser is inside a request (begun, not ended)
    _reader: WholeReader | None = None  # made at the first POST (http/whole_reads.py)
    _not_whole: int | None = 0  # POST reads in a row left to uvicorn (None: reader stopped)
    _idle_timer: asyncio.TimerHandle | None = None
    _idle_deadline = 0.0  # when an idle connection is closed (0: not idle)
    repeat: Repeat | None = None  # the latest lane step read whole (http/repeat_steps.py)

    def data_received(self, data: bytes) -> None:
        self._idle_deadline = 0.0  # not idle: see _keep_alive
        if (data[:5] == b"POST " and self._not_whole is not None and self.direct is not None
                and not self._in_message
                and (self.cycle is None or self.cycle.response_complete)
                and not self.pipeline and (self._take_repeat(data) or self._read_whole(data))):
            return
        self._feeding = True
        try:
            super().data_received(data)  # type: ignore[misc]
        finally:
            self._feeding = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:  # the rest of its body comes in a later read: ASGI's
            super()._start_asgi_task(waiting, self.app)  # type: ignore[misc]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        found = (self.direct.takes(cycle.scope)
                 if self.direct is not None and app is self.app
                 and not cycle.waiting_for_100_continue else None)
        if found is not None and not cycle.more_body:
            self._start_direct(cycle, found)
        elif found is not None and self._feeding:
            cycle.direct_found = found
            self._waiting = cycle
        else:
            super()._start_asgi_task(cycle, app)  # type: ignore[misc]

    def _read_whole(self, data: bytes) -> bool:
        """Take a plain POST to a hot route that `data` holds whole, on an idle connection
        (http/whole_reads.py); False: `data` is uvicorn's to parse, as it came. After
        NOT_WHOLE_MAX such reads in a row the connection stops trying (a client that sends
        each body apart from its head would pay a second parse on every request)."""
        assert self.direct is not None
        if self._reader is None:
            self._reader = WholeReader()
        request = self._reader.read(data, self, self._answered_whole)
        found = None if request is None else self.direct.takes(request.scope)
        if request is None or found is None or self._over_limit():
            missed = (self._not_whole or 0) + 1
            self._not_whole = None if missed >= NOT_WHOLE_MAX else missed
            return False
        self._stands(request)
        self._start_direct(request, found)
        return True

    def _take_repeat(self, data: bytes) -> bool:
        """Take a read that is the connection's repeat with new input values
        (http/repeat_steps.py), without parsing it; False: `data` was not that."""
        repeat = self.repeat
        if repeat is None or not repeat.matches(data) or self._over_limit():
            return False
        request = repeat.request(data, self, self._answered_whole)
        self._stands(request)
        assert self.direct is not None
        if not self.direct.layers().lane.take_repeat(self, repeat, request):
            self.repeat = None  # (its sequence or the server changed: taken as any request)
            self._start_direct(request, repeat.found)
        return True

    def _over_limit(self) -> bool:
        """Over uvicorn's concurrency limit: its 503 is uvicorn's to send."""
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit
                                      or len(self.tasks) >= limit)

    def _stands(self, request: WholeRequest) -> None:
        """A request read whole stands where uvicorn's cycle stands: later requests on the
        connection queue behind it."""
        self._not_whole = 0
        self._unset_keepalive_if_required()
        self.cycle = request

    def _answered_whole(self) -> None:
        """uvicorn's on_response_complete, for a request read whole (http/whole_reads.py),
        with its keep-alive timer kept as the head timer is: one per connection, not one
        per request (see _keep_alive). With requests queued behind it, or a last answer
        to write, the protocol's own."""
        if self.pipeline or getattr(self, "_last_answer", None) is not None:
            self.on_response_complete()
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        self._keep_alive()
        self._rearm_after_response()

    def _keep_alive(self) -> None:
        """An idle connection is closed after uvicorn's keep-alive time (--timeout-keep-alive,
        5 s) unless a read comes first. A timer still pending stays and, firing early,
        waits again for the rest."""
        self._idle_deadline = self.loop.time() + self.timeout_keep_alive
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(self._idle_deadline, self._idle_timer_fired)

    def _idle_timer_fired(self) -> None:
        self._idle_timer = None
        if self.transport.is_closing() or not self._idle_deadline:
            return  # (0: a read came since; the next answer keeps the connection alive again)
        if self._idle_deadline - self.loop.time() > EARLY_S:
            self._idle_timer = self.loop.call_at(self._idle_deadline, self._idle_timer_fired)
            return
        self.transport.close()

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()  # type: ignore[misc]
        cycle = self._waiting
        if cycle is not None and not cycle.more_body:
            self._waiting = None
            self._start_direct(cycle, cycle.direct_found)

    @property
    def sequences(self) -> dict[str, Remembered]:
        """The v2 sequences this connection steps, by session id (http/sequence_lane.py)."""
        if self._sequences is None:
            self._sequences = {}
        return self._sequences

    def _start_direct(self, cycle: Any, found: Found) -> None:
        miss = None
        if found[0] == V2_INFER:
            assert self.direct is not None
            taken = self.direct.layers().lane.take(self, cycle, found)
            if taken is True:  # answered by its step's callback
                return
            miss = taken or None
        self.whole_way(cycle, found, miss)

    def whole_way(self, cycle: Any, found: Found, miss: Miss | None = None) -> None:
        """Answer a request taken directly in a task of its own, every rule applied; `miss`:
        a v2 sequence step whose sequence the connection remembers once it is answered 200."""
        task = self.loop.create_task(self._exchange(cycle, found, miss))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _exchange(self, cycle: Any, found: Found, miss: Miss | None) -> None:
        assert self.direct is not None
        try:
            status, headers, payload = await self.direct.answer(cycle.scope, bytes(cycle.body),
                                                                found)
        except Exception:  # as uvicorn does for an ASGI application that raised
            log.exception("unexpected error on the direct path")
            status, payload = 500, b"Internal Server Error"
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            cycle.keep_alive = False
        self._write(cycle, status, headers, payload)
        if miss is not None:
            self.direct.layers().lane.remember(self, miss, (status, headers, payload))

    def write_answer(self, cycle: Any, status: int, headers: list[tuple[bytes, bytes]],
                     payload: bytes) -> None:
        """The whole response in one write (the sequence lane's answers)."""
        self._write(cycle, status, headers, payload)

    def _write(self, cycle: Any, status: int, headers: list[tuple[bytes, bytes]],
               payload: bytes) -> None:
        """The whole response in one write, framed as uvicorn frames an ASGI response."""
        cycle.response_started = True
        if not cycle.disconnected and not self.transport.is_closing():
            defaults, said_close, said_length = _default_lines(cycle.default_headers)
            parts = [STATUS_LINE[status], defaults]
            for name, value in headers:
                if name == b"connection" and value.lower() == b"close":
                    said_close = True
                said_length = said_length or name == b"content-length"
                parts += (name, b": ", value, b"\r\n")
            if not said_length:
                parts += (b"content-length: ", str(len(payload)).encode(), b"\r\n")
            if said_close:
                cycle.keep_alive = False
            elif not cycle.keep_alive:
                parts.append(b"connection: close\r\n")
            parts += (b"\r\n", payload)
            self.transport.write(b"".join(parts))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        cycle.on_response()


_DEFAULTS: list[Any] = [None, (b"", False, False)]  # uvicorn's default header list, its lines


def _default_lines(lines: list[tuple[bytes, bytes]]) -> tuple[bytes, bool, bool]:
    """uvicorn's default headers (date, server) as written, and whether they say
    "connection: close" and give a length, made again only when uvicorn renews the list
    (once a second, for the date)."""
    if lines is not _DEFAULTS[0]:
        written = b"".join(b"%s: %s\r\n" % line for line in lines)
        close = any(n == b"connection" and v.lower() == b"close" for n, v in lines)
        length = any(n == b"content-length" for n, _ in lines)
        _DEFAULTS[:] = [lines, (written, close, length)]
    kept: tuple[bytes, bool, bool] = _DEFAULTS[1]
    return kept


def _status_lines() -> dict[int, bytes]:
    from http import HTTPStatus

    lines = {}
    for code in range(100, 600):
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        lines[code] = f"HTTP/1.1 {code} {phrase}\r\n".encode()
    return lines


STATUS_LINE = _status_lines()
"""Each status's response line, as uvicorn writes it."""
