"""The Python client (rnnserve_client, also rnnserve.client) against a real server: numpy in
and out equal to the server's own answers, sessions, bulk calls, the stream, typed errors, and
a retried step that is replayed rather than applied twice."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from rnnserve.client import (
    AsyncClient,
    BadInput,
    Client,
    NotFound,
    Overloaded,
    RetryPolicy,
    SessionGone,
    Unauthorized,
)

from tests.conftest import ServerProcess

RNG = np.random.default_rng(22)


def width(server: ServerProcess, model: str) -> int:
    """The model's input width, as the server describes it (never assumed)."""
    return int(httpx.get(f"{server.url}/v1/models/{model}").json()["input_size"])


def predicted(server: ServerProcess, model: str, seq: np.ndarray) -> np.ndarray:
    """The server's stateless prediction of a whole sequence, over plain HTTP."""
    r = httpx.post(f"{server.url}/v1/models/{model}/predict", json={"inputs": [seq.tolist()]})
    return np.asarray(r.json()["outputs"][0], dtype=np.float32)


def test_models_and_predict(server: ServerProcess) -> None:
    with Client(server.url) as client:
        names = [m.name for m in client.models()]
        assert "tiny-gru" in names and "tiny-lstm" in names
        info = client.model("tiny-lstm")
        assert info.input_size == width(server, "tiny-lstm") and info.streamable
        a = RNG.normal(size=(7, info.input_size)).astype(np.float32)
        b = RNG.normal(size=(4, info.input_size)).astype(np.float32)
        batch = client.predict("tiny-lstm", np.stack([a, a]))
        assert batch.shape == (2, 7, info.output_size) and batch.dtype == np.float32
        np.testing.assert_array_equal(batch[0], predicted(server, "tiny-lstm", a))
        ragged = client.predict("tiny-lstm", [a, b])
        assert [r.shape[0] for r in ragged] == [7, 4]
        np.testing.assert_array_equal(ragged[1], predicted(server, "tiny-lstm", b))
        np.testing.assert_array_equal(client.predict("tiny-lstm", b), ragged[1])


def test_a_session_steps_as_the_whole_sequence_predicts(server: ServerProcess) -> None:
    seq = RNG.normal(size=(20, width(server, "tiny-gru"))).astype(np.float32)
    with Client(server.url) as client:
        with client.create_session("tiny-gru") as session:
            first = session.step(seq[:5])  # several timesteps at once
            rest = [session.step(reading) for reading in seq[5:]]  # one reading each
            assert session.steps == 20
            got = np.concatenate([first, *rest])
            np.testing.assert_allclose(got, predicted(server, "tiny-gru", seq), atol=1e-5)
            state = session.state()
            assert state and all(v.dtype == np.float32 for v in state.values())
            copy = client.create_session("tiny-gru", state=state)  # resumes from the state
            np.testing.assert_allclose(copy.step(seq[0]), session.step(seq[0]), atol=1e-6)
            copy.delete()
            session.reset()
            assert session.steps == 0
            np.testing.assert_allclose(session.step(seq[:3]),
                                       predicted(server, "tiny-gru", seq[:3]), atol=1e-5)
            gone = session.session_id
        with pytest.raises(SessionGone, match="unknown session"):  # deleted on leaving
            client.session(gone)


async def test_the_async_client_and_its_stream(server: ServerProcess) -> None:
    seq = RNG.normal(size=(60, width(server, "tiny-lstm"))).astype(np.float32)
    async with AsyncClient(server.url, window=8) as client:
        async with client.stream("tiny-lstm") as stream:
            got = [y async for y in stream.feed(seq)]
            assert stream.session_id and stream.replay_window and stream.reconnects == 0
        np.testing.assert_allclose(np.concatenate(got), predicted(server, "tiny-lstm", seq),
                                   atol=1e-5)
        session = await client.session(stream.session_id)  # the session outlives the stream
        assert session.steps == 60
        async with client.stream("tiny-lstm", stream.session_id) as resumed:
            assert resumed.last_step_id is not None  # the greeting names the last step
            more = await resumed.step(seq[0])
        whole = predicted(server, "tiny-lstm", np.concatenate([seq, seq[:1]]))
        np.testing.assert_allclose(more, whole[-1:], atol=1e-5)
        await session.delete()


