"""Per-request context, in one middleware so each request is timed and its status read once:
a request id (the client's X-Request-Id, or a new one) echoed in the response, the Prometheus
request counter and latency by route template, an OpenTelemetry span when tracing is on, one
log line per request at debug and per error at warning, and a time limit (504).

The time limit is the engine's TimeLimit: it cancels a request that changed nothing, but a
session step or write running at the limit owns it instead (rnnserve.engine.deadlines), so a
step that was applied is answered with its result, and one withdrawn gets its own 504 saying
it was not applied. The middleware's own 504 thus always means: nothing was changed."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnserve.engine import TimeLimit
from rnnserve.http.errors import CLIENT_CLOSED, send_error
from rnnserve.logs import request_id
from rnnserve.metrics import HTTP_METHODS, OTHER, Metrics
from rnnserve.tracing import Tracing

log = logging.getLogger("rnnserve.access")

# A new request id: this process's random prefix and a counter (uuid4 read the OS's random
# source on every request).
_ID_PREFIX = secrets.token_hex(8)
_id_counter = itertools.count()


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:128]
        rid = rid or f"{_ID_PREFIX}{next(_id_counter):016x}"
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        with self.tracing.span(f"{scope['method']} {scope['path']}", server=True) as span:
            try:
                async with TimeLimit(self.timeout_s):  # no extra task, unlike wait_for
                    await self.app(scope, receive, send_with_id)
            except TimeoutError:
                if status == 0:
                    await self._timed_out(send_with_id)
            finally:
                self._record(scope, rid, status or 500, time.perf_counter() - started, span)
                request_id.reset(token)

    async def _timed_out(self, send: Send) -> None:
        await send_error(send, 504, f"the request took longer than {self.timeout_s:g} s "
                         "(--request-timeout-s) and was stopped before it changed anything "
                         "(no step was applied), so retrying it is safe; split it if it is "
                         "large")

    def _record(self, scope: Scope, rid: str, status: int, seconds: float, span: Any) -> None:
        """Metrics by route template, served model and known method (a client picks paths,
        model names and methods: as labels they would grow without bound), span, log line."""
        method = scope["method"]
        route = getattr(scope.get("route"), "path", None)
        model = scope.get("path_params", {}).get("model", "")
        method_label = method if method in HTTP_METHODS else OTHER
        counted = (method_label, route or "unmatched", self.model_label(model), str(status))
        counter = self._counted.get(counted)
        if counter is None:
            counter = self._counted[counted] = self.metrics.requests.labels(*counted)
        counter.inc()
        timed = counted[:2]
        histogram = self._timed.get(timed)
        if histogram is None:
            histogram = self._timed[timed] = self.metrics.latency.labels(*timed)
        histogram.observe(seconds)
        if span is not None:
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
