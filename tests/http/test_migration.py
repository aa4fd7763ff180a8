"""Session migration over REST, on real servers with the memory and the Redis store: a session
shorter than its version's `rewarm_steps` migrates to exactly what a session run on the target
version from its start holds (its next outputs equal to 1e-4), one by one and in bulk; a
version that keeps no inputs, a target with other inputs, and an unknown version are refused
with what to do."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import websockets
from rnnserve.client import AsyncClient
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess, serving
from tests.grpc.test_grpc_stream_steps import Stream
from tests.state.redis_server import REDIS_SERVER, RedisServer

WINDOW = 8
FEATURES = ["a", "b", "c"]


def build_repository(tiny_repo: Path, root: Path) -> Path:
    """moving: versions 1 and 2 (tiny-lstm's, other weights, the same features) keeping the
    last 8 inputs; 3 with 4 inputs a timestep; 4 with version 2's weights but other feature
    names. fixed: tiny-lstm's two versions, keeping no inputs. capped: tiny-lstm's two
    versions keeping inputs, one live session a version at most."""
    import torch
    from rnnserve.export.onnx_export import export_recurrent
    from torch import nn

    for version in ("1", "2", "4"):
        shutil.copytree(tiny_repo / "tiny-lstm" / ("2" if version == "4" else version),
                        root / "moving" / version)
    torch.manual_seed(9)
    (root / "moving" / "3").mkdir()
    export_recurrent(nn.LSTM(4, 8, num_layers=2, batch_first=True), nn.Linear(8, 1),
                     root / "moving" / "3" / "model.onnx")
    (root / "moving" / "model.json").write_text(json.dumps(
        {"rewarm_steps": WINDOW, "features": FEATURES}))
    (root / "moving" / "4" / "model.json").write_text(json.dumps({"features": ["a", "b", "d"]}))
    shutil.copytree(tiny_repo / "tiny-lstm", root / "fixed")
    shutil.copytree(tiny_repo / "tiny-lstm", root / "capped")
    (root / "capped" / "model.json").write_text(json.dumps(
        {"rewarm_steps": WINDOW, "max_sessions": 1}))
    return root


def rows(count: int, seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((count, 3)).round(4).tolist()


def session(client: httpx.Client, model: str, version: int) -> str:
    answer = client.post(f"/v1/models/{model}/sessions", json={"version": version})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["session_id"])


def step(client: httpx.Client, session_id: str, inputs: list[list[float]]) -> np.ndarray:
    answer = client.post(f"/v1/sessions/{session_id}/step", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["outputs"])


def state(client: httpx.Client, session_id: str) -> dict[str, np.ndarray]:
    answer = client.get(f"/v1/sessions/{session_id}/state")
    assert answer.status_code == 200, answer.text
    return {name: np.asarray(t["data"]) for name, t in answer.json()["state"].items()}


def assert_same_session(client: httpx.Client, moved: str, reference: str, seed: int) -> None:
    """The migrated session holds the reference's state, and its next step answers alike."""
    ours, theirs = state(client, moved), state(client, reference)
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-4)
    after = rows(2, seed)
    np.testing.assert_allclose(step(client, moved, after), step(client, reference, after),
                               atol=1e-4)


