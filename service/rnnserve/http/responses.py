"""JSON responses encoded by orjson, which writes numpy arrays natively (much faster than
`.tolist()` followed by the standard library encoder)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Scope

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class FastJSONResponse(JSONResponse):
    """application/json rendered with orjson; numpy arrays must be C-contiguous."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


class ReadyResponse(Response):
    """A response whose body and header lines are made already (a hot route's): Starlette's
    Response would lower-case and encode each header of a dict and look for the two it adds
    on every call. The header lines are `raw_headers`, then content-length and content-type,
in Starlette's order. Sent as any Response (the direct path reads it without sending it)."""

    def __init__(self, body: bytes, content_type: bytes,
                 raw_headers: list[tuple[bytes, bytes]], status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        raw_headers += ((b"content-length", str(len(body)).encode()),
                        (b"content-type", content_type))
        self.raw_headers = raw_headers


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""A response as the protocol writes it: status, header lines, body."""


async def written(response: Response, scope: Scope,
                  receive: Callable[[], Awaitable[Message]]) -> Answer:
    """What a Starlette response writes, collected instead of sent (any response class, its
    background task included, behaves as it would on the ASGI path). A plain Response without
    a background task writes its status, header lines and body as they are: those are read
    without the two messages."""
    if response.background is None and type(response).__call__ is Response.__call__:
        body = response.body
        return (response.status_code, list(response.raw_headers),
                body if type(body) is bytes else bytes(body))
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def collect(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        else:
            chunks.append(message.get("body", b""))

    await response(scope, receive, collect)
    return status, headers, b"".join(chunks)
