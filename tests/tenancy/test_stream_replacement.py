"""One stream per session: the latest WebSocket attach wins. The earlier socket's steps in
flight are answered, nothing it sends after the new socket's greeting is applied, and it is
closed with 4409 ("replaced") within 1 s even when idle; also when the two sockets are on
different replicas sharing Redis. Another key cannot take a session over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess, serving
from tests.state.redis_server import REDIS_SERVER, RedisServer

STEP = json.dumps({"inputs": [[0.1, 0.2, 0.3]]})
CLOSE_WITHIN_S = 1.0


def ws_url(server: ServerProcess, session_id: str | None = None, key: str | None = None) -> str:
    url = server.url.replace("http://", "ws://") + "/v1/models/tiny-gru/stream"
    query = [f"session_id={session_id}"] if session_id else []
    query += [f"api_key={key}"] if key else []
    return url + ("?" + "&".join(query) if query else "")


def steps_of(server: ServerProcess, session_id: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(f"{server.url}/v1/sessions/{session_id}", headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["steps"])


async def close_code(ws: Any) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes (at most CLOSE_WITHIN_S): the code and the replies."""
    replies = []
    async with asyncio.timeout(CLOSE_WITHIN_S):
        try:
            while True:
                replies.append(json.loads(await ws.recv()))
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd else None), replies


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("replace") / "server.log") as proc:
        yield proc


async def test_an_idle_old_stream_is_closed_with_4409(server: ServerProcess) -> None:
    async with websockets.connect(ws_url(server)) as old:
        session_id = json.loads(await old.recv())["session_id"]
        for _ in range(3):
            await old.send(STEP)
            assert "outputs" in json.loads(await old.recv())
        async with websockets.connect(ws_url(server, session_id)) as new:
            greeting = json.loads(await new.recv())
            assert greeting["steps"] == 3
            code, replies = await close_code(old)  # idle: nothing in flight
            assert (code, replies) == (4409, [])
            await new.send(STEP)  # the new stream goes on from the same state
            assert json.loads(await new.recv())["steps"] == 4


async def test_in_flight_steps_are_answered_and_later_ones_never_applied(
    server: ServerProcess,
) -> None:
    async with websockets.connect(ws_url(server), max_queue=None) as old:
        session_id = json.loads(await old.recv())["session_id"]
        for i in range(12):  # pipelined: some are in flight when the new socket attaches
            await old.send(json.dumps({"inputs": [[0.1, 0.2, 0.3]], "id": i}))
        async with websockets.connect(ws_url(server, session_id)) as new:
            greeting = json.loads(await new.recv())
            for i in range(12, 20):  # sent after the greeting: must not be applied
                try:
                    await old.send(json.dumps({"inputs": [[0.1, 0.2, 0.3]], "id": i}))
                except ConnectionClosed:
                    break
            code, replies = await close_code(old)
            assert code == 4409
            applied = [r for r in replies if "outputs" in r]
            assert all(r["id"] < 12 for r in applied)
            refused = [r for r in replies if "outputs" not in r]
            assert all(r["status"] == 409 and "not applied" in r["error"] for r in refused)
            # what the old socket got applied is exactly what the session holds
            assert steps_of(server, session_id) == len(applied) == greeting["steps"]
            assert [r["id"] for r in replies] == sorted(r["id"] for r in replies)


async def test_an_unknown_session_id_does_not_disturb_the_holder(server: ServerProcess) -> None:
    async with websockets.connect(ws_url(server)) as holder:
        session_id = json.loads(await holder.recv())["session_id"]
        async with websockets.connect(ws_url(server, session_id + "x")) as stranger:
            assert "unknown session" in json.loads(await stranger.recv())["error"]
        await holder.send(STEP)
        assert json.loads(await holder.recv())["steps"] == 1


async def test_another_key_cannot_take_a_session_over(
    tiny_repo: Path, tmp_path: Path
) -> None:
    with serving(["--models", str(tiny_repo), "--api-keys", "key-a,key-b"],
                 tmp_path / "server.log") as keyed:
        async with websockets.connect(ws_url(keyed, key="key-a")) as owner:
            session_id = json.loads(await owner.recv())["session_id"]
            async with websockets.connect(ws_url(keyed, session_id, key="key-b")) as other:
                assert "unknown session" in json.loads(await other.recv())["error"]
            await owner.send(STEP)  # still A's, still open, still stepping
            assert json.loads(await owner.recv())["steps"] == 1
            async with websockets.connect(ws_url(keyed, session_id, key="key-a")) as again:
                assert json.loads(await again.recv())["steps"] == 1
                assert (await close_code(owner))[0] == 4409


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")
async def test_across_replicas_sharing_redis(tiny_repo: Path, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        args = ["--models", str(tiny_repo), "--state-store", redis.url]
        with serving(args, tmp_path / "a.log") as a, serving(args, tmp_path / "b.log") as b:
            for round_ in range(3):
                async with websockets.connect(ws_url(a)) as old:
                    session_id = json.loads(await old.recv())["session_id"]
                    await old.send(STEP)
                    assert json.loads(await old.recv())["steps"] == 1
                    async with websockets.connect(ws_url(b, session_id)) as new:
                        assert json.loads(await new.recv())["steps"] == 1
                        try:  # at once after the greeting: refused by the store's fence
                            await old.send(STEP)
                        except ConnectionClosed:
                            pass
                        code, replies = await close_code(old)
                        assert code == 4409, round_
                        assert all("outputs" not in r for r in replies)
                        assert steps_of(a, session_id) == 1
                        await new.send(STEP)
                        assert json.loads(await new.recv())["steps"] == 2
    finally:
        redis.stop()