def test_bulk_create_and_steps(server: ServerProcess) -> None:
    features = width(server, "tiny-gru")
    seqs = RNG.normal(size=(3, 4, features)).astype(np.float32)
    with Client(server.url) as client:
        sessions = client.create_sessions("tiny-gru", 3)
        ids = [s.session_id for s in sessions if not isinstance(s, Exception)]
        assert len(ids) == 3
        got: list[list[np.ndarray]] = [[], [], []]
        for t in range(4):
            results = client.step_many("tiny-gru", [(sid, seqs[i, t]) for i, sid in
                                                    enumerate(ids)])
            for i, y in enumerate(results):
                assert isinstance(y, np.ndarray)
                got[i].append(y)
        for i in range(3):
            np.testing.assert_allclose(np.concatenate(got[i]),
                                       predicted(server, "tiny-gru", seqs[i]), atol=1e-5)
        bad = client.step_many("tiny-gru", [(ids[0], seqs[0, 0]), ("nope", seqs[0, 0])])
        assert isinstance(bad[0], np.ndarray) and isinstance(bad[1], SessionGone)


def test_errors_are_types_with_the_servers_message(server: ServerProcess) -> None:
    features = width(server, "tiny-gru")
    with Client(server.url) as client:
        with pytest.raises(NotFound, match="no-such-model") as model_error:
            client.predict("no-such-model", np.zeros((1, 2, features), np.float32))
        assert not isinstance(model_error.value, SessionGone) and model_error.value.status == 404
        session = client.create_session("tiny-gru")
        with pytest.raises(BadInput) as bad:
            session.step(np.zeros((1, features + 2), np.float32))
        assert bad.value.status == 400 and str(features) in str(bad.value)
        assert session.steps == 0
        session.delete()
        with pytest.raises(SessionGone):
            session.step(np.zeros((1, features), np.float32))


class LoseFirstReply(httpx.AsyncBaseTransport):
    """A network that delivers the first step request and loses its reply (a fault a test
    cannot cause on loopback): the server applied the step, the client never heard."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/step") and self.lost == 0:
            await response.aread()
            self.lost += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_step_whose_reply_was_lost_is_retried_and_replayed(server: ServerProcess) -> None:
    seq = RNG.normal(size=(3, width(server, "tiny-gru"))).astype(np.float32)
    network = LoseFirstReply()
    async with AsyncClient(server.url, transport=network) as client:
        session = await client.create_session("tiny-gru")
        got = [await session.step(reading) for reading in seq]
        assert network.lost == 1 and session.steps == 3  # applied once, answered once
        np.testing.assert_allclose(np.concatenate(got), predicted(server, "tiny-gru", seq),
                                   atol=1e-5)
        await session.delete()


def test_a_wrong_key_is_unauthorized(start_server: Callable[..., ServerProcess],
                                     tiny_repo: object) -> None:
    keyed = start_server("--models", str(tiny_repo), "--api-keys", "right-key")
    with Client(keyed.url, api_key="wrong-key") as client:
        with pytest.raises(Unauthorized, match="API key"):
            client.models()
    with Client(keyed.url, api_key="right-key") as client:
        assert client.models()
        features = client.model("tiny-gru").input_size
        with client.stream("tiny-gru") as stream:  # the key goes with the WebSocket too
            assert stream.step(np.zeros(features, np.float32)).shape[0] == 1


def test_importing_rnnserve_client_loads_no_server_module() -> None:
    import subprocess

    code = ("import sys, rnnserve.client; "
            "bad = sorted(m for m in sys.modules if m.startswith(('rnnserve.', 'fastapi', "
            "'onnxruntime', 'grpc', 'uvicorn')) and m != 'rnnserve.client'); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_overloaded_is_retried_no_sooner_than_retry_after(
        start_server: Callable[..., ServerProcess], tiny_repo: object) -> None:
    """A full server answers 503 with Retry-After (5 s here): the client waits that long
    before it asks again, and raises Overloaded, with the server's message and hint, when
    its retry policy would not wait so long."""
    full = start_server("--models", str(tiny_repo), "--max-sessions", "1")
    with Client(full.url, retry=RetryPolicy(give_up_after_s=1)) as client:
        held = client.create_session("tiny-gru")
        with pytest.raises(Overloaded, match="maximum of 1 live sessions") as busy:
            client.create_session("tiny-gru")
        assert busy.value.status == 503 and busy.value.retry_after_s == 5
    freed = threading.Timer(1.0, lambda: httpx.delete(f"{full.url}/v1/sessions/"
                                                      f"{held.session_id}"))
    with Client(full.url, retry=RetryPolicy(give_up_after_s=30)) as client:
        started = time.monotonic()
        freed.start()
        made = client.create_session("tiny-gru")  # refused once, then made after the wait
        assert time.monotonic() - started >= 4.5  # it did not come back before Retry-After
        assert made.session_id != held.session_id
    freed.join()