@pytest.fixture(scope="module")
def repository(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tiny_repo, tmp_path_factory.mktemp("migration-models"))


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, repository: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    logs = tmp_path_factory.mktemp("migration-logs")
    args = ["--models", str(repository)]
    if request.param == "memory":
        with serving(args, logs / "server.log", grpc=True) as server:
            yield server
        return
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis migration test needs one")
    pytest.importorskip("redis", reason="redis-py is not installed (pip install .[redis])")
    redis = RedisServer(logs / "redis")
    redis.start()
    try:
        with serving([*args, "--state-store", redis.url], logs / "server.log",
                     grpc=True) as server:
            yield server
    finally:
        redis.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_a_session_shorter_than_the_window_migrates_exactly(client: httpx.Client) -> None:
    history = rows(6, seed=1)
    moved, reference = session(client, "moving", 1), session(client, "moving", 2)
    for part in (history[:4], history[4:]):  # two steps: the window spans steps
        step(client, moved, part)
        step(client, reference, part)
    before = state(client, moved)

    answer = client.post(f"/v1/sessions/{moved}/migrate", json={"version": 2})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["session_id"], body["version"], body["replayed_steps"]) == (moved, 2, 6)
    assert client.get(f"/v1/sessions/{moved}").json()["version"] == 2
    assert not np.allclose(before["h0"], state(client, reference)["h0"], atol=1e-3)
    assert_same_session(client, moved, reference, seed=2)


