"""Refuse request bodies over the size limit before they are read into memory (413), whether
the client announces Content-Length or streams chunks."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnserve.errors import PayloadTooLarge
from rnnserve.http.errors import send_error


class BodySizeLimit:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (f"request body exceeds the limit of {self.max_bytes} bytes: split the "
                "request or raise --max-body-bytes")

    async def _reject(self, send: Send) -> None:
        await send_error(send, 413, self._message(), [(b"connection", b"close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        limit = self.max_bytes
        too_large = self._message()

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(too_large)
            return message

        await self.app(scope, counted_receive, send)
