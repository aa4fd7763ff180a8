"""The hot POST routes (session step, KServe v2 infer) skip FastAPI's router, and answer
exactly as the router's path does: same statuses, same bodies, same headers that matter,
same metric labels, for good requests and every kind of bad one."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from rnnserve.http.hot_routes import HotRoutes

BAD_JSON = b'{"inputs": [[0.1, 0.2, 0.3]'


class RouterCalls:
    """Wraps the application's router (the innermost ASGI app): counts what reaches it."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.router(scope, receive, send)


@pytest.fixture
async def app_client(make_settings: Callable[..., Any]) -> AsyncIterator[tuple[Any, Any]]:
    from rnnserve.engine import Engine
    from rnnserve.http.app import create_app

    engine = Engine(make_settings())
    engine.start()
    await engine.open()
    app = create_app(engine, manage_engine=False)
    calls = RouterCalls(app.router)
    app.router = calls  # before the first request builds the middleware stack around it
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rnnserve.test") as c:
        yield c, calls
    await engine.aclose()
    engine.close()


async def test_hot_routes_do_not_reach_the_router(app_client: tuple[Any, Any]) -> None:
    client, calls = app_client
    made = await client.post("/v1/models/tiny-lstm/sessions")
    sid = made.json()["session_id"]
    assert calls.paths == ["/v1/models/tiny-lstm/sessions"]
    step = await client.post(f"/v1/sessions/{sid}/step", json={"inputs": [[0.1, 0.2, 0.3]]})
    assert step.status_code == 200 and step.json()["steps"] == 1
    body = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": [0.1, 0.2, 0.3]}]}
    for path in ("/v2/models/tiny-lstm/infer", "/v2/models/tiny-lstm/versions/1/infer"):
        answer = await client.post(path, json=body)
        assert answer.status_code == 200, answer.text
    bulk = await client.post("/v1/models/tiny-lstm/steps",
                             json={"steps": [{"session_id": sid, "inputs": [[0.1, 0.2, 0.3]]}]})
    assert bulk.status_code == 200 and bulk.json()["results"][0]["steps"] == 2, bulk.text
    assert calls.paths == ["/v1/models/tiny-lstm/sessions"]
    # a GET on the same path, a trailing slash: the router's, as before
    assert (await client.get(f"/v1/sessions/{sid}/step")).status_code == 405
    slash = await client.post(f"/v1/sessions/{sid}/step/", json={})
    assert slash.status_code == 404 and "error" in slash.json()  # no redirect
    assert calls.paths[1:] == [f"/v1/sessions/{sid}/step", f"/v1/sessions/{sid}/step/"]
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/sessions/{session_id}/step"' in metrics
    assert 'route="/v2/models/{model}/versions/{version}/infer"' in metrics


def v2_binary(header: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    return header + data, {"inference-header-content-length": str(len(header)),
                           "content-type": "application/octet-stream"}


async def answers(client: httpx.AsyncClient, sid: str) -> list[tuple[int, str, str | None]]:
    """What a list of good and bad requests to the hot paths get: status, body, and the
    Retry-After and content type headers."""
    binary, binary_headers = v2_binary(
        b'{"inputs":[{"name":"input","shape":[1,1,3],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":8}}]}', b"\0" * 8)  # 8 bytes where 12 are due
    requests: list[tuple[str, dict[str, Any]]] = [
        (f"/v1/sessions/{sid}/step", {"json": {"inputs": [[0.5, -1.0, 2.0]],
                                                "step_id": "a"}}),
        (f"/v1/sessions/{sid}/step", {"json": {"inputs": [[0.5, -1.0, 2.0]],
                                                "step_id": "a"}}),  # replayed
        (f"/v1/sessions/{sid}/step", {"content": BAD_JSON,
                                      "headers": {"content-type": "application/json"}}),
        (f"/v1/sessions/{sid}/step", {"json": {"inputs": [[0.5, -1.0]]}}),
        (f"/v1/sessions/{sid}/step", {"json": {"inputs": [[0.5, -1.0, 2.0]], "extra": 1}}),
        (f"/v1/sessions/{sid}/step", {"content": b"inputs=1",
                                      "headers": {"content-type": "text/plain"}}),
        ("/v1/sessions/no-such-session/step", {"json": {"inputs": [[0.5, -1.0, 2.0]]}}),
        ("/v1/models/tiny-lstm/steps", {"json": {"steps": [
            {"session_id": sid, "inputs": [[0.5, -1.0, 2.0]]},
            {"session_id": "no-such-session", "inputs": [[0.5, -1.0, 2.0]]},
            {"session_id": sid, "inputs": [[0.5]]}]}}),
        ("/v1/models/tiny-lstm/steps", {"json": {"steps": "all"}}),
        ("/v1/models/no-such-model/steps", {"json": {"steps": []}}),
        ("/v2/models/no-such-model/infer", {"json": {"inputs": []}}),
        ("/v2/models/tiny-lstm/versions/9/infer", {"json": {"inputs": []}}),
        ("/v2/models/tiny-lstm/infer", {"content": binary, "headers": binary_headers}),
        ("/v2/models/tiny-lstm/infer", {"json": {"inputs": [{
            "name": "input", "shape": [1, 1, 3], "datatype": "FP32",
            "data": [base64.b64encode(b"x").decode()]}]}}),
    ]
    out = []
    for path, options in requests:
        answer = await client.post(path, **options)
        out.append((answer.status_code, answer.text,
                    answer.headers.get("retry-after") or answer.headers.get("content-type")))
    return out


async def test_hot_routes_answer_as_the_router_does(app_client: tuple[Any, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client, calls = app_client
    sids = [(await client.post("/v1/models/tiny-lstm/sessions")).json()["session_id"]
            for _ in range(2)]
    through_router = len(calls.paths)
    hot = await answers(client, sids[0])
    assert len(calls.paths) == through_router  # none of these reached the router
    monkeypatch.setattr(HotRoutes, "match", lambda self, path: None)
    routed = await answers(client, sids[1])
    assert len(calls.paths) == through_router + len(routed)  # the router answered these
    hot = [(s, text.replace(sids[0], "SID"), h) for s, text, h in hot]
    routed = [(s, text.replace(sids[1], "SID"), h) for s, text, h in routed]
    assert hot == routed
    assert [s for s, _, _ in hot] == [200, 200, 400, 400, 400, 415, 404,
                                      200, 400, 400, 400, 400, 400, 400]
