"""Repeated steps (http/repeat_steps.py): a v2 sequence step whose bytes are the connection's
last lane step's but for the input values is taken without parsing it again. What a client
relies on: every such step is answered as the whole way would answer it (outputs of the whole
sequence, a request id of its own, a value refused and the session unchanged, a key that was
removed refused), and the server really takes them that way (the protocol fed in memory: its
reader parses only the requests that are not repeats)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from rnnserve.engine import Engine
from rnnserve.http.sequence_lane import SequenceLane
from rnnserve.http.whole_reads import WholeReader
from rnnserve.settings import Settings

from bench.http_path import MODEL, MODELS, MemoryTransport, connector
from tests.conftest import ServerProcess, serving
from tests.http.test_key_rotation import KEY_A, KEY_B, bearer, wait_until, write_keys
from tests.http.test_sequence_lane import FEATURES, Link, lane_count, output_of, step_body, whole
from tests.http.test_sequence_lane import MODEL as MODEL_TINY


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("repeats") / "server.log") as proc:
        yield proc


def test_repeated_steps_answer_as_the_whole_way_with_ids_of_their_own(
        server: ServerProcess) -> None:
    seq = np.random.default_rng(11).standard_normal((12, FEATURES)).astype(np.float32)
    before = lane_count(server)
    got, ids = [], []
    with Link(server) as client:
        body, headers = step_body(seq[:1], sequence_id=7001, sequence_start=True)
        got.append(output_of(client.post(body, headers)))
        for t in range(1, 11):  # the same header each time: repeats from the third request
            body, headers = step_body(seq[t:t + 1], sequence_id=7001)
            answer = client.post(body, headers)
            got.append(output_of(answer))
            ids.append(answer.headers["x-request-id"])
        body, headers = step_body(seq[11:12], sequence_id=7001, sequence_end=True)
        got.append(output_of(client.post(body, headers)))
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), whole(server, seq),
                               atol=1e-5)
    assert len(set(ids)) == len(ids) == 10 and all(ids)  # not the kept step's id
    assert lane_count(server) - before == 10


def test_a_repeat_with_a_value_the_checks_refuse_changes_nothing(server: ServerProcess) -> None:
    seq = np.random.default_rng(12).standard_normal((5, FEATURES)).astype(np.float32)
    got = []
    with Link(server) as client:
        body, headers = step_body(seq[:1], sequence_id=7002, sequence_start=True)
        got.append(output_of(client.post(body, headers)))
        for t in (1, 2):
            body, headers = step_body(seq[t:t + 1], sequence_id=7002)
            got.append(output_of(client.post(body, headers)))
        for bad in (np.nan, np.inf):  # the same bytes as the last step but for the values
            body, headers = step_body(np.full((1, FEATURES), bad, np.float32),
                                      sequence_id=7002)
            refused = client.post(body, headers)
            assert refused.status_code == 400 and "finite" in refused.text, refused.text
        for t in (3, 4):  # the session is where it was before the refusals
            body, headers = step_body(seq[t:t + 1], sequence_id=7002)
            got.append(output_of(client.post(body, headers)))
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), whole(server, seq),
                               atol=1e-5)


def test_a_repeat_with_a_key_removed_meanwhile_is_refused(tmp_path: Path,
                                                          tiny_repo: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, KEY_A, KEY_B)
    seq = np.random.default_rng(13).standard_normal((4, FEATURES)).astype(np.float32)
    with serving(["--models", str(tiny_repo), "--api-keys-file", str(keys),
                  "--api-keys-poll-s", "0"], tmp_path / "server.log") as server, \
            Link(server) as client:
        got = []
        for t in range(3):  # a start, a lane step, a repeat
            body, headers = step_body(seq[t:t + 1], sequence_id=7003, sequence_start=t == 0)
            got.append(output_of(client.post(body, {**headers, **bearer(KEY_A)})))
        write_keys(keys, KEY_B)
        server.proc.send_signal(signal.SIGHUP)
        wait_until("A removed", lambda: "0 added, 1 removed" in server.log(), timeout=5)
        body, headers = step_body(seq[3:4], sequence_id=7003)
        refused = client.post(body, {**headers, **bearer(KEY_A)})
        assert refused.status_code == 401, refused.text
        write_keys(keys, KEY_A, KEY_B)  # back: its session was not stepped meanwhile
        server.proc.send_signal(signal.SIGHUP)
        wait_until("A back", lambda: "1 added, 0 removed" in server.log(), timeout=5)
        got.append(output_of(client.post(body, {**headers, **bearer(KEY_A)})))
        predicted = httpx.post(f"{server.url}/v1/models/{MODEL_TINY}/predict",
                               json={"inputs": [seq.tolist()]}, headers=bearer(KEY_B),
                               timeout=30)
        assert predicted.status_code == 200, predicted.text
        np.testing.assert_allclose(np.concatenate([g[0] for g in got]),
                                   np.asarray(predicted.json()["outputs"][0]), atol=1e-5)


class Answers(MemoryTransport):
    """A transport in memory that keeps each whole response (status, head, body)."""

    def __init__(self, answered: Any) -> None:
        super().__init__(0, answered)
        self.answers: list[tuple[int, bytes, bytes]] = []
        self._pending = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += bytes(data)
        head, _, rest = self._pending.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"\r\ncontent-length: ", 1)[1].split(b"\r\n", 1)[0])
        if len(rest) >= length:
            self._pending = rest[length:]
            self.answers.append((int(head.split(b" ")[1]), head, rest[:length]))
        super().write(data)


def v2_step(x: np.ndarray, **parameters: object) -> bytes:
    """One whole request of the model in bench.http_path's repository (10 features)."""
    data = np.ascontiguousarray(x, "<f4").tobytes()
    head = orjson.dumps({
        "parameters": parameters,
        "inputs": [{"name": "input", "shape": [1, len(x), len(x[0])], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    lines = [f"POST /v2/models/{MODEL}/infer HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Length: {len(head) + len(data)}",
             f"Inference-Header-Content-Length: {len(head)}",
             "Content-Type: application/octet-stream"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + head + data


def output_bytes(answer: tuple[int, bytes, bytes]) -> bytes:
    status, head, body = answer
    assert status == 200, head + body
    split = int(head.lower().split(b"inference-header-content-length: ")[1].split(b"\r\n")[0])
    return body[split:]


def test_repeats_are_not_parsed_and_answer_as_steps_parsed_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The protocol as `rnnserve serve` builds it, fed in memory, two sequences on two
    connections with the same inputs: one sends the same header on every step (repeats after
    its first lane step: neither the reader nor the lane's decoding `take` sees them), the
    other a new step id on every step (its
    bytes differ: each parsed). Their outputs are the same bytes, every answer a 200."""
    parsed: list[bytes] = []
    read = WholeReader.read

    def counted(self: WholeReader, data: bytes, protocol: Any, on_response: Any) -> Any:
        parsed.append(data)
        return read(self, data, protocol, on_response)

    monkeypatch.setattr(WholeReader, "read", counted)
    taken: list[object] = []
    take = SequenceLane.take

    def counted_take(self: SequenceLane, *args: Any) -> Any:
        taken.append(args)
        return take(self, *args)

    monkeypatch.setattr(SequenceLane, "take", counted_take)
    seq = np.random.default_rng(14).standard_normal((9, 10)).astype(np.float32)

    async def scenario() -> tuple[list[list[tuple[int, bytes, bytes]]], list[tuple[int, int]],
                                  bool]:
        engine = Engine(Settings(models=MODELS, grpc_port=0, log_level="warning"))
        engine.start()
        await engine.open()
        try:
            connect = connector(engine)
            arrived = asyncio.Event()
            answers, parses, kept = [], [], []
            for sequence, with_ids in ((1, False), (2, True)):
                transport = Answers(arrived.set)
                protocol = connect(transport)
                before = len(parsed), len(taken)
                for t in range(9):
                    arrived.clear()
                    extra = {"step_id": f"s{t}"} if with_ids and 0 < t < 8 else {}
                    protocol.data_received(v2_step(
                        seq[t:t + 1], sequence_id=sequence, sequence_start=t == 0,
                        sequence_end=t == 8, **extra))
                    await asyncio.wait_for(arrived.wait(), 30)
                answers.append(transport.answers)
                parses.append((len(parsed) - before[0], len(taken) - before[1]))
                kept.append(protocol.repeat is not None)
                protocol.connection_lost(None)
            return answers, parses, kept == [True, True]
        finally:
            await engine.aclose()
            engine.close()

    (repeated, parsed_whole), parses, kept = asyncio.run(scenario())
    assert [a[0] for a in repeated + parsed_whole] == [200] * 18
    assert [output_bytes(a) for a in repeated] == [output_bytes(a) for a in parsed_whole]
    # parsed and taken by the lane's `take`: the start, the first lane step and the end; and
    # every step of the other
    assert parses == [(3, 3), (9, 9)]
    assert kept  # (the one with step ids kept its last lane step too: it never matched)


def test_a_repeat_after_its_model_was_unloaded_or_loaded_again_answers_as_any_request(
        tmp_path: Path, tiny_repo: Path) -> None:
    """The version a connection's repeat stepped is checked on every repeat: unloaded (its
    sessions retired at once), and then loaded again (a new instance), the repeat is answered
    as the same request on a fresh connection is, and the sequence, started again, takes the
    lane and repeats on the new instance."""
    seq = np.random.default_rng(15).standard_normal((6, FEATURES)).astype(np.float32)
    url = f"/v2/models/{MODEL_TINY}/infer"
    with serving(["--models", str(tiny_repo), "--model-control", "explicit", "--load-model",
                  MODEL_TINY, "--retire-grace-s", "0"], tmp_path / "server.log") as server, \
            Link(server) as client:
        for t in range(3):  # a start, a lane step, a repeat
            body, headers = step_body(seq[t:t + 1], sequence_id=7004, sequence_start=t == 0)
            output_of(client.post(body, headers))
        body, headers = step_body(seq[3:4], sequence_id=7004)
        answers = []
        for action in ("unload", "load"):
            done = httpx.post(f"{server.url}/v2/repository/models/{MODEL_TINY}/{action}",
                              timeout=30)
            assert done.status_code == 200, done.text
            mine = client.post(body, headers)
            fresh = httpx.post(server.url + url, content=body, headers=headers, timeout=30)
            answers.append((mine.status_code, fresh.status_code))
            if action == "unload":  # retired at once: refused alike
                assert mine.status_code != 200 and mine.json() == fresh.json(), mine.content
        assert answers[0][0] == answers[0][1] and answers[1] == (200, 200)  # (its version
        # serves the session again once loaded: the repeat is stepped as the fresh request is)
        before = lane_count(server)
        got = []
        for t in range(6):  # started again on the loaded instance: the lane and repeats
            body, headers = step_body(seq[t:t + 1], sequence_id=7004, sequence_start=t == 0)
            got.append(output_of(client.post(body, headers)))
        assert lane_count(server) - before == 5
        np.testing.assert_allclose(np.concatenate([g[0] for g in got]), whole(server, seq),
                                   atol=1e-5)
