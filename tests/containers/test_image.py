"""The CPU image as the committed Dockerfile builds it, started with podman the way a user
starts it with Docker: healthy by its own HEALTHCHECK (on whatever port it was told to use),
answering like a local server, streaming a session, non-root, with the committed models baked
in or a mounted repository served instead, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import ROOT, free_port, serving, weather_rows
from tests.containers.conftest import models_in
from tests.containers.podman import (
    BuiltImage,
    inspect,
    podman,
    remove,
    wait_healthy,
)

MODEL = "temperature-lstm"
SIZE_GOAL_BYTES = 350_000_000
DOCKER_STOP_GRACE_S = 10  # `docker stop`'s default: what a user gets without asking


class Container:
    """One `podman run -d` of the image on the host's network, bound to loopback on free
    ports given as arguments (the image's RNNSERVE_PORT stays 8000: its health check must
    follow the port the server really uses)."""

    def __init__(self, image: BuiltImage, *, volumes: tuple[str, ...] = (),
                 extra: tuple[str, ...] = ()) -> None:
        self.name = f"rnnserve-test-{uuid.uuid4().hex[:8]}"
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        mounts = [arg for v in volumes for arg in ("-v", v)]
        podman("run", "-d", "--name", self.name, "--network", "host", *mounts, image.tag,
               "--host", "127.0.0.1", "--port", str(self.port),
               "--grpc-port", str(self.grpc_port), *extra)

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr


@pytest.fixture
def start_container(built_image: BuiltImage) -> Iterator[Any]:
    started: list[Container] = []

    def start(**kwargs: Any) -> Container:
        container = Container(built_image, **kwargs)
        started.append(container)
        wait_healthy(container.name)
        return container

    volumes_before = set(podman("volume", "ls", "-q").stdout.split())
    yield start
    remove(*(c.name for c in started))
    # each run made an anonymous volume for /models (the image's VOLUME): none may be left
    assert set(podman("volume", "ls", "-q").stdout.split()) <= volumes_before


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same committed models served by the source tree, as the reference answer."""
    log = tmp_path_factory.mktemp("local") / "server.log"
    with serving(["--models", str(ROOT / "models")], log) as server:
        yield server


def readings(n: int, seed: int) -> list[list[float]]:
    """n hours of the model's features (its model.json's order and units)."""
    return weather_rows(n, seed=seed, model=MODEL)


def predict(url: str, sequences: list[list[list[float]]]) -> np.ndarray:
    response = httpx.post(f"{url}/v1/models/{MODEL}/predict", json={"inputs": sequences},
                          timeout=60)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"], dtype=np.float32)


def test_image_is_small_and_holds_only_what_serving_needs(
    built_image: BuiltImage, figures: dict[str, Any]
) -> None:
    assert built_image.size_bytes < SIZE_GOAL_BYTES, (
        f"{built_image.size_bytes / 1e6:.0f} MB (goal < {SIZE_GOAL_BYTES / 1e6:.0f} MB)")
    probe = podman("run", "--rm", "--entrypoint", "sh", built_image.tag, "-c", """
        for tool in gcc cc g++ make; do command -v $tool && echo "compiler: $tool"; done
        for venv_pip in /opt/rnnserve/bin/pip /opt/rnnserve/bin/pip3; do
            [ -e $venv_pip ] && echo "pip: $venv_pip"; done
        /opt/rnnserve/bin/python -c 'import pip' 2>/dev/null && echo 'pip: importable'
        /opt/rnnserve/bin/python -c 'import torch' 2>/dev/null && echo 'torch: importable'
        find / -xdev -path '*/.cache/pip' 2>/dev/null | sed 's/^/pip cache: /'
        find /opt /models /tmp /root /src -name '*.whl' 2>/dev/null | sed 's/^/wheel: /'
        [ -e /src ] && echo 'source tree: /src'
        exit 0""")
    assert probe.stdout.strip() == "", probe.stdout


def test_runs_as_non_root_with_the_committed_models_baked_in(built_image: BuiltImage) -> None:
    config = inspect(built_image.tag)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    out = podman("run", "--rm", "--entrypoint", "sh", built_image.tag, "-c",
                 "id -u; id -g; ls /models").stdout.split()
    assert out[:2] == ["10001", "10001"]
    assert set(out[2:]) == models_in(ROOT / "models")


def test_its_redis_client_parses_replies_with_hiredis(built_image: BuiltImage) -> None:
    """The image installs the `redis` extra, hiredis with it (the Redis store's replies parsed
    in C: tests/state/test_redis_connections.py)."""
    out = podman("run", "--rm", "--entrypoint", "/opt/rnnserve/bin/python", built_image.tag,
                 "-c", "import redis.utils; print(redis.utils.HIREDIS_AVAILABLE)").stdout
    assert out.strip() == "True", out


def test_healthy_on_the_port_it_was_given_and_answers_like_a_local_server(
    start_container: Any, local_server: Any
) -> None:
    container = start_container()  # healthy, though RNNSERVE_PORT in the image says 8000
    assert "RNNSERVE_PORT=8000" in container.exec("env")
    assert container.port != 8000
    assert container.exec("id", "-u").strip() == "10001"
    sequences = [readings(30, seed=1), readings(30, seed=2)]
    np.testing.assert_allclose(predict(container.url, sequences),
                               predict(local_server.url, sequences), atol=1e-5)
    models = httpx.get(f"{container.url}/v1/models", timeout=10).json()
    names = {m["name"] for m in models["models"]} if isinstance(models, dict) else set()
    assert names == models_in(ROOT / "models")


