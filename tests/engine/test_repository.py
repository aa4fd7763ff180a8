"""Model repository discovery and loading: versions, metadata, bad folders, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rnnserve.engine import Engine
from rnnserve.engine.repository import discover, is_valid_model_name
from rnnserve.errors import ModelNotFound
from rnnserve.settings import Settings


def test_discovers_single_and_numbered_versions(tiny_repo: Path) -> None:
    sources, problems = discover(tiny_repo)
    found = {(s.name, s.version) for s in sources}
    assert {("tiny-lstm", 1), ("tiny-lstm", 2), ("tiny-gru", 1), ("renamed-gru", 1)} <= found
    assert problems == []  # 'broken' has a model.onnx: it fails at load, not at discovery


def test_folder_without_model_and_bad_json_are_reported(tmp_path: Path, tiny_repo: Path) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copytree(tiny_repo / "tiny-gru", tmp_path / "bad-json")
    (tmp_path / "bad-json" / "model.json").write_text("{not json")
    sources, problems = discover(tmp_path)
    assert sources == []
    reasons = {p.name: p.reason for p in problems}
    assert "no model.onnx" in reasons["empty"]
    assert "not valid JSON" in reasons["bad-json"]


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "a\\b", "", "x" * 200, "a..b"])
def test_rejects_path_tricks_in_names(name: str) -> None:
    assert not is_valid_model_name(name)


async def test_one_broken_model_does_not_stop_the_others(tiny_repo: Path) -> None:
    engine = Engine(Settings(models=tiny_repo, grpc_port=0))
    engine.start()
    await engine.open()
    try:
        assert "broken" not in engine.models.versions
        assert any(p.name == "broken" for p in engine.models.problems)
        assert engine.ready  # readiness reflects the models that loaded
        with pytest.raises(ModelNotFound, match="failed to load"):
            engine.runner("broken")
        assert engine.runner("tiny-lstm").version == 2  # highest version is the default
        assert engine.runner("tiny-lstm", "1").version == 1
        with pytest.raises(ModelNotFound, match=r"available versions: \[1, 2\]"):
            engine.runner("tiny-lstm", "7")
    finally:
        await engine.aclose()
        engine.close()


async def test_strict_readiness_is_false_with_a_broken_model(tiny_repo: Path) -> None:
    engine = Engine(Settings(models=tiny_repo, grpc_port=0, strict_readiness=True))
    engine.start()
    await engine.open()
    try:
        assert not engine.ready
    finally:
        await engine.aclose()
        engine.close()


def test_model_json_can_rename_tensors(tiny_repo: Path) -> None:
    engine = Engine(Settings(models=tiny_repo, grpc_port=0))
    engine.start()
    try:
        sig = engine.runner("renamed-gru").signature
        assert (sig.input_name, sig.output_name) == ("x", "y")
        assert [(s.input, s.output, s.layers, s.hidden) for s in sig.states] == [
            ("state_in", "state_out", 2, 8)]
        assert sig.cell == "gru"
        assert engine.describe("renamed-gru")["description"] == "a GRU with its own tensor names"
    finally:
        engine.close()


def test_cell_comes_from_onnx_metadata(tiny_repo: Path) -> None:
    engine = Engine(Settings(models=tiny_repo, grpc_port=0))
    engine.start()
    try:
        cells = {n: engine.runner(n).signature.cell for n in ("tiny-lstm", "tiny-gru", "tiny-rnn")}
        assert cells == {"tiny-lstm": "lstm", "tiny-gru": "gru", "tiny-rnn": "rnn"}
    finally:
        engine.close()
