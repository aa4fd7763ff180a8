"""The stream's direct mode at the frame level, against a real server: rnnserve cuts client
frames itself (service/rnnserve/http/ws_protocol.py), so these tests write raw frames over a plain
socket: messages split at every byte boundary or packed many to a write, 16-bit lengths,
pings and fragmented messages in the middle of a stream, binary frames, bad UTF-8; and many
connections stepping at once (the StepCollector) with odd messages among them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from rnnserve.http.ws_protocol import text_frame_header

from tests.conftest import ServerProcess, serving
from tests.http.test_stream import whole

RNG = np.random.default_rng(11)
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--max-body-bytes", "200000"],
                 tmp_path_factory.mktemp("wsf") / "server.log") as proc:
        yield proc


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 requires."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class RawStream:
    """A blocking WebSocket client that writes exactly the bytes it is given."""

    def __init__(self, server: ServerProcess, model: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /v1/models/{model}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.hello = json.loads(self.read()[1])

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (servers do not mask)."""
        first, second = self._take(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return first & 0x0F, self._take(n)

    def reply(self) -> dict:
        opcode, payload = self.read()
        assert opcode == TEXT, (opcode, payload)
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def raw(server: ServerProcess) -> Iterator[RawStream]:
    stream = RawStream(server, "tiny-lstm")
    yield stream
    stream.close()


def step_message(x: np.ndarray, **extra: object) -> bytes:
    return json.dumps({"inputs": x.tolist(), **extra}).encode()


def test_frame_header_matches_rfc_6455_lengths() -> None:
    assert text_frame_header(5) == b"\x81\x05"
    assert text_frame_header(125) == b"\x81\x7d"
    assert text_frame_header(126) == b"\x81\x7e\x00\x7e"
    assert text_frame_header(65535) == b"\x81\x7e\xff\xff"
    assert text_frame_header(65536) == b"\x81\x7f" + (65536).to_bytes(8, "big")


def test_messages_split_at_every_byte_or_packed_in_one_write(
    server: ServerProcess, raw: RawStream
) -> None:
    seq = RNG.normal(size=(12, 3)).astype(np.float32)
    frames = [frame(TEXT, step_message(seq[t:t + 1], id=t)) for t in range(12)]
    for byte in frames[0]:  # one byte per write: the parser waits for the rest
        raw.sock.sendall(bytes([byte]))
    first = raw.reply()
    raw.sock.sendall(b"".join(frames[1:]))  # eleven messages in one write
    replies = [first] + [raw.reply() for _ in range(11)]
    assert [r["id"] for r in replies] == list(range(12))
    assert [r["steps"] for r in replies] == list(range(1, 13))
    got = np.concatenate([np.asarray(r["outputs"]) for r in replies])
    np.testing.assert_allclose(got, whole(server, "tiny-lstm", seq), atol=1e-5)


def test_long_messages_use_16_bit_lengths_both_ways(raw: RawStream) -> None:
    label = "x" * 60_000  # echoed: the request and the reply both need a 16-bit length
    raw.sock.sendall(frame(TEXT, step_message(np.ones((1, 3), np.float32), id=label)))
    reply = raw.reply()
    assert reply["id"] == label and reply["steps"] == 1


def test_ping_and_fragmented_message_mid_stream(raw: RawStream) -> None:
    """A pong is answered at once, so it may come before the reply of an earlier step."""
    x = np.ones((1, 3), np.float32)
    raw.sock.sendall(frame(TEXT, step_message(x)) + frame(PING, b"are you there"))
    got = sorted([raw.read(), raw.read()])
    assert got[0][0] == TEXT and json.loads(got[0][1])["steps"] == 1
    assert got[1] == (PONG, b"are you there")
    message = step_message(x, id="split")
    raw.sock.sendall(frame(TEXT, message[:10], fin=False) + frame(PING, b"p")
                     + frame(CONT, message[10:]))
    assert raw.read() == (PONG, b"p")
    reply = raw.reply()
    assert reply["id"] == "split" and reply["steps"] == 2
    raw.sock.sendall(frame(TEXT, step_message(x)))  # whole frames again after that
    assert raw.reply()["steps"] == 3


def test_binary_frame_gets_an_error_and_the_stream_goes_on(raw: RawStream) -> None:
    raw.sock.sendall(frame(BINARY, b"\x00\x01") + frame(TEXT, step_message(np.ones((1, 3)))))
    error = raw.reply()
    assert error["status"] == 400 and "binary" in error["error"]
    assert raw.reply()["steps"] == 1


def test_invalid_utf8_closes_with_1007(server: ServerProcess, raw: RawStream) -> None:
    sid = raw.hello["session_id"]
    raw.sock.sendall(frame(TEXT, step_message(np.ones((1, 3)))))
    assert raw.reply()["steps"] == 1
    raw.sock.sendall(frame(TEXT, b'{"inputs": "\xff\xfe"}'))
    opcode, payload = raw.read()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 1007
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"] == 1


def test_close_frame_ends_the_stream_cleanly(raw: RawStream) -> None:
    raw.sock.sendall(frame(CLOSE, struct.pack("!H", 1000)))
    opcode, payload = raw.read()
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 1000


async def test_many_connections_at_once_with_odd_messages_among_them(
    server: ServerProcess,
) -> None:
    """32 connections send at the same moment, round after round, so their steps meet in the
    same batches: some send two timesteps, one sends a string and one a NaN-making overflow,
    one repeats a step id. Each answer is what that session alone would get."""
    n, rounds = 32, 4
    seqs = RNG.normal(size=(n, rounds * 2, 3)).astype(np.float32)
    urls = f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream"
    sockets = [await websockets.connect(urls, compression=None) for _ in range(n)]
    try:
        for ws in sockets:
            json.loads(await ws.recv())
        fed: list[list[np.ndarray]] = [[] for _ in range(n)]

        async def one(i: int, r: int) -> dict:
            ws = sockets[i]
            x = seqs[i, 2 * r:2 * r + (2 if i % 4 == 0 else 1)]
            if i == 5 and r == 1:
                await ws.send(json.dumps({"inputs": [[1, "2", 3]]}))
                return json.loads(await ws.recv())
            if i == 6 and r == 2:
                await ws.send('{"inputs": [[1e39, 0, 0]]}')
                return json.loads(await ws.recv())
            if i == 7 and r == 3:  # the same step id as the previous round: a replay
                await ws.send(json.dumps({"inputs": x.tolist(), "step_id": "s2"}))
                return json.loads(await ws.recv())
            extra = {"step_id": f"s{r}"} if i == 7 else {}
            await ws.send(json.dumps({"inputs": x.tolist(), **extra}))
            fed[i].append(x)
            return json.loads(await ws.recv())

        answers = [await asyncio.gather(*(one(i, r) for i in range(n))) for r in range(rounds)]
    finally:
        for ws in sockets:
            await ws.close()
    assert answers[1][5]["status"] == 400 and "strings" in answers[1][5]["error"]
    assert answers[2][6]["status"] == 400 and "finite" in answers[2][6]["error"]
    assert answers[3][7]["outputs"] == answers[2][7]["outputs"]  # replayed, not re-run
    assert answers[3][7]["steps"] == answers[2][7]["steps"]
    for i in range(n):
        got = [np.asarray(answers[r][i]["outputs"]) for r in range(rounds)
               if "outputs" in answers[r][i] and not (i == 7 and r == 3)]
        expected = whole(server, "tiny-gru", np.concatenate(fed[i]))
        np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-5)
        assert answers[-1][i].get("steps", answers[-2][i].get("steps")) == sum(
            len(x) for x in fed[i])


