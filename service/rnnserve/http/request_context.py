"""Per-request context, in one middleware so each request is timed and its status read once:
a request id (the client's X-Request-Id, or a new one) echoed in the response, the Prometheus
request counter and latency by route template, an OpenTelemetry span when tracing is on, one
log line per request at debug and per error at warning, and a time limit (504; 408 when the
request's body was still to come from the client, and the connection is closed: late_body).

The time limit is the engine's TimeLimit: it cancels a request that changed nothing, but a
session step or write running at the limit owns it instead (rnnserve.engine.deadlines), so a
step that was applied is answered with its result, and one withdrawn gets its own 504 saying
it was not applied. The middleware's own 504 thus always means: nothing was changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnserve.engine import TimeLimit
from rnnserve.http.errors import CLIENT_CLOSED, send_error
from rnnserve.http.late_body import waiting_for_client
from rnnserve.logs import new_request_id, request_id
from rnnserve.metrics import HTTP_METHODS, OTHER, Metrics
from rnnserve.tracing import Tracing

log = logging.getLogger("rnnserve.access")

Instruments = tuple[Any, Any]
"""A request's counter and latency histogram (prometheus_client children)."""


def headers_of(scope: Scope) -> dict[str, str]:
    """A request's headers as text (the last of a repeated one), for trace context."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


class Exchange:
    """One request as this layer follows it: its id, and its status once answering began
    (0 before)."""

    __slots__ = ("rid", "status")

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.status = 0


class RequestContext:
    """Pure ASGI middleware around every HTTP request (the outermost one: 401, 413 and 429
    answers from the middlewares inside are counted and logged too)."""

    def __init__(self, app: ASGIApp, timeout_s: float, metrics: Metrics,
                 tracing: Tracing, model_label: Callable[[str], str]) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.tracing = tracing
        self.model_label = model_label  # a served model's name, else OTHER (bounded labels)
        # each label set's counter and histogram, looked up once: prometheus_client's
        # labels() validates, locks and hashes on every call; the sets are bounded (above)
        self._counted: dict[tuple[str, str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def request_id(self, scope: Scope) -> str:
        """The client's X-Request-Id (at most 128 characters), else a new one."""
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:128]
        return rid or new_request_id()

    async def run(self, scope: Scope, exchange: Exchange, answer: Callable[[], Awaitable[None]],
                  answer_timed_out: Callable[[str], Awaitable[None]]) -> None:
        """Everything this layer does around answering one request: the request id in the
        logging context, a span, the time limit (answered by `answer_timed_out` with the
        504's message, unless the answer began), metrics and the log line. The ASGI layer
        below and the protocol's direct path (http/direct_path.py) both call it, so the
        rules exist once. `answer` sets `exchange.status` when it starts answering."""
        token = request_id.set(exchange.rid)
        started = time.perf_counter()
        carrier = headers_of(scope) if self.tracing.enabled else None
        with self.tracing.span(f"{scope['method']} {scope['path']}", server=True,
                               carrier=carrier) as span:
            try:
                with TimeLimit(self.timeout_s):  # no extra task, unlike wait_for
                    await answer()
            except TimeoutError:
                if exchange.status == 0:
                    await answer_timed_out(self.timed_out_message())
            finally:
                self._record(scope, exchange.rid, exchange.status or 500,
                             time.perf_counter() - started, span)
                request_id.reset(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(self.request_id(scope))
        rid_header = (b"x-request-id", exchange.rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        async def timed_out(message: str) -> None:
            if waiting_for_client(receive):  # the client was late, not the answer
                await send_error(send_with_id, 408, self.body_late_message(),
                                 [(b"connection", b"close")])
            else:
                await send_error(send_with_id, 504, message)

        await self.run(scope, exchange, lambda: self.app(scope, receive, send_with_id), timed_out)

    def timed_out_message(self) -> str:
        return (f"the request took longer than {self.timeout_s:g} s (--request-timeout-s) and "
                "was stopped before it changed anything (no step was applied), so retrying it "
                "is safe; split it if it is large")

    def body_late_message(self) -> str:
        return (f"the request body did not arrive whole within {self.timeout_s:g} s "
                "(--request-timeout-s): fewer bytes came than its Content-Length announced, "
                "or its last chunk never came; no step was applied, so retrying it is safe. "
                "Send the whole body at once, with a Content-Length that matches it")

    def finished(self, scope: Scope, rid: str, status: int, seconds: float,
                 instruments: Instruments | None = None) -> None:
        """Metrics and the log line of a request answered without `run` (the sequence lane,
        which runs no task and no span: it is not taken while tracing is on). `instruments`:
        the request's own (`instruments`), when its caller keeps them."""
        self._record(scope, rid, status, seconds, None, instruments)

    def instruments(self, scope: Scope, status: int) -> Instruments:
        """The request counter and latency histogram of a request with `status`, by route
        template, served model and known method (a client picks paths, model names and
        methods: as labels they would grow without bound)."""
        method = scope["method"]
        route = getattr(scope.get("route"), "path", None)
        model = scope.get("path_params", {}).get("model", "")
        method_label = method if method in HTTP_METHODS else OTHER
        counted = (method_label, route or "unmatched", self.model_label(model), str(status))
        counter = self._counted.get(counted)
        if counter is None:
            counter = self._counted[counted] = self.metrics.requests.labels(*counted)
        timed = counted[:2]
        histogram = self._timed.get(timed)
        if histogram is None:
            histogram = self._timed[timed] = self.metrics.latency.labels(*timed)
        return counter, histogram

    def _record(self, scope: Scope, rid: str, status: int, seconds: float, span: Any,
                instruments: Instruments | None = None) -> None:
        """Metrics (`instruments`), span, log line."""
        counter, histogram = instruments or self.instruments(scope, status)
        counter.inc()
        histogram.observe(seconds)
        method = scope["method"]
        if span is not None:
            route = getattr(scope.get("route"), "path", None)
            model = scope.get("path_params", {}).get("model", "")
            span.update_name(f"{method} {route or scope['path']}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route or scope["path"])
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("rnnserve.request_id", rid)
            if model:
                span.set_attribute("rnnserve.model", model)
        level = (logging.INFO if status == CLIENT_CLOSED  # the client went away: not a fault
                 else logging.WARNING if status >= 400 else logging.DEBUG)
        if log.isEnabledFor(level):
            client = scope.get("client") or ("", 0)
            duration = round(seconds * 1000, 2)
            log.log(level, "%s %s %d %.1f ms", method, scope["path"], status, duration,
                    extra={"method": method, "path": scope["path"], "status": status,
                           "duration_ms": duration, "client": client[0]})