def test_a_websocket_session_streams_what_predict_computes(start_container: Any) -> None:
    container = start_container()
    steps = readings(12, seed=3)
    outputs = []
    with ws_connect(f"ws://127.0.0.1:{container.port}/v1/models/{MODEL}/stream",
                    open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first.get("session_id"), first
        for i, step in enumerate(steps):
            ws.send(json.dumps({"inputs": [step], "step_id": f"s{i}"}))
            reply = json.loads(ws.recv(timeout=10))
            assert "outputs" in reply, reply
            outputs.append(reply["outputs"][0])
    np.testing.assert_allclose(np.asarray(outputs, dtype=np.float32),
                               predict(container.url, [steps])[0], atol=1e-4)


def test_a_mounted_model_repository_is_served_instead(
    start_container: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "models" / "temperature-gru", repo / "my-gru")
    for path in [tmp_path, *repo.rglob("*"), repo]:  # readable by the image's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    container = start_container(volumes=(f"{repo}:/models:ro",))
    listed = httpx.get(f"{container.url}/v1/models", timeout=10).json()
    assert [m["name"] for m in listed["models"]] == ["my-gru"]
    step = httpx.post(f"{container.url}/v1/models/my-gru/predict",
                      json={"inputs": [readings(4, seed=4)]}, timeout=10)
    assert step.status_code == 200, step.text
    assert httpx.get(f"{container.url}/v1/models/{MODEL}", timeout=10).status_code == 404


def test_sigterm_mid_stream_answers_in_flight_work_and_exits_0_in_grace(
    start_container: Any
) -> None:
    container = start_container()
    big = [readings(3000, seed=s) for s in range(16)]  # each predict: tenths of a second
    body = json.dumps({"inputs": big}).encode()  # 4 MB: encoded once, before the clock starts
    results: list[int | str] = []
    done = threading.Event()

    connected = threading.Barrier(5)  # the four callers and this thread
    sent = threading.Barrier(5)

    def whole_body() -> Iterator[bytes]:
        """The body in one chunk; httpx asks for the next only once the first is written, so
        a caller that gets here has handed its whole request to the server's socket."""
        yield body
        sent.wait(timeout=30)

    def call() -> None:
        """A predict on a connection opened beforehand (a health check on the same keep-alive
        client), so that on a loaded machine a caller's connect cannot land after SIGTERM
        closed the listener. The four predicts go out together, once all four are connected,
        and SIGTERM follows only once all four are written: a request not yet sent when the
        server stops is refused, rightly, and is not in-flight work (CI failed once so, when
        each caller still encoded its 4 MB of JSON, a second of CPU for four, after the
        0.3 s this test then waited)."""
        try:
            with httpx.Client(base_url=container.url, timeout=60) as client:
                client.get("/v2/health/live")
                connected.wait(timeout=30)
                results.append(client.post(
                    f"/v1/models/{MODEL}/predict", content=whole_body(),
                    headers={"content-type": "application/json",
                             "content-length": str(len(body))}).status_code)
        except (httpx.HTTPError, threading.BrokenBarrierError) as exc:
            results.append(repr(exc))

    ws_replies: list[dict[str, Any]] = []
    ws_close: list[int | None] = []

    def stream() -> None:
        with ws_connect(f"ws://127.0.0.1:{container.port}/v1/models/{MODEL}/stream",
                        open_timeout=10) as ws:
            ws.recv(timeout=10)
            try:
                for i in range(10_000):
                    if done.is_set():
                        break
                    ws.send(json.dumps({"inputs": readings(1, seed=i), "step_id": f"s{i}"}))
                    ws_replies.append(json.loads(ws.recv(timeout=20)))
            except Exception:  # noqa: BLE001 - the close is what is checked below
                pass
            ws_close.append(ws.close_code)

    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(0.5)
    callers = [threading.Thread(target=call) for _ in range(4)]
    for thread in callers:
        thread.start()
    connected.wait(timeout=30)  # BrokenBarrierError: a caller could not connect
    sent.wait(timeout=30)  # BrokenBarrierError: a caller could not send
    time.sleep(0.1)  # the server reads the last bytes (uvicorn acts on SIGTERM within 0.1 s)
    in_flight, answered = 4 - len(results), list(results)
    started = time.monotonic()
    stop = podman("stop", "--time", str(DOCKER_STOP_GRACE_S), container.name, timeout=60)
    stopped_s = time.monotonic() - started
    done.set()
    for thread in [*callers, streamer]:
        thread.join(timeout=30)
    assert stop.returncode == 0
    assert in_flight > 0, f"every predict finished before SIGTERM ({answered})"
    assert results == [200] * 4, results
    assert ws_replies and all("outputs" in r for r in ws_replies), ws_replies[-3:]
    state = inspect(container.name)["State"]
    assert isinstance(state, dict)
    assert state["ExitCode"] == 0, container.logs()[-3000:]
    assert stopped_s < DOCKER_STOP_GRACE_S, f"took {stopped_s:.1f} s: killed, not stopped"
