"""Models that cannot be stepped: what the graph says (cell, directions, true layers), what the
load check finds by running every model in chunks and whole, and what the sessions refuse.
The transports' answers are tested over a real server in tests/http/test_not_streamable.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from rnnserve.engine import Engine
from rnnserve.engine.graph import GraphFacts
from rnnserve.engine.streaming import check_streaming
from rnnserve.errors import NotStreamable
from rnnserve.settings import Settings

from tests.conftest import COMMITTED_MODELS


@pytest.fixture
def loaded() -> Iterator[list[Engine]]:
    """Engines a test starts (`start`): closed after it."""
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.close()


def start(root: Path, engines: list[Engine]) -> Engine:
    engine = Engine(Settings(models=root, grpc_port=0))
    engine.start()
    engines.append(engine)
    return engine


def facts(engine: Engine, name: str) -> dict[str, object]:
    described = engine.describe(name)
    return {key: described[key] for key in ("cell", "layers", "directions", "streamable")}


def test_the_graph_gives_cell_directions_and_true_layers(tiny_repo: Path,
                                                         loaded: list[Engine]) -> None:
    engine = start(tiny_repo, loaded)
    # bi-gru has no metadata at all: its graph alone says it is a bidirectional GRU
    assert facts(engine, "bi-gru") == {"cell": "gru", "layers": 2, "directions": 2,
                                       "streamable": False}
    assert facts(engine, "bi-lstm") == {"cell": "lstm", "layers": 1, "directions": 2,
                                        "streamable": False}
    bi = engine.describe("bi-gru")
    assert [s["shape"] for s in bi["state"]] == [[4, -1, 8]]  # the tensor is what it is
    assert "bidirectional" in bi["not_streamable_reason"]
    # no model.json and no rnnserve.cell metadata: the GRU node names the cell
    assert facts(engine, "plain-gru") == {"cell": "gru", "layers": 2, "directions": 1,
                                          "streamable": True}
    for name, cell in (("tiny-lstm", "lstm"), ("tiny-gru", "gru"), ("tiny-rnn", "rnn"),
                       ("renamed-gru", "gru")):
        assert facts(engine, name) == {"cell": cell, "layers": 2, "directions": 1,
                                       "streamable": True}
        assert engine.describe(name)["not_streamable_reason"] is None


def test_the_committed_models_pass_the_load_check(loaded: list[Engine]) -> None:
    engine = start(COMMITTED_MODELS, loaded)
    assert engine.models.names() == ["temperature-gru", "temperature-lstm", "temperature-rnn"]
    for name in engine.models.names():
        assert facts(engine, name)["streamable"] is True, name
        assert facts(engine, name)["directions"] == 1


def test_the_load_check_finds_a_bidirectional_model_by_running_it(tiny_repo: Path,
                                                                   loaded: list[Engine]) -> None:
    """Had the graph hidden both directions (a recurrence unrolled into plain ops), running
    it in chunks and whole tells: the check does not lean on the graph."""
    engine = start(tiny_repo, loaded)
    for name in ("bi-gru", "bi-lstm"):
        runner = engine.runner(name)
        hidden = replace(runner.signature, directions=1)
        verdict = check_streaming(runner.run_sync, hidden, GraphFacts(), metadata={},
                                  onnx_metadata={})
        assert not verdict.streamable and verdict.reason is not None
        assert "run in chunks with its state carried" in verdict.reason
    uni = engine.runner("tiny-gru")
    assert check_streaming(uni.run_sync, uni.signature, GraphFacts(), metadata={},
                           onnx_metadata={}).streamable


def cumulative_model(path: Path) -> None:
    """A sequence model whose "state" does not carry the sequence: output = the running sum of
    the inputs over time, hn = h0. Run whole it sums from the start, stepped it restarts."""
    dims = ["batch", "time", 3]
    graph = helper.make_graph(
        [helper.make_node("CumSum", ["input", "axis"], ["output"]),
         helper.make_node("Identity", ["h0"], ["hn"])],
        "cumulative",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "batch", 4])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def reversed_gru(source: Path, path: Path) -> None:
    """tiny-gru with its GRU nodes run backwards in time (direction "reverse")."""
    model = onnx.load(str(source))
    for node in model.graph.node:
        if node.op_type == "GRU":
            for attr in node.attribute:
                if attr.name == "direction":
                    attr.s = b"reverse"
            if not any(attr.name == "direction" for attr in node.attribute):
                node.attribute.append(helper.make_attribute("direction", "reverse"))
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


async def test_models_that_cannot_step_load_and_predict_but_get_no_session(
        tiny_repo: Path, tmp_path: Path) -> None:
    cumulative_model(tmp_path / "cumulative" / "model.onnx")
    reversed_gru(tiny_repo / "tiny-gru" / "model.onnx", tmp_path / "reverse-gru" / "model.onnx")
    shutil.copytree(tiny_repo / "tiny-gru", tmp_path / "declared")
    (tmp_path / "declared" / "model.json").write_text(json.dumps({"streamable": False}))
    shutil.copytree(tiny_repo / "bi-lstm", tmp_path / "bi-lstm")
    shutil.copytree(tiny_repo / "tiny-rnn", tmp_path / "tiny-rnn")
    engine = Engine(Settings(models=tmp_path, grpc_port=0))
    engine.start()
    await engine.open()
    try:
        assert engine.models.problems == []  # every one of them loads
        reasons = {name: engine.describe(name)["not_streamable_reason"]
                   for name in engine.models.names()}
        assert reasons["tiny-rnn"] is None
        assert "'output' differs by" in str(reasons["cumulative"])
        assert "in reverse" in str(reasons["reverse-gru"])
        assert '"streamable": false' in str(reasons["declared"])
        assert "bidirectional" in str(reasons["bi-lstm"])
        x = np.random.default_rng(3).normal(size=(6, 3)).astype(np.float32)
        for name in ("cumulative", "reverse-gru", "declared", "bi-lstm"):
            predicted = await engine.predict(name, [x])  # predict serves them
            assert np.asarray(predicted.outputs).shape[:2] == (1, 6)
            with pytest.raises(NotStreamable, match=rf"model '{name}' version 1 cannot be "
                               r"stepped in a session or a sequence: .*; predict whole "
                               rf"sequences instead \(POST /v1/models/{name}/predict"):
                await engine.sessions.create(name)
        assert (await engine.sessions.create("tiny-rnn")).model == "tiny-rnn"
        cumsum = (await engine.predict("cumulative", [x])).outputs
        np.testing.assert_allclose(np.asarray(cumsum)[0], np.cumsum(x, axis=0), rtol=1e-6)
    finally:
        await engine.aclose()
        engine.close()


def test_model_json_directions_stand_where_the_graph_has_no_recurrent_node(
        tmp_path: Path, loaded: list[Engine]) -> None:
    cumulative_model(tmp_path / "cumulative" / "model.onnx")
    (tmp_path / "cumulative" / "model.json").write_text('{"directions": 2}')
    cumulative_model(tmp_path / "odd" / "model.onnx")
    (tmp_path / "odd" / "model.json").write_text('{"directions": 3}')
    engine = start(tmp_path, loaded)
    described = engine.describe("cumulative")
    assert (described["directions"], described["streamable"]) == (2, False)
    assert [p.name for p in engine.models.problems] == ["odd"]
    assert "use 1 or 2" in engine.models.problems[0].reason
