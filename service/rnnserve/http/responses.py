"""JSON responses encoded by orjson, which writes numpy arrays natively (much faster than
`.tolist()` followed by the standard library encoder)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response

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
