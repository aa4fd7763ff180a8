"""Every kind of bad input gets a 4xx JSON error naming the problem, and the server keeps
serving (each test ends with a good request)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

GOOD = {"inputs": [[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]]}
PREDICT = "/v1/models/tiny-gru/predict"


async def still_serves(client: httpx.AsyncClient) -> None:
    r = await client.post(PREDICT, json=GOOD)
    assert r.status_code == 200, r.text
    assert len(r.json()["outputs"][0]) == 2


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": [[[1.0, 2.0]]]}, 400, "2 feature(s) per timestep; the model takes 3"),
        ({"inputs": []}, 400, "inputs is empty"),
        ({"inputs": [[]]}, 400, "inputs[0] is empty"),
        ({"inputs": [[[1, 2, 3], []]]}, 400, "ragged"),
        ({"inputs": [[[1, 2, 3], [1, 2]]]}, 400, "ragged"),
        ({"inputs": [[[1, 2, "x"]]]}, 400, "numbers only; found strings"),
        ({"inputs": [[[1, 2, None]]]}, 400, "numbers only"),
        ({"inputs": [[[1, 2, True]]]}, 400, "numbers only; found booleans"),
        ({"inputs": [[[1, 2, 1e39]]]}, 400, "finite"),
        ({"inputs": "abc"}, 400, "must be a list of sequences"),
        ({"inputs": [[1, 2, 3]]}, 400, "list of timesteps"),
        ({"input": [[[1, 2, 3]]]}, 400, "unknown field(s) ['input']"),
        ({}, 400, '"inputs" is missing'),
        ({"inputs": [[[1, 2, 3]]], "return_state": "yes"}, 400, "return_state"),
        ({"inputs": [[[1, 2, 3]]], "initial_states": [None, None]}, 400, "one per sequence"),
        ({"inputs": [[[1, 2, 3]]], "initial_states": [{"zz": {"data": [1]}}]}, 400,
         "unknown state 'zz'"),
        ({"inputs": [[[1, 2, 3]]], "initial_states": [{"h0": {"shape": [2, 1, 7],
                                                              "data": [0.0] * 14}}]}, 400,
         "expected [2, 1, 8]"),
        ({"inputs": [[[1, 2, 3]]], "initial_states": [{"h0": {"shape": [2, 1, 8],
                                                              "data": [0.0] * 15}}]}, 400,
         "15 values but shape"),
        ([1, 2, 3], 400, "must be a JSON object"),
    ],
)
async def test_bad_predict_bodies(
    client: httpx.AsyncClient, body: Any, status: int, fragment: str
) -> None:
    r = await client.post(PREDICT, json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    await still_serves(client)


@pytest.mark.parametrize("raw", [b'{"inputs": [[[NaN, 1, 2]]]}',
                                 b'{"inputs": [[[Infinity, 1, 2]]]}',
                                 b'{"inputs": [[[1, 2, 3]]]', b"", b"\xff\xfe"])
async def test_malformed_json_and_nan(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post(PREDICT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["error"] or "empty" in r.json()["error"]
    await still_serves(client)


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    r = await client.post(PREDICT, content=b"inputs=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert "application/json" in r.json()["error"]
    await still_serves(client)


async def test_unknown_model_and_version(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/nope/predict", json=GOOD)
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    r = await client.post("/v1/models/tiny-gru/predict?version=9", json=GOOD)
    assert r.status_code == 404 and "no version '9'" in r.json()["error"]
    r = await client.get("/v1/models/..%2F..%2Fetc")
    assert r.status_code == 404
    r = await client.get("/no/such/route")
    assert r.status_code == 404 and "error" in r.json()
    await still_serves(client)


async def test_limits_give_413(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    async with await make_client(max_body_bytes=4096, max_sequences=3, max_timesteps=10,
                           max_total_timesteps=12) as client:
        big = {"inputs": [[[1.0, 2.0, 3.0]] * 300]}
        r = await client.post(PREDICT, json=big)
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]
        r = await client.post(PREDICT, json={"inputs": [[[1, 2, 3]]] * 4})
        assert r.status_code == 413 and "4 sequences" in r.json()["error"]
        r = await client.post(PREDICT, json={"inputs": [[[1, 2, 3]] * 11]})
        assert r.status_code == 413 and "11 timesteps" in r.json()["error"]
        r = await client.post(PREDICT, json={"inputs": [[[1, 2, 3]] * 7] * 2})
        assert r.status_code == 413 and "14 timesteps in one request" in r.json()["error"]
        await still_serves(client)


async def test_chunked_body_over_limit(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    async with await make_client(max_body_bytes=4096) as client:
        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"inputs": [['
            for _ in range(500):
                yield b"[1.0, 2.0, 3.0],"
            yield b"[1, 2, 3]]]}"

        r = await client.post(PREDICT, content=chunks(),
                              headers={"content-type": "application/json"})
        assert r.status_code == 413
        await still_serves(client)
