"""API keys rotate without a restart: a real server with two keys A and B in --api-keys-file.
Removing A from the file stops A at once over REST, KServe v2 HTTP, WebSocket and gRPC (open
streams of A end too), B goes on and still cannot see A's sessions, and adding A back gives A
its sessions with their state. The file is re-read when it changes and on SIGHUP; an emptied
file never opens the server and a vanished one keeps its keys."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import websockets
from tritonclient.utils import InferenceServerException
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerProcess, serving

KEY_A, KEY_B = "rotate-key-alpha-5c1d", "rotate-key-bravo-93e2"
X1, X2 = [[0.1, 0.2, 0.3]], [[-0.4, 0.5, 0.6]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path: Path, *keys: str) -> None:
    """As an operator should: a new file renamed over the old one (never half-written)."""
    fresh = path.with_suffix(".new")
    fresh.write_text("".join(f"{k}\n" for k in keys))
    os.replace(fresh, path)


def v2_body(x: list[list[float]], sequence_id: int, start: bool = False) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, len(x), 3], "datatype": "FP32",
                        "data": [v for row in x for v in row]}],
            "parameters": {"sequence_id": sequence_id, "sequence_start": start}}


def ws_outcome(server: ServerProcess, key: str, *, query: bool = False) -> str:
    """"open" when a stream with this key opens (subprotocol, or ?api_key= with `query`),
    else the handshake's HTTP status."""
    url = f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream"

    async def run() -> str:
        try:
            if query:
                async with websockets.connect(f"{url}?api_key={key}") as ws:
                    await ws.recv()
            else:
                async with websockets.connect(url, subprotocols=[  # type: ignore[list-item]
                        "rnnserve", f"rnnserve.key.{key}"]) as ws:
                    await ws.recv()
        except InvalidStatus as exc:
            return str(exc.response.status_code)
        return "open"

    return asyncio.run(run())


def grpc_code(server: ServerProcess, key: str) -> str:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.get_model_metadata("tiny-gru", headers={"authorization": f"Bearer {key}"})
        return "OK"
    except InferenceServerException as exc:
        return str(exc.status())
    finally:
        client.close()


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_a_removed_key_stops_everywhere_and_gets_its_sessions_back(tmp_path: Path,
                                                                   tiny_repo: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, KEY_A, KEY_B)
    with serving(["--models", str(tiny_repo), "--api-keys-file", str(keys)],  # poll: 1 s
                 tmp_path / "server.log", grpc=True) as server:
        http = httpx.Client(base_url=server.url, timeout=10)
        sid = http.post("/v1/models/tiny-gru/sessions", headers=bearer(KEY_A)).json()[
            "session_id"]
        assert http.post(f"/v1/sessions/{sid}/step", json={"inputs": X1},
                         headers=bearer(KEY_A)).json()["steps"] == 1
        assert http.post("/v2/models/tiny-gru/infer", json=v2_body(X1, 77, start=True),
                         headers=bearer(KEY_A)).status_code == 200
        assert ws_outcome(server, KEY_A) == "open" and grpc_code(server, KEY_A) == "OK"

        # streams of A that are open when A is removed
        grpc_stream = grpcclient.InferenceServerClient(server.grpc_url)
        stream_errors: list[str] = []
        grpc_stream.start_stream(callback=lambda result, error: stream_errors.append(str(error)),
                                 headers={"authorization": f"Bearer {KEY_A}"})
        tensor = grpcclient.InferInput("input", [1, 1, 3], "FP32")
        tensor.set_data_from_numpy(np.asarray([X1], np.float32))
        grpc_stream.async_stream_infer("tiny-gru", [tensor], sequence_id=900,
                                       sequence_start=True)
        wait_until("the gRPC stream's first answer", lambda: len(stream_errors) == 1)
        assert stream_errors == ["None"]

        async def open_socket_is_closed() -> tuple[int, str]:
            url = f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream?api_key={KEY_A}"
            async with websockets.connect(url) as ws:
                await ws.recv()  # the session
                write_keys(keys, KEY_B)  # A removed while this socket is open
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), timeout=5)
                assert closed.value.rcvd is not None
                return closed.value.rcvd.code, closed.value.rcvd.reason

        code, reason = asyncio.run(open_socket_is_closed())
        assert (code, reason) == (1008, "API key revoked")

        wait_until("A refused over REST", lambda: http.get(
            "/v1/models", headers=bearer(KEY_A)).status_code == 401)
        assert http.post(f"/v1/sessions/{sid}/step", json={"inputs": X2},
                         headers=bearer(KEY_A)).status_code == 401
        assert http.post("/v2/models/tiny-gru/infer", json=v2_body(X2, 77),
                         headers=bearer(KEY_A)).status_code == 401
        assert ws_outcome(server, KEY_A) == "403"
        assert ws_outcome(server, KEY_A, query=True) == "403"
        assert grpc_code(server, KEY_A) == "StatusCode.UNAUTHENTICATED"
        grpc_stream.async_stream_infer("tiny-gru", [tensor], sequence_id=900)
        wait_until("the gRPC stream's end", lambda: len(stream_errors) == 2)
        assert "UNAUTHENTICATED" in stream_errors[1] and "API key" in stream_errors[1]
        grpc_stream.stop_stream()
        grpc_stream.close()
        # B goes on and still cannot see A's session
        assert http.get("/v1/models", headers=bearer(KEY_B)).status_code == 200
        assert ws_outcome(server, KEY_B) == "open" and grpc_code(server, KEY_B) == "OK"
        assert http.get(f"/v1/sessions/{sid}", headers=bearer(KEY_B)).status_code == 404

        write_keys(keys, KEY_A, KEY_B)
        wait_until("A accepted again", lambda: http.get(
            "/v1/models", headers=bearer(KEY_A)).status_code == 200)
        step = http.post(f"/v1/sessions/{sid}/step", json={"inputs": X2}, headers=bearer(KEY_A))
        v2 = http.post("/v2/models/tiny-gru/infer", json=v2_body(X2, 77), headers=bearer(KEY_A))
        whole = http.post("/v1/models/tiny-gru/predict", json={"inputs": [X1 + X2]},
                          headers=bearer(KEY_A)).json()["outputs"][0]
        assert step.json()["steps"] == 2  # the same session, its state kept:
        np.testing.assert_allclose(step.json()["outputs"][0], whole[1], atol=1e-5)
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], whole[1], atol=1e-5)
        http.close()
    log = server.log()
    assert "API keys reloaded" in log and "0 added, 1 removed, 1 in total" in log
    assert "1 added, 0 removed, 2 in total" in log
    assert KEY_A not in log and KEY_B not in log


