"""Per-model settings honoured by a running server (issue 19, item 1): each one set in one
model's model.json changes that model only, and the listing shows them. The repository is a
copy of the tests' tiny models (input width 3) with model.json files written here."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, serving
from tests.http.test_sessions import metric_value

WIDTH = 3  # the tiny models' input width (never the committed models')

SETTINGS: dict[str, dict[str, Any]] = {
    "tiny-gru": {"max_batch": 4, "session_ttl_s": 1.0, "owner": "team-a"},
    "tiny-rnn": {"max_sessions": 10, "warmup": [{"batch": 2, "timesteps": 5},
                                                {"batch": 1, "data": "random"}]},
}


@pytest.fixture(scope="module")
def repo(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("settings-repo")
    for name in ("tiny-gru", "tiny-rnn", "tiny-lstm"):
        shutil.copytree(tiny_repo / name, root / name)
    for name, settings in SETTINGS.items():
        (root / name / "model.json").write_text(json.dumps(settings))
    (root / "tiny-lstm" / "2" / "model.json").write_text(
        json.dumps({"warmup": [{"inputs": [[0.5, 0.5]]}]}))  # 2 features: the model takes 3
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("settings-log") / "server.log"
    with serving(["--models", str(repo), "--session-ttl-s", "600"], log) as started:
        yield started


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def listing(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_max_batch_splits_that_models_batches(client: httpx.Client) -> None:
    rows = np.random.default_rng(0).normal(size=(10, 4, WIDTH)).tolist()
    before = client.get("/metrics").text
    for model in ("tiny-gru", "tiny-rnn"):
        response = client.post(f"/v1/models/{model}/predict", json={"inputs": rows})
        assert response.status_code == 200, response.text
        assert len(response.json()["outputs"]) == 10
    after = client.get("/metrics").text
    runs = {model: metric_value(after, "rnnserve_batch_rows_count", f'model="{model}"')
            - metric_value(before, "rnnserve_batch_rows_count", f'model="{model}"')
            for model in ("tiny-gru", "tiny-rnn")}
    assert runs == {"tiny-gru": 3, "tiny-rnn": 1}  # 4 + 4 + 2 rows; default --max-batch: one run


def test_session_ttl_expires_that_models_sessions_only(client: httpx.Client) -> None:
    short = client.post("/v1/models/tiny-gru/sessions").json()["session_id"]
    long = client.post("/v1/models/tiny-lstm/sessions").json()["session_id"]
    step = {"inputs": [[0.1] * WIDTH]}
    time.sleep(1.6)  # past tiny-gru's 1 s, far inside the flag's 600 s
    gone = client.post(f"/v1/sessions/{short}/step", json=step)
    assert gone.status_code == 404, gone.text
    assert "expired after 1 s" in gone.text
    assert client.post(f"/v1/sessions/{long}/step", json=step).status_code == 200


def test_max_sessions_refuses_that_models_eleventh_session(client: httpx.Client) -> None:
    made = [client.post("/v1/models/tiny-rnn/sessions") for _ in range(10)]
    assert [r.status_code for r in made] == [201] * 10
    refused = client.post("/v1/models/tiny-rnn/sessions")
    assert refused.status_code == 503, refused.text
    assert "max_sessions" in refused.text and "'tiny-rnn'" in refused.text
    assert client.post("/v1/models/tiny-gru/sessions").status_code == 201  # others unaffected
    for r in made:
        client.delete(f"/v1/sessions/{r.json()['session_id']}")
    assert client.post("/v1/models/tiny-rnn/sessions").status_code == 201


def test_warmup_runs_at_load_and_a_bad_one_names_its_file_and_field(
        client: httpx.Client, repo: Path) -> None:
    data = listing(client)
    by_name = {m["name"]: m for m in data["models"]}
    assert by_name["tiny-rnn"]["warmup_at_load"]["runs"] == 2
    assert by_name["tiny-rnn"]["warmup_at_load"]["rows"] == 3
    assert by_name["tiny-gru"]["warmup_at_load"]["runs"] == 0
    assert by_name["tiny-lstm"]["version"] == 1  # version 2's warmup does not fit: not served
    (problem,) = [p for p in data["unavailable"] if p["name"] == "tiny-lstm"]
    assert problem["version"] == 2
    assert str(repo / "tiny-lstm" / "2" / "model.json") in problem["reason"]
    assert "'warmup[0].inputs'" in problem["reason"] and "takes 3" in problem["reason"]


def test_the_listing_shows_each_models_settings_and_keeps_metadata(
        client: httpx.Client) -> None:
    by_name = {m["name"]: m for m in listing(client)["models"]}
    gru = by_name["tiny-gru"]["settings"]
    assert (gru["max_batch"], gru["session_ttl_s"]) == (4, 1.0)
    assert gru["max_sessions"] == 500_000 and gru["from_model_json"] == ["max_batch",
                                                                         "session_ttl_s"]
    assert by_name["tiny-lstm"]["settings"]["session_ttl_s"] == 600  # the flag
    states = {(v["version"], v["state"]) for v in by_name["tiny-lstm"]["version_states"]}
    assert states == {(1, "READY"), (2, "UNAVAILABLE")}
    detail = client.get("/v1/models/tiny-gru").json()
    assert detail["settings"]["max_batch"] == 4


def test_a_bad_value_is_refused_at_start_with_file_and_field(
        start_server: Callable[..., ServerProcess], repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(repo / "tiny-gru", bad / "tiny-gru")
    (bad / "tiny-gru" / "model.json").write_text('{"max_delay_ms": "soon"}')
    shutil.copytree(repo / "tiny-rnn", bad / "tiny-rnn")
    server = start_server("--models", str(bad))
    data = httpx.get(server.url + "/v1/models", timeout=10).json()
    assert [m["name"] for m in data["models"]] == ["tiny-rnn"]
    (problem,) = data["unavailable"]
    assert str(bad / "tiny-gru" / "model.json") in problem["reason"]
    assert "'max_delay_ms'" in problem["reason"]


def test_the_kserve_config_reports_each_models_own_settings(client: httpx.Client) -> None:
    """Triton-aware tools read the effective settings: model.json's where it sets them, the
    flags' elsewhere."""
    gru = client.get("/v2/models/tiny-gru/config").json()
    assert gru["parameters"]["max_batch"] == {"string_value": "4"}
    assert gru["sequence_batching"]["max_sequence_idle_microseconds"] == 1_000_000
    lstm = client.get("/v2/models/tiny-lstm/config").json()
    assert lstm["parameters"]["max_batch"]["string_value"] != "4"
    assert lstm["sequence_batching"]["max_sequence_idle_microseconds"] == 600_000_000