def test_a_session_longer_than_the_window_is_rewarmed_from_its_last_inputs(
        client: httpx.Client) -> None:
    history = rows(WINDOW + 5, seed=3)
    moved, reference = session(client, "moving", 1), session(client, "moving", 2)
    step(client, moved, history)
    step(client, reference, history[-WINDOW:])  # from zeros, the last W inputs only

    answer = client.post(f"/v1/sessions/{moved}/migrate", json={"version": "2"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["replayed_steps"] == WINDOW
    assert_same_session(client, moved, reference, seed=4)


def test_every_session_of_a_version_migrates_in_bulk(client: httpx.Client) -> None:
    made = []
    for seed in (5, 6, 7):
        history = rows(3 + seed % 3, seed)
        moved, reference = session(client, "moving", 1), session(client, "moving", 2)
        step(client, moved, history)
        step(client, reference, history)
        made.append((moved, reference, seed))

    answer = client.post("/v1/models/moving/versions/1/migrate", json={"to": 2})

    assert answer.status_code == 200, answer.text
    results = {r["session_id"]: r for r in answer.json()["results"]}
    for moved, reference, seed in made:
        assert results[moved]["version"] == 2, results[moved]
        assert_same_session(client, moved, reference, seed + 10)
    assert client.post("/v1/models/moving/versions/1/migrate",
                       json={"to": 2}).json() == {"results": []}


def test_a_migrated_session_frees_its_place_under_the_old_versions_cap(
        client: httpx.Client) -> None:
    """max_sessions counts per version: a session migrated from 1 to 2 counts against 2 at
    once (a second session there is refused), and 1 has room again at once, not only when
    the moved session's place there would have expired."""
    moved = session(client, "capped", 1)
    step(client, moved, rows(2, seed=70))
    full = client.post("/v1/models/capped/sessions", json={"version": 1})
    assert full.status_code == 503, full.text

    answer = client.post(f"/v1/sessions/{moved}/migrate", json={"version": 2})

    assert answer.status_code == 200, answer.text
    refused = client.post("/v1/models/capped/sessions", json={"version": 2})
    assert refused.status_code == 503, refused.text
    again = client.post("/v1/models/capped/sessions", json={"version": 1})
    assert again.status_code == 201, again.text
    for session_id in (moved, again.json()["session_id"]):
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 204


def test_a_version_that_keeps_no_inputs_refuses_migration_saying_how_to_enable_it(
        client: httpx.Client) -> None:
    sid = session(client, "fixed", 1)
    step(client, sid, rows(2, 8))

    one = client.post(f"/v1/sessions/{sid}/migrate", json={"version": 2})
    bulk = client.post("/v1/models/fixed/versions/1/migrate", json={"to": 2})

    for answer in (one, bulk):
        assert answer.status_code == 409, answer.text
        assert "rewarm_steps" in answer.json()["error"]
        assert "model.json" in answer.json()["error"]
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1


@pytest.mark.parametrize(("target", "says"), [(3, "4 features"), (4, "'d'")])
def test_a_target_with_other_inputs_is_refused(client: httpx.Client, target: int,
                                               says: str) -> None:
    sid = session(client, "moving", 1)
    step(client, sid, rows(2, 9))

    answer = client.post(f"/v1/sessions/{sid}/migrate", json={"version": target})

    assert answer.status_code == 409, answer.text
    assert says in answer.json()["error"]
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1


def test_an_unknown_version_or_a_bad_body_is_refused(client: httpx.Client) -> None:
    sid = session(client, "moving", 1)

    unknown = client.post(f"/v1/sessions/{sid}/migrate", json={"version": 9})
    bulk_unknown = client.post("/v1/models/moving/versions/1/migrate", json={"to": 9})
    no_sessions = client.post("/v1/models/moving/versions/7/migrate", json={"to": 2})
    missing = client.post(f"/v1/sessions/{sid}/migrate", json={})
    wrong = client.post(f"/v1/sessions/{sid}/migrate", json={"version": [2]})

    assert (unknown.status_code, bulk_unknown.status_code, no_sessions.status_code) == (
        404, 404, 404)
    assert (missing.status_code, wrong.status_code) == (400, 400)
    assert '"version" is missing' in missing.json()["error"]


def test_the_sessions_of_a_retiring_version_migrate_in_bulk_during_its_grace(
        tiny_repo: Path, tmp_path: Path) -> None:
    """The use it is made for: a version removed from the repository (poll mode) retires;
    while its sessions step on, one call moves them all to the current version, where they
    step on past the grace instead of getting 410."""
    repo = build_repository(tiny_repo, tmp_path / "models")
    with serving(["--models", str(repo), "--model-control", "poll", "--repository-poll-s",
                  "0.5", "--retire-grace-s", "600"], tmp_path / "server.log") as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        history = rows(5, seed=21)
        moved, reference = session(client, "moving", 1), session(client, "moving", 2)
        step(client, moved, history)
        step(client, reference, history)
        shutil.rmtree(repo / "moving" / "1")
        deadline = time.monotonic() + 30
        while not client.get("/v1/models").json().get("retiring"):
            assert time.monotonic() < deadline, "version 1 did not retire"
            time.sleep(0.2)

        assert client.post("/v1/models/moving/sessions", json={"version": 1}
                           ).status_code == 410

        answer = client.post("/v1/models/moving/versions/1/migrate", json={"to": 2})

        assert answer.status_code == 200, answer.text
        assert answer.json()["results"] == [
            {"session_id": moved, "version": 2, "replayed_steps": 5}]
        assert_same_session(client, moved, reference, seed=22)


def migrate_until_done(url: str, session_id: str, migrated: threading.Event,
                       refusals: list[str]) -> None:
    """Migrate the session to version 2, again after each 503 (it stepped meanwhile); any
    other answer is recorded in `refusals` for the test to fail on."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(1000):
            answer = client.post(f"/v1/sessions/{session_id}/migrate", json={"version": 2})
            if answer.status_code == 200:
                migrated.set()
                return
            if answer.status_code != 503:
                refusals.append(f"{answer.status_code} {answer.text}")
                return
            time.sleep(0.001)


def test_a_step_acknowledged_while_the_session_migrates_is_never_lost(
        server: ServerProcess) -> None:
    """A client keeps stepping while its session is migrated: every step answered 200 is in
    the session's state afterwards. The migrated state is the target's after the kept inputs,
    and each later step builds on it, so with fewer steps than the window the final state is
    the target's after every acknowledged input from zeros; a step answered and then
    overwritten by the migration's write would be missing from it. Each trial races one
    migration against a stream of one-timestep steps; a step the migration cuts off is refused
    (not applied) and is left out of the inputs."""
    inputs = rows(WINDOW, seed=40)
    overlapped = 0
    for trial in range(12):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            moved = session(client, "moving", 1)
            step(client, moved, inputs[:1])
            acknowledged, overlaps = race_a_migration(
                server.url, moved, inputs[1:], partial(rest_step, client, moved))
            overlapped += overlaps
            assert client.get(f"/v1/sessions/{moved}").json()["version"] == 2
            assert_holds_version_2_after(client, moved, [inputs[0], *acknowledged],
                                         f"trial {trial}")
    assert overlapped, "no step ran while a migration was under way: the race was not tried"


def rest_step(client: httpx.Client, session_id: str, row: list[float]) -> httpx.Response:
    """One REST step of one timestep, its answer as it came."""
    return client.post(f"/v1/sessions/{session_id}/step", json={"inputs": [row]})


def race_a_migration(url: str, moved: str, rows_to_send: list[list[float]],
                     send: Callable[[list[float]], httpx.Response]
                     ) -> tuple[list[list[float]], int]:
    """Migrate `moved` to version 2 (again after each 503) while `send` steps it with each
    row in turn; (the rows acknowledged, how many were acknowledged before the migration
    finished). A step the migration cut off must say so: 409, not applied."""
    acknowledged: list[list[float]] = []
    overlapped = 0
    migrated = threading.Event()
    refusals: list[str] = []
    mover = threading.Thread(target=migrate_until_done, args=(url, moved, migrated, refusals))
    mover.start()
    for row in rows_to_send:
        answer = send(row)
        if answer.status_code == 200:
            acknowledged.append(row)
            overlapped += not migrated.is_set()
        else:  # cut off by the migration's write: not applied, said so
            assert answer.status_code == 409, answer.text
    mover.join(timeout=30)
    assert not refusals, refusals
    assert migrated.is_set(), "the migration never succeeded"
    return acknowledged, overlapped


def assert_holds_version_2_after(client: httpx.Client, moved: str,
                                 acknowledged: list[list[float]], what: str) -> None:
    """The migrated session's state is version 2's after every acknowledged input from zeros
    (fewer than the window: the migration replays them all), so no acknowledged step was
    lost or applied twice."""
    reference = session(client, "moving", 2)
    step(client, reference, acknowledged)
    ours, theirs = state(client, moved), state(client, reference)
    for name in theirs:
        np.testing.assert_allclose(
            ours[name], theirs[name], atol=1e-4,
            err_msg=f"{what}: an acknowledged step was lost by the migration "
                    f"({len(acknowledged)} acknowledged)")


def v2_step(client: httpx.Client, sequence_id: int, row: list[float],
            start: bool = False) -> httpx.Response:
    """One KServe v2 sequence step of one timestep (JSON body): a start on version 1, a later
    step on whatever version the sequence runs (the request names none)."""
    parameters: dict[str, object] = {"sequence_id": sequence_id}
    if start:
        parameters.update(sequence_start=True)
    path = "/v2/models/moving/versions/1/infer" if start else "/v2/models/moving/infer"
    return client.post(path, json={
        "parameters": parameters, "outputs": [{"name": "output"}],
        "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": row}]})


def test_a_kserve_v2_sequence_steps_on_through_a_migration(server: ServerProcess) -> None:
    """A KServe v2 client names its sequence, not a version: a step that a migration of the
    sequence catches runs once more on the new version (as a REST step does) instead of
    answering 404, and every acknowledged step is in the migrated state."""
    inputs = rows(WINDOW, seed=60)
    overlapped = 0
    for trial in range(12):
        sequence_id = 7_000 + trial
        moved = f"v2.moving.n.{sequence_id}"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            first = v2_step(client, sequence_id, inputs[0], start=True)
            assert first.status_code == 200, first.text
            assert first.json()["model_version"] == "1"
            acknowledged, overlaps = race_a_migration(
                server.url, moved, inputs[1:], partial(v2_step, client, sequence_id))
            overlapped += overlaps
            after = v2_step(client, sequence_id, inputs[0])
            assert after.status_code == 200, after.text
            assert after.json()["model_version"] == "2"
            assert_holds_version_2_after(client, moved, [inputs[0], *acknowledged, inputs[0]],
                                         f"trial {trial}")
    assert overlapped, "no step ran while a migration was under way: the race was not tried"


def v2_message(sequence_id: int, row: list[float], start: bool = False
               ) -> pb.ModelInferRequest:
    """The gRPC form of `v2_step`: a start on version 1, a later step naming no version."""
    message = pb.ModelInferRequest(model_name="moving", model_version="1" if start else "")
    message.parameters["sequence_id"].int64_param = sequence_id
    if start:
        message.parameters["sequence_start"].bool_param = True
    message.inputs.add(name="input", datatype="FP32", shape=[1, 1, 3])
    message.raw_input_contents.append(np.asarray(row, "<f4").tobytes())
    message.outputs.add(name="output")
    return message


def test_a_grpc_stream_sequence_steps_on_through_a_migration(server: ServerProcess) -> None:
    """The same over ModelStreamInfer, whose steady steps take the stream's short way (bound
    to the version the sequence ran on): a step the migration catches goes the whole way,
    which steps it on the new version; no step gets an error, and none is lost."""
    inputs = rows(WINDOW, seed=61)
    overlapped = 0
    with grpc.insecure_channel(server.grpc_url) as channel, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for trial in range(12):
            sequence_id = 8_000 + trial
            moved = f"v2.moving.n.{sequence_id}"
            stream = Stream(stub)
            try:
                first = stream.step(v2_message(sequence_id, inputs[0], start=True))
                assert not first.error_message, first.error_message
                acknowledged = [inputs[0]]
                for row in inputs[1:3]:  # the sequence's steady steps take the short way
                    reply = stream.step(v2_message(sequence_id, row))
                    assert not reply.error_message, reply.error_message
                    acknowledged.append(row)
                migrated = threading.Event()
                refusals: list[str] = []
                mover = threading.Thread(target=migrate_until_done,
                                         args=(server.url, moved, migrated, refusals))
                mover.start()
                versions = []
                for pair in (inputs[3:5], inputs[5:7], inputs[7:]):  # two in flight at once
                    for row in pair:
                        stream.send(v2_message(sequence_id, row))
                    for row in pair:
                        reply = stream.take()
                        assert not reply.error_message, f"trial {trial}: {reply.error_message}"
                        acknowledged.append(row)
                        versions.append(reply.infer_response.model_version)
                        overlapped += not migrated.is_set()
                mover.join(timeout=30)
                assert not refusals, refusals
                assert migrated.is_set(), f"trial {trial}: the migration never succeeded"
                last = stream.step(v2_message(sequence_id, inputs[0]))
                assert not last.error_message, last.error_message
                assert last.infer_response.model_version == "2"
                acknowledged.append(inputs[0])
            finally:
                stream.close()
            assert_holds_version_2_after(client, moved, acknowledged,
                                         f"trial {trial}, versions {versions}")
    assert overlapped, "no step ran while a migration was under way: the race was not tried"


def test_migration_keeps_the_step_count_and_the_replay_window(client: httpx.Client) -> None:
    """A step resent after the migration with the id of a step applied before it (its reply
    was lost, say) is answered from the replay window, not applied a second time; the
    session's step count goes on from where it was."""
    history = rows(5, seed=50)
    moved, reference = session(client, "moving", 1), session(client, "moving", 2)
    first = client.post(f"/v1/sessions/{moved}/step",
                        json={"inputs": history[:3], "step_id": "before"}).json()
    step(client, moved, history[3:])
    step(client, reference, history)

    answer = client.post(f"/v1/sessions/{moved}/migrate", json={"version": 2})

    assert answer.status_code == 200, answer.text
    assert answer.json()["steps"] == 5
    again = client.post(f"/v1/sessions/{moved}/step",
                        json={"inputs": history[:3], "step_id": "before"})
    assert again.status_code == 200, again.text
    assert again.json()["outputs"] == first["outputs"]  # the recorded answer, on version 1
    assert client.get(f"/v1/sessions/{moved}").json()["steps"] == 5  # not applied again
    assert_same_session(client, moved, reference, seed=51)


def test_a_second_migration_replays_the_same_last_inputs(client: httpx.Client) -> None:
    """The kept inputs move with the session, so migrating back and forth within the window
    re-warms from every input the session took, not only those since the last move."""
    history = rows(6, seed=52)
    moved, reference = session(client, "moving", 1), session(client, "moving", 1)
    step(client, moved, history[:4])
    assert client.post(f"/v1/sessions/{moved}/migrate", json={"version": 2}).status_code == 200
    step(client, moved, history[4:])
    step(client, reference, history)

    back = client.post(f"/v1/sessions/{moved}/migrate", json={"version": 1})

    assert back.status_code == 200, back.text
    assert back.json()["replayed_steps"] == 6
    assert_same_session(client, moved, reference, seed=53)


async def test_a_stream_on_a_migrated_session_reconnects_and_steps_on(
        server: ServerProcess) -> None:
    """A WebSocket holds the session when it is migrated: the step that finds it moved is
    answered 503, not applied, and the stream closes with 1012; reconnecting with
    ?session_id= steps on the new version from where the session was."""
    history = np.asarray(rows(4, seed=54), np.float32)
    url = f"ws://127.0.0.1:{server.port}/v1/models/moving/stream"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http, \
            websockets.connect(f"{url}?version=1") as ws:
        sid = json.loads(await ws.recv())["session_id"]
        for row in history[:3]:
            await ws.send(json.dumps({"inputs": [row.tolist()]}))
            assert json.loads(await ws.recv())["steps"] >= 1
        moved = await http.post(f"/v1/sessions/{sid}/migrate", json={"version": 2})
        assert moved.status_code == 200, moved.text

        await ws.send(json.dumps({"inputs": [history[3].tolist()]}))
        refused = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()

        assert refused["status"] == 503 and "migrated" in refused["error"], refused
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert (await http.get(f"/v1/sessions/{sid}")).json()["steps"] == 3  # not applied
        async with websockets.connect(f"{url}?session_id={sid}") as again:
            hello = json.loads(await again.recv())
            assert (hello["version"], hello["steps"]) == (2, 3)
            await again.send(json.dumps({"inputs": [history[3].tolist()]}))
            last = json.loads(await again.recv())
        reference = (await http.post("/v1/models/moving/predict?version=2",
                                     json={"inputs": [history.tolist()]})).json()
    assert last["steps"] == 4
    np.testing.assert_allclose(last["outputs"], reference["outputs"][0][-1:], atol=1e-4)


async def test_the_client_stream_rides_through_a_migration(server: ServerProcess) -> None:
    """rnnserve_client's stream, fed readings while its session is migrated: every reading is
    answered once, in order, and the outputs after the move are the new version's."""
    readings = np.asarray(rows(WINDOW, seed=56), np.float32)
    async with AsyncClient(server.url) as client:
        async with client.stream("moving", version=1) as stream:
            outputs = [await stream.step(readings[0])]
            session_id = stream.session_id
            assert session_id is not None
            await (await client.session(session_id)).migrate(2)
            outputs += [await stream.step(x) for x in readings[1:]]
            assert stream.reconnects >= 1
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        v1 = (await http.post("/v1/models/moving/predict?version=1",
                              json={"inputs": [readings[:1].tolist()]})).json()
        v2 = (await http.post("/v1/models/moving/predict?version=2",
                              json={"inputs": [readings.tolist()]})).json()
    got = np.concatenate(outputs)
    np.testing.assert_allclose(got[:1], np.asarray(v1["outputs"][0]), atol=1e-4)
    np.testing.assert_allclose(got[1:], np.asarray(v2["outputs"][0])[1:], atol=1e-4)