def test_sighup_reloads_the_keys_file_at_once(tmp_path: Path, tiny_repo: Path) -> None:
    """With polling off (--api-keys-poll-s 0) only SIGHUP can have made the change."""
    keys = tmp_path / "keys"
    write_keys(keys, KEY_A, KEY_B)
    with serving(["--models", str(tiny_repo), "--api-keys-file", str(keys),
                  "--api-keys-poll-s", "0"], tmp_path / "server.log") as server:
        write_keys(keys, KEY_B)
        time.sleep(1.5)  # longer than the default poll: nothing re-reads the file by itself
        assert httpx.get(server.url + "/v1/models", headers=bearer(KEY_A)).status_code == 200
        server.proc.send_signal(signal.SIGHUP)
        wait_until("A refused after SIGHUP", lambda: httpx.get(
            server.url + "/v1/models", headers=bearer(KEY_A)).status_code == 401, timeout=2)
        assert httpx.get(server.url + "/v1/models", headers=bearer(KEY_B)).status_code == 200
        server.proc.send_signal(signal.SIGHUP)  # nothing changed: said so, still serving
        wait_until("the no-change line", lambda: "no change" in server.log(), timeout=2)
        assert server.proc.poll() is None
    assert "(SIGHUP): 0 added, 1 removed, 1 in total" in server.log()


def test_an_emptied_or_vanished_keys_file_never_opens_the_server(tmp_path: Path,
                                                                 tiny_repo: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, KEY_A)
    with serving(["--models", str(tiny_repo), "--api-keys-file", str(keys),
                  "--api-keys-poll-s", "0.1"], tmp_path / "server.log") as server:
        def status(key: str | None) -> int:
            return httpx.get(server.url + "/v1/models",
                             headers=bearer(key) if key else {}).status_code

        keys.unlink()  # vanished: the keys it had stay, the error is logged once
        time.sleep(1.0)  # ten polls
        assert status(KEY_A) == 200 and status(None) == 401
        assert server.log().count("cannot read the API keys file") == 1

        write_keys(keys)  # back, but empty: no key is valid, and none is not enough either
        wait_until("A refused", lambda: status(KEY_A) == 401)
        assert status(None) == 401 and status(KEY_B) == 401
        assert "readable again" in server.log() and "no API keys are left" in server.log()

        write_keys(keys, KEY_A)
        wait_until("A accepted", lambda: status(KEY_A) == 200)
        assert status(None) == 401
    assert KEY_A not in server.log()


# -- the keys file in-process: what the stat cannot tell, and what is logged ------------------


def test_a_rewrite_that_keeps_the_stat_is_still_seen(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Rewritten in place with the same size and mtime (two writes within one timestamp tick):
    the stat is unchanged, but a file this recent is read on every poll."""
    from rnnserve.keyfile import key_ring

    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_A}\n")
    ring, key_file = key_ring("fixed-flag-key", keys, poll_s=1)
    assert key_file is not None and ring.owner(KEY_A) and ring.owner("fixed-flag-key")
    before = keys.stat()
    assert len(KEY_A) == len(KEY_B)
    with open(keys, "r+") as f:  # same inode, same size
        f.write(f"{KEY_B}\n")
    os.utime(keys, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = keys.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    with caplog.at_level("INFO", logger="rnnserve.keys"):
        key_file.poll()
    assert ring.owner(KEY_A) is None and ring.owner("fixed-flag-key")  # --api-keys stay
    assert "1 added, 1 removed, 2 in total" in caplog.text
    assert KEY_A not in caplog.text


def test_a_file_that_is_not_text_keeps_the_keys(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from rnnserve.keyfile import key_ring

    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_A}\n")
    ring, key_file = key_ring("", keys, poll_s=1)
    assert key_file is not None
    keys.write_bytes(KEY_B.encode() + b"\xff\n")
    with caplog.at_level("INFO", logger="rnnserve.keys"):
        for _ in range(3):
            key_file.poll()
    assert ring.owner(KEY_A) and ring.owner(KEY_B) is None
    assert caplog.text.count("not UTF-8 text") == 1 and KEY_B not in caplog.text
