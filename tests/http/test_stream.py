"""WebSocket streaming against a real server: one connection is one session, replies come in
order, bad messages leave the connection and the state alive, reconnection resumes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess, serving

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--max-body-bytes", "65536"],
                 tmp_path_factory.mktemp("ws") / "server.log") as proc:
        yield proc


def ws_url(server: ServerProcess, model: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/v1/models/{model}/stream{query}"


def whole(server: ServerProcess, model: str, seq: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/{model}/predict", json={"inputs": [seq.tolist()]})
    return np.asarray(r.json()["outputs"][0])


async def send_step(ws: websockets.ClientConnection, x: np.ndarray, **extra: object) -> dict:
    await ws.send(json.dumps({"inputs": x.tolist(), **extra}))
    return json.loads(await ws.recv())


async def test_stream_is_a_session(server: ServerProcess) -> None:
    seq = RNG.normal(size=(24, 3)).astype(np.float32)
    async with websockets.connect(ws_url(server, "tiny-lstm")) as ws:
        hello = json.loads(await ws.recv())
        assert hello["model"] == "tiny-lstm" and hello["steps"] == 0 and hello["session_id"]
        got = []
        for t in range(24):
            reply = await send_step(ws, seq[t:t + 1], id=t)
            assert reply["steps"] == t + 1 and reply["id"] == t
            got.extend(reply["outputs"])
    np.testing.assert_allclose(np.asarray(got), whole(server, "tiny-lstm", seq), atol=1e-5)
    r = httpx.get(f"{server.url}/v1/sessions/{hello['session_id']}")
    assert r.json()["steps"] == 24  # the session outlives the connection


async def test_bad_messages_get_errors_and_state_survives(server: ServerProcess) -> None:
    seq = RNG.normal(size=(6, 3)).astype(np.float32)
    async with websockets.connect(ws_url(server, "tiny-gru")) as ws:
        json.loads(await ws.recv())
        first = await send_step(ws, seq[:3])
        bad_messages: list[str | bytes] = [
            "not json", "[1, 2]", json.dumps({"inputs": [[1, 2]]}),
            json.dumps({"inputs": [[1, 2, 3]], "wat": 1}), json.dumps({}),
            json.dumps({"inputs": [[1, 2, "x"]]}), json.dumps({"inputs": []}),
            b"\x00\x01binary",
        ]
        for bad in bad_messages:
            await ws.send(bad)
            reply = json.loads(await ws.recv())
            assert reply["status"] == 400 and reply["error"], bad
        second = await send_step(ws, seq[3:])
        assert second["steps"] == 6
    got = np.asarray(first["outputs"] + second["outputs"])
    np.testing.assert_allclose(got, whole(server, "tiny-gru", seq), atol=1e-5)


async def test_reconnect_resumes_the_session(server: ServerProcess) -> None:
    seq = RNG.normal(size=(10, 3)).astype(np.float32)
    async with websockets.connect(ws_url(server, "tiny-lstm")) as ws:
        sid = json.loads(await ws.recv())["session_id"]
        first = await send_step(ws, seq[:4])
    async with websockets.connect(ws_url(server, "tiny-lstm", f"?session_id={sid}")) as ws:
        hello = json.loads(await ws.recv())
        assert hello["session_id"] == sid and hello["steps"] == 4
        rest = await send_step(ws, seq[4:])
    got = np.asarray(first["outputs"] + rest["outputs"])
    np.testing.assert_allclose(got, whole(server, "tiny-lstm", seq), atol=1e-5)


async def test_unknown_session_or_model_closes_with_reason(server: ServerProcess) -> None:
    async with websockets.connect(ws_url(server, "tiny-lstm", "?session_id=nope")) as ws:
        reply = json.loads(await ws.recv())
        assert reply["status"] == 404 and "unknown session" in reply["error"]
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    async with websockets.connect(ws_url(server, "nope")) as ws:
        assert "unknown model" in json.loads(await ws.recv())["error"]


async def refusal_of(url: str) -> tuple[dict, int]:
    """A connect the server refuses: its one error message and the close code after it."""
    async with websockets.connect(url) as ws:
        message = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None
        return message, info.value.rcvd.code


async def test_a_version_of_other_digits_is_an_unknown_version(server: ServerProcess) -> None:
    message, code = await refusal_of(ws_url(server, "tiny-lstm", "?version=%C2%B2"))  # ²
    assert message["status"] == 404
    assert "model 'tiny-lstm' has no version '²'" in message["error"] and code == 1008


async def test_a_full_server_closes_a_new_stream_with_try_again_later(
    tiny_repo: Path, start_server: Callable[..., ServerProcess],
) -> None:
    """At --max-sessions a new stream gets the 503 (with retry_after_s), then close code 1013
    ("try again later"), not 1011 (a server error); resuming a session needs no room."""
    full = start_server("--models", str(tiny_repo), "--max-sessions", "1")
    held = httpx.post(f"{full.url}/v1/models/tiny-gru/sessions").json()["session_id"]
    message, code = await refusal_of(ws_url(full, "tiny-gru"))
    assert message["status"] == 503 and message["retry_after_s"] > 0
    assert "maximum of 1 live sessions" in message["error"] and code == 1013
    async with websockets.connect(ws_url(full, "tiny-gru", f"?session_id={held}")) as ws:
        assert json.loads(await ws.recv())["session_id"] == held
        assert (await send_step(ws, np.ones((1, 3), np.float32)))["steps"] == 1
    assert httpx.delete(f"{full.url}/v1/sessions/{held}").status_code == 204
    async with websockets.connect(ws_url(full, "tiny-gru")) as ws:
        assert json.loads(await ws.recv())["steps"] == 0  # room again


def test_refusal_close_codes() -> None:
    """429 and 503 → 1013 (try again later), other 4xx → 1008 (policy violation), other 5xx →
    1011."""
    from rnnserve.http.stream import refusal_close_code

    assert [refusal_close_code(s) for s in (400, 404, 429, 500, 503, 504)] == [
        1008, 1008, 1013, 1011, 1013, 1011]


async def test_huge_frame_closes_the_connection_but_not_the_session(
    server: ServerProcess,
) -> None:
    async with websockets.connect(ws_url(server, "tiny-gru"), max_size=None) as ws:
        sid = json.loads(await ws.recv())["session_id"]
        await send_step(ws, np.ones((2, 3), np.float32))
        await ws.send(json.dumps({"inputs": [[0.5, 0.5, 0.5]] * 10_000}))  # > 64 KiB
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"] == 2


async def test_fast_sender_gets_every_reply_in_order(server: ServerProcess) -> None:
    """Send 300 steps without reading, then read: the server handles them one at a time in
    order (it stops reading while its bounded queue is full) and loses none."""
    x = np.ones((1, 3), np.float32).tolist()
    async with websockets.connect(ws_url(server, "tiny-gru")) as ws:
        json.loads(await ws.recv())
        payload = json.dumps({"inputs": x})
        sender = asyncio.gather(*(ws.send(payload) for _ in range(300)))
        steps = [json.loads(await ws.recv())["steps"] for _ in range(300)]
        await sender
    assert steps == list(range(1, 301))


async def test_any_asgi_server_gets_the_same_stream(
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
) -> None:
    """Without rnnserve's WebSocket protocol (another ASGI server, no direct channel in the
    scope), the stream takes the plain ASGI path: the same hello, replies and errors."""
    client = await make_client()
    app = client._transport.app  # type: ignore[attr-defined]
    seq = RNG.normal(size=(4, 3)).astype(np.float32)
    inbox: asyncio.Queue[dict] = asyncio.Queue()
    for message in ([{"type": "websocket.connect"}]
                    + [{"type": "websocket.receive",
                        "text": json.dumps({"inputs": seq[t:t + 1].tolist(), "id": t})}
                       for t in range(4)]
                    + [{"type": "websocket.receive", "bytes": b"\x00"},
                       {"type": "websocket.disconnect", "code": 1000}]):
        inbox.put_nowait(message)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
             "path": "/v1/models/tiny-lstm/stream", "raw_path": b"/v1/models/tiny-lstm/stream",
             "query_string": b"", "headers": [], "root_path": "", "subprotocols": [],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "extensions": {}}
    await asyncio.wait_for(app(scope, inbox.get, send), 10)
    assert sent[0]["type"] == "websocket.accept"
    texts = [json.loads(m["text"]) for m in sent[1:]]
    assert texts[0]["model"] == "tiny-lstm" and texts[0]["steps"] == 0
    replies, error = texts[1:5], texts[5]
    assert [r["id"] for r in replies] == [0, 1, 2, 3] and replies[-1]["steps"] == 4
    assert error["status"] == 400 and "binary" in error["error"]
    predicted = await client.post("/v1/models/tiny-lstm/predict", json={"inputs": [seq.tolist()]})
    np.testing.assert_allclose(np.concatenate([r["outputs"] for r in replies]),
                               np.asarray(predicted.json()["outputs"][0]), atol=1e-5)


async def test_a_resumed_stream_re_sends_its_unanswered_steps_safely(
        server: ServerProcess) -> None:
    """A client that pipelined a window of steps and lost its connection before reading the
    replies resumes (`?session_id=`), reads which step landed last from the greeting, and
    re-sends every step with its original id: each is answered with its first outputs and
    none is applied twice, so the outputs equal a prediction of the whole sequence."""
    seq = RNG.normal(size=(12, 3)).astype(np.float32)
    async with websockets.connect(ws_url(server, "tiny-gru")) as ws:
        hello = json.loads(await ws.recv())
        assert hello["last_step_id"] is None and hello["replay_window"] >= 16
        for t in range(12):  # all in flight: the window of the server's default 16
            await ws.send(json.dumps({"inputs": seq[t:t + 1].tolist(), "step_id": f"r-{t}"}))
        first = [json.loads(await ws.recv()) for _ in range(12)]  # let every step land
    sid = hello["session_id"]
    async with websockets.connect(ws_url(server, "tiny-gru", f"?session_id={sid}")) as ws:
        again = json.loads(await ws.recv())
        assert again["last_step_id"] == "r-11" and again["steps"] == 12
        for t in range(12):
            await ws.send(json.dumps({"inputs": seq[t:t + 1].tolist(), "step_id": f"r-{t}"}))
        resent = [json.loads(await ws.recv()) for _ in range(12)]
    assert resent == first
    got = np.asarray([o for reply in resent for o in reply["outputs"]])
    np.testing.assert_allclose(got, whole(server, "tiny-gru", seq), atol=1e-5)
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"] == 12
