"""Engine errors name the problem; each API adds its own advice. A REST or WebSocket client
is told about /v1 sessions, a KServe v2 client about sequence_start and sequence_end, and
neither gets the other's advice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import numpy as np

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
KEY = {"Authorization": "Bearer k1"}


def v2_step(sequence_id: int, start: bool = False) -> dict[str, object]:
    return {"parameters": {"sequence_id": sequence_id, "sequence_start": start},
            "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": np.zeros(3).tolist()}]}


async def test_unknown_session_advice_per_api(make_client: MakeClient) -> None:
    async with await make_client() as client:
        r = await client.post("/v1/sessions/nope/step", json={"inputs": [[0, 0, 0]]})
        assert r.status_code == 404
        assert r.json()["error"] == ("unknown session 'nope': create one with POST "
                                     "/v1/models/{model}/sessions")
        r = await client.post("/v2/models/tiny-gru/infer", json=v2_step(7))
        assert r.status_code == 400
        message = r.json()["error"]
        assert "sequence 7 of model 'tiny-gru' is not active" in message
        assert "must set sequence_start=true" in message and "/v1/" not in message


async def test_session_quota_advice_per_api(make_client: MakeClient) -> None:
    async with await make_client(api_keys="k1", max_sessions_per_key=1) as client:
        r = await client.post("/v2/models/tiny-gru/infer", json=v2_step(1, True), headers=KEY)
        assert r.status_code == 200, r.text
        r = await client.post("/v1/models/tiny-gru/sessions", headers=KEY)
        assert r.status_code == 429
        assert r.json()["error"] == ("this API key holds its maximum of 1 live sessions; "
                                     "delete some (DELETE /v1/sessions/{id})")
        r = await client.post("/v2/models/tiny-gru/infer", json=v2_step(2, True), headers=KEY)
        assert r.status_code == 429
        assert r.json()["error"] == ("this API key holds its maximum of 1 live sessions; "
                                     "end some sequences (sequence_end=true)")
