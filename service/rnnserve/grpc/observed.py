"""What every gRPC call gets that every HTTP request gets from http/request_context.py: a
request id (the caller's `x-request-id` metadata, or a new one, sent back in the trailing
metadata and set in the log context), a server span (a child of the caller's W3C
`traceparent` metadata), the calls counter and latency by method, served model and status
code, and an access log line with the HTTP line's fields: at debug for a call that succeeded,
at warning for an error (info for a cancelled call: the client's doing).

`add_inference_service` (server.py) wraps every method of the inference service here, so an
RPC added later is observed without a line of its own."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import grpc

from rnnserve.engine import Engine
from rnnserve.logs import new_request_id, request_id
from rnnserve.metrics import OTHER

log = logging.getLogger("rnnserve.access")

Unary = Callable[[Any, Any], Awaitable[Any]]
Streaming = Callable[[AsyncIterable[Any], Any], Awaitable[None]]


class CallObserver:
    """Observes the calls of one server (one engine)."""

    def __init__(self, engine: Engine) -> None:
        self._metrics = engine.metrics
        self._tracing = engine.tracing
        self._models = engine.models
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def model_label(self, name: str) -> str:
        """A served model's name, else OTHER (a caller picks the names: labels stay bounded)."""
        return name if not name or name in self._models.versions else OTHER

    def unary(self, method: str, handler: Unary) -> Unary:
        async def observed(request: Any, context: Any) -> Any:
            model = getattr(request, "model_name", "") or getattr(request, "name", "")
            return await self._observe(method, model, context, handler(request, context))
        return observed

    def streaming(self, method: str, handler: Streaming) -> Streaming:
        """A stream counts once, when it ends (its messages: stream_metrics.py)."""
        async def observed(requests: AsyncIterable[Any], context: Any) -> None:
            await self._observe(method, "", context, handler(requests, context))
        return observed

    async def _observe(self, method: str, model: str, context: Any,
                       call: Awaitable[Any]) -> Any:
        metadata = dict(context.invocation_metadata() or ())
        rid = str(metadata.get("x-request-id", ""))[:128] or new_request_id()
        context.set_trailing_metadata((("x-request-id", rid),))
        token = request_id.set(rid)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        carrier = metadata if self._tracing.enabled else None
        with self._tracing.span(f"grpc {method}", server=True, carrier=carrier) as span:
            try:
                answer = await call
                code = grpc.StatusCode.OK
                return answer
            except BaseException:
                code = _status(context.code())  # set by the abort that ended the call
                raise
            finally:
                self._record(method, self.model_label(model), code, context,
                             time.perf_counter() - started, rid, span)
                request_id.reset(token)

    def _record(self, method: str, model: str, code: grpc.StatusCode, context: Any,
                seconds: float, rid: str, span: Any) -> None:
        name = code.name
        counted = (method, model, name)
        counter = self._counted.get(counted)
        if counter is None:
            counter = self._counted[counted] = self._metrics.grpc_requests.labels(*counted)
        counter.inc()
        histogram = self._timed.get(method)
        if histogram is None:
            histogram = self._timed[method] = self._metrics.grpc_latency.labels(method)
        histogram.observe(seconds)
        if span is not None:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.method", method)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.set_attribute("rnnserve.request_id", rid)
            if model:
                span.set_attribute("rnnserve.model", model)
        level = (logging.INFO if code is grpc.StatusCode.CANCELLED
                 else logging.DEBUG if code is grpc.StatusCode.OK else logging.WARNING)
        if log.isEnabledFor(level):
            duration = round(seconds * 1000, 2)
            client = context.peer() or ""
            log.log(level, "gRPC %s %s %.1f ms", method, name, duration,
                    extra={"method": "gRPC", "path": method, "status": name,
                           "duration_ms": duration, "model": model or None,
                           "client": client})


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _status(code: Any) -> grpc.StatusCode:
    """A call's status as the context reports it (a StatusCode, its number, or None when the
    call ended with no status set: the client went away)."""
    if isinstance(code, grpc.StatusCode):
        return code
    if code is None:
        return grpc.StatusCode.CANCELLED
    return _CODES.get(code, grpc.StatusCode.UNKNOWN)
