"""JSON responses encoded by orjson, which writes numpy arrays natively (much faster than
`.tolist()` followed by the standard library encoder)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class FastJSONResponse(JSONResponse):
    """application/json rendered with orjson; numpy arrays must be C-contiguous."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)
