"""Per-request context: a request id (the client's X-Request-Id, or a new one) echoed in the
response, one log line per request at debug and per error at warning, and a time limit."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.tracing import Tracing

log = logging.getLogger("rnnserve.access")


class RequestContext:
    """Pure ASGI middleware around every HTTP request."""

    def __init__(self, app: ASGIApp, timeout_s: float, tracing: Tracing) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:128]
        rid = rid or uuid.uuid4().hex
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

        span_context = self.tracing.span(f"{scope['method']} {scope['path']}", server=True)
        span = span_context.__enter__()
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                await self.app(scope, receive, send_with_id)
        except TimeoutError:
            if status == 0:
                body = orjson.dumps({"error": f"the request took longer than {self.timeout_s:g}"
                                              " s (--request-timeout-s); retry or split it"})
                await send_with_id({"type": "http.response.start", "status": 504, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            if span is not None:
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status or 504)
                span.set_attribute("rnnserve.request_id", rid)
                model = scope.get("path_params", {}).get("model")
                if model:
                    span.set_attribute("rnnserve.model", model)
            span_context.__exit__(None, None, None)
            duration = (time.perf_counter() - started) * 1000
            level = logging.WARNING if status >= 400 or status == 0 else logging.DEBUG
            if log.isEnabledFor(level):
                client = scope.get("client") or ("", 0)
                log.log(level, "%s %s %d %.1f ms", scope["method"], scope["path"], status,
                        duration, extra={"method": scope["method"], "path": scope["path"],
                                         "status": status, "duration_ms": round(duration, 2),
                                         "client": client[0]})
            request_id.reset(token)
