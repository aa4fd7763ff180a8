"""KServe v2 responses are compressed when the client accepts gzip or deflate and the reply is
large enough to gain from it (COMPRESS_MIN_BYTES); a small reply, such as one sequence step's,
goes out as it is, which every HTTP client (tritonclient included) reads alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from rnnserve.http.content_encoding import COMPRESS_MIN_BYTES


def infer_body(timesteps: int) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, timesteps, 3], "datatype": "FP32",
                        "data": [0.25] * (3 * timesteps)}]}


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_large_replies_are_compressed_small_ones_are_not(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]], coding: str,
) -> None:
    async with await make_client() as client:
        small = await client.post("/v2/models/tiny-gru/infer", json=infer_body(1),
                                  headers={"accept-encoding": coding})
        assert small.status_code == 200, small.text
        assert "content-encoding" not in small.headers
        assert len(small.content) < COMPRESS_MIN_BYTES
        large = await client.post("/v2/models/tiny-gru/infer", json=infer_body(200),
                                  headers={"accept-encoding": coding})
        assert large.status_code == 200 and large.headers["content-encoding"] == coding
        # httpx inflated it; what crossed the wire was smaller
        assert int(large.headers["content-length"]) < len(large.content)
        plain = await client.post("/v2/models/tiny-gru/infer", json=infer_body(200),
                                  headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert len(plain.content) >= COMPRESS_MIN_BYTES
        assert orjson.loads(plain.content)["outputs"] == orjson.loads(large.content)["outputs"]
