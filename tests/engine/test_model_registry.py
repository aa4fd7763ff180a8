"""The registry of served instances (engine/model_registry.py): a session steps on the
instance that was serving when it was created, superseded instances are let go when nothing
needs them, and the index tells each version's state and why."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from rnnserve.engine.model_registry import READY, UNAVAILABLE, ModelRegistry
from rnnserve.engine.models import LoadedModels
from rnnserve.engine.repository import ModelSource
from rnnserve.engine.repository_watch import fingerprint
from rnnserve.engine.runner import Runner


class FakeRunner:
    """Only what the registry reads of a runner: its name and version."""

    def __init__(self, name: str, version: int) -> None:
        self.name, self.version = name, version


def runner(name: str, version: int) -> Runner:
    return cast(Runner, FakeRunner(name, version))


def test_sessions_step_on_the_instance_serving_when_they_were_created() -> None:
    now = [100.0]
    registry = ModelRegistry(LoadedModels(), clock=lambda: now[0])
    first, second = runner("m", 1), runner("m", 1)
    assert registry.install(first) is None
    now[0] = 200.0
    assert registry.install(second) is first
    assert registry.models.get("m", 1) is second  # new work: the new instance
    assert registry.session_runner("m", 1, created=150.0) is first
    assert registry.session_runner("m", 1, created=250.0) is second
    assert registry.session_runner("m", 1, created=50.0) is first  # older than both: oldest
    assert registry.has_superseded("m", 1)
    assert registry.drop_superseded(lambda r: r is first) == [first]
    assert not registry.has_superseded("m", 1)
    assert registry.session_runner("m", 1, created=150.0) is second
    assert registry.session_runner("m", 2, created=150.0) is None


def test_the_index_says_each_versions_state_and_why() -> None:
    registry = ModelRegistry(LoadedModels())
    served = runner("m", 1)
    registry.install(served)
    registry.failed("m", 2, "not an onnx file")
    registry.failed("m", 1, "half written")  # new files of a served version: it serves on
    rows = {(r.name, r.version): r for r in registry.index()}
    assert rows[("m", 1)].state == READY and "half written" in rows[("m", 1)].reason
    assert rows[("m", 2)].state == UNAVAILABLE and rows[("m", 2)].reason == "not an onnx file"
    assert [p.version for p in registry.models.problems] == [2]
    assert [r.version for r in registry.index(ready_only=True)] == [1]
    assert registry.remove_model("m", "unloaded") == [served]  # the instances to let go
    assert {r.state for r in registry.index()} == {UNAVAILABLE}
    assert "m" not in registry.models.versions and not registry.models.problems


def test_a_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"one")
    source = ModelSource("m", 1, folder / "model.onnx")
    before = fingerprint(source)
    assert fingerprint(source) == before
    (folder / "model.onnx").write_bytes(b"other")
    assert fingerprint(source) != before
    changed = fingerprint(source)
    (tmp_path / "m" / "model.json").write_text("{}")  # the model's shared metadata counts
    assert fingerprint(source) != changed