async def test_client_gone_mid_stream_leaves_others_and_its_session_sound(
    server: ServerProcess,
) -> None:
    """A client writes 40 steps and vanishes without reading a reply while another streams
    beside it: the other gets exactly its own answers; the vanished client's session holds
    a whole number of its steps (each applied entirely or not at all) and still steps."""
    gone = RawStream(server, "tiny-gru")
    sid = gone.hello["session_id"]
    x = np.ones((1, 3), np.float32)
    gone.sock.sendall(b"".join(frame(TEXT, step_message(x)) for _ in range(40)))
    gone.sock.close()
    seq = RNG.normal(size=(20, 3)).astype(np.float32)
    url = f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream"
    async with websockets.connect(url, compression=None) as ws:
        json.loads(await ws.recv())
        got = []
        for t in range(20):
            await ws.send(json.dumps({"inputs": seq[t:t + 1].tolist()}))
            got.append(json.loads(await ws.recv())["outputs"])
    np.testing.assert_allclose(np.concatenate(got), whole(server, "tiny-gru", seq), atol=1e-5)
    steps = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"]
    assert 0 <= steps <= 40
    state = httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()["state"]
    expected = httpx.post(f"{server.url}/v1/models/tiny-gru/predict", json={
        "inputs": [np.ones((steps, 3)).tolist()], "return_state": True}).json() if steps else None
    if expected is not None:
        np.testing.assert_allclose(np.asarray(state["h0"]["data"]).ravel(),
                                   np.asarray(expected["states"][0]["h0"]["data"]).ravel(),
                                   atol=1e-5)
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/step", json={"inputs": x.tolist()})
    assert r.json()["steps"] == steps + 1


