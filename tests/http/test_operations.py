"""Operations: API keys and session ownership, per-key caps and rate limits, request ids and
JSON logs, CORS, request time limit, graceful shutdown."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerProcess

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
K1 = {"Authorization": "Bearer key-one"}
K2 = {"Authorization": "Bearer key-two"}
STEP = {"inputs": [[0.1, 0.2, 0.3]]}


async def test_api_keys_guard_every_data_route(make_client: MakeClient) -> None:
    async with await make_client(api_keys="key-one,key-two") as client:
        r = await client.get("/v1/models")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
                ).status_code == 401
        assert (await client.post("/v2/models/tiny-gru/infer", json={})).status_code == 401
        for open_path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"):
            assert (await client.get(open_path)).status_code == 200, open_path
        assert (await client.get("/v1/models", headers=K1)).status_code == 200


async def test_a_session_belongs_to_its_key(make_client: MakeClient) -> None:
    async with await make_client(api_keys="key-one,key-two") as client:
        sid = (await client.post("/v1/models/tiny-gru/sessions", headers=K1)).json()["session_id"]
        assert (await client.post(f"/v1/sessions/{sid}/step", json=STEP, headers=K1)
                ).status_code == 200
        for method, path in (("POST", "step"), ("GET", ""), ("GET", "state"),
                             ("POST", "reset"), ("DELETE", "")):
            url = f"/v1/sessions/{sid}/{path}".rstrip("/")
            r = await client.request(method, url, headers=K2,
                                     json=STEP if path == "step" else None)
            assert r.status_code == 404 and "unknown session" in r.json()["error"], (method, url)
        r = await client.post("/v1/models/tiny-gru/steps", headers=K2,
                              json={"steps": [{"session_id": sid, "inputs": STEP["inputs"]}]})
        assert "unknown session" in r.json()["results"][0]["error"]
        assert (await client.get(f"/v1/sessions/{sid}", headers=K1)).json()["steps"] == 1


async def test_keys_file_and_per_key_session_cap(make_client: MakeClient,
                                                 tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nkey-one\n\nkey-two  # ci\n")
    async with await make_client(api_keys_file=keys, max_sessions_per_key=2) as client:
        for _ in range(2):
            assert (await client.post("/v1/models/tiny-gru/sessions", headers=K1)
                    ).status_code == 201
        r = await client.post("/v1/models/tiny-gru/sessions", headers=K1)
        assert r.status_code == 429 and "maximum of 2 live sessions" in r.json()["error"]
        assert r.headers["retry-after"]
        assert (await client.post("/v1/models/tiny-gru/sessions", headers=K2)).status_code == 201


async def test_rate_limit_per_key(make_client: MakeClient) -> None:
    async with await make_client(api_keys="key-one,key-two", rate_limit_per_s=2,
                                 rate_burst=3) as client:
        codes = [(await client.get("/v1/models", headers=K1)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = await client.get("/v1/models", headers=K1)
        assert int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["error"]
        assert (await client.get("/v1/models", headers=K2)).status_code == 200  # per key
        time.sleep(0.6)
        assert (await client.get("/v1/models", headers=K1)).status_code == 200


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers={"X-Request-Id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    made = (await client.get("/v1/models")).headers["x-request-id"]
    assert len(made) == 32 and made != "trace-123"


async def test_cors_is_off_by_default_and_configurable(client: httpx.AsyncClient,
                                                      make_client: MakeClient) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = await client.options("/v1/models/tiny-gru/predict", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    async with await make_client(cors_origins="https://app.example") as cors:
        r = await cors.options("/v1/models/tiny-gru/predict", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_request_time_limit_gives_504(make_client: MakeClient) -> None:
    async with await make_client(request_timeout_s=0.001, max_total_timesteps=10**6) as client:
        x = np.zeros((64, 3000, 3)).tolist()
        r = await client.post("/v1/models/tiny-lstm/predict", json={"inputs": x})
        assert r.status_code == 504 and "longer than 0.001 s" in r.json()["error"]


def test_websocket_takes_the_key_as_a_query_parameter(
    start_server: Callable[..., ServerProcess], tiny_repo: Path
) -> None:
    import asyncio

    server = start_server("--models", str(tiny_repo), "--api-keys", "key-one")

    async def run() -> None:
        url = f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream"
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url):
                pass
        assert info.value.response.status_code == 403  # handshake refused without a key
        async with websockets.connect(url + "?api_key=key-one") as ws:
            hello = json.loads(await ws.recv())
            await ws.send(json.dumps(STEP))
            assert json.loads(await ws.recv())["steps"] == 1
        r = httpx.get(f"{server.url}/v1/sessions/{hello['session_id']}", headers=K1)
        assert r.json()["steps"] == 1

    asyncio.run(run())


def test_json_logs_carry_the_request_id(start_server: Callable[..., ServerProcess],
                                        tiny_repo: Path) -> None:
    server = start_server("--models", str(tiny_repo), "--log-format", "json",
                          "--log-level", "debug")
    httpx.get(server.url + "/v1/models", headers={"X-Request-Id": "abc-789"})
    httpx.post(server.url + "/v1/models/tiny-gru/predict", json={"inputs": []})
    time.sleep(0.3)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("request_id") == "abc-789"]
    assert access and access[0]["status"] == 200 and access[0]["path"] == "/v1/models"
    assert any(e.get("status") == 400 and e["level"] == "warning" for e in lines)
    assert any("loaded tiny-gru" in e["message"] for e in lines)


def test_sigterm_drains_gracefully(start_server: Callable[..., ServerProcess],
                                   tiny_repo: Path) -> None:
    """Readiness goes false first while requests are still served; in-flight work finishes;
    the process exits 0."""
    server = start_server("--models", str(tiny_repo), "--shutdown-delay-s", "1.5")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        sid = client.post("/v1/models/tiny-gru/sessions").json()["session_id"]
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert client.get("/v2/health/ready").status_code == 503
        assert client.post(f"/v1/sessions/{sid}/step", json=STEP).status_code == 200
    assert server.proc.wait(timeout=20) == 0
    assert "draining" in server.log()


def test_grpc_needs_the_key_and_sessions_keep_their_owner(
    start_server: Callable[..., ServerProcess], tiny_repo: Path
) -> None:
    import tritonclient.grpc as grpcclient
    from rnnserve.auth import owner_of_key
    from tritonclient.utils import InferenceServerException

    from tests.conftest import free_port

    grpc_port = free_port()
    server = start_server("--models", str(tiny_repo), "--api-keys", "key-one,key-two",
                          "--grpc-port", str(grpc_port))
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    key_one = {"authorization": "Bearer key-one"}
    try:
        assert client.is_server_live()  # health stays open, as over HTTP
        with pytest.raises(InferenceServerException, match="API key"):
            client.get_model_metadata("tiny-gru")
        assert client.get_model_metadata("tiny-gru", headers=key_one).name == "tiny-gru"
        x = grpcclient.InferInput("input", [1, 2, 3], "FP32")
        x.set_data_from_numpy(np.ones((1, 2, 3), np.float32))
        with pytest.raises(InferenceServerException, match="API key"):
            client.infer("tiny-gru", [x])
        client.infer("tiny-gru", [x], sequence_id=5, sequence_start=True, headers=key_one)
        url = f"{server.url}/v1/sessions/v2@{owner_of_key('key-one')}.tiny-gru.n.5"
        assert httpx.get(url, headers=K1).json()["steps"] == 2
        assert httpx.get(url, headers=K2).status_code == 404
    finally:
        client.close()