async def test_compression_is_off_unless_asked_and_works_when_on(
    server: ServerProcess, tiny_repo: Path, tmp_path: Path,
) -> None:
    """Clients offer permessage-deflate by default; rnnserve declines it (small messages, and
    its own frame parser), unless started with --ws-compression, where compressed frames take
    the library's path and give the same answers."""
    seq = RNG.normal(size=(6, 3)).astype(np.float32)

    async def stream(url: str) -> tuple[str | None, np.ndarray]:
        async with websockets.connect(url) as ws:  # offers permessage-deflate
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            json.loads(await ws.recv())
            got = []
            for t in range(6):
                await ws.send(json.dumps({"inputs": seq[t:t + 1].tolist()}))
                got.append(json.loads(await ws.recv())["outputs"])
        return extensions, np.concatenate(got)

    plain, got = await stream(f"ws://127.0.0.1:{server.port}/v1/models/tiny-gru/stream")
    assert plain is None
    np.testing.assert_allclose(got, whole(server, "tiny-gru", seq), atol=1e-5)
    with serving(["--models", str(tiny_repo), "--ws-compression"],
                 tmp_path / "server.log") as compressing:
        url = f"ws://127.0.0.1:{compressing.port}/v1/models/tiny-gru/stream"
        deflate, got = await stream(url)
        assert deflate is not None and "permessage-deflate" in deflate
        np.testing.assert_allclose(got, whole(compressing, "tiny-gru", seq), atol=1e-5)


async def test_overloaded_stream_answers_503_with_retry_after_and_keeps_state(
    tiny_repo: Path, tmp_path: Path,
) -> None:
    """With room for 2 queued rows, 12 connections stepping at once: the steps that do not fit
    get {"status": 503, "retry_after_s"} and leave their session as it was; the others apply."""
    with serving(["--models", str(tiny_repo), "--max-queue", "2", "--max-delay-ms", "20"],
                 tmp_path / "server.log") as small:
        url = f"ws://127.0.0.1:{small.port}/v1/models/tiny-gru/stream"
        sockets = [await websockets.connect(url, compression=None) for _ in range(12)]
        try:
            ids = [json.loads(await ws.recv())["session_id"] for ws in sockets]
            message = json.dumps({"inputs": [[0.1, 0.2, 0.3]]})
            codes = []
            before = dict.fromkeys(ids, 0)
            for _ in range(3):  # a burst, three times
                await asyncio.gather(*(ws.send(message) for ws in sockets))
                replies = [json.loads(await ws.recv()) for ws in sockets]
                codes += [reply.get("status", 200) for reply in replies]
                for sid, reply in zip(ids, replies, strict=True):
                    steps = httpx.get(f"{small.url}/v1/sessions/{sid}").json()["steps"]
                    if "error" in reply:
                        assert reply["status"] == 503 and reply["retry_after_s"] > 0
                        assert steps == before[sid]
                    else:
                        assert reply["steps"] == steps == before[sid] + 1
                    before[sid] = steps
        finally:
            for ws in sockets:
                await ws.close()
    assert 503 in codes and 200 in codes


def test_unmasked_client_frame_closes_with_1002(raw: RawStream) -> None:
    payload = step_message(np.ones((1, 3)))
    raw.sock.sendall(bytes([0x81, len(payload)]) + payload)  # no mask: a protocol error
    opcode, body = raw.read()
    assert opcode == CLOSE and struct.unpack("!H", body[:2])[0] == 1002
