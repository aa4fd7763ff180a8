"""Per-model settings in model.json (issue 19, item 1): each setting key is checked when the
repository is read, a bad value is refused with the file and the field named, the other keys
stay metadata, a version's model.json overrides the model folder's, and an undeclared setting
is the server's flag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rnnserve.engine.model_settings import ModelSettings, SettingDefaults
from rnnserve.engine.repository import discover_folder


def versioned_copy(tiny_repo: Path, tmp_path: Path, shared: dict[str, Any] | None,
                   v2: dict[str, Any] | None = None) -> Path:
    """tiny-lstm (versions 1 and 2) copied, with the given model.json files."""
    folder = tmp_path / "tiny-lstm"
    shutil.copytree(tiny_repo / "tiny-lstm", folder)
    if shared is not None:
        (folder / "model.json").write_text(json.dumps(shared))
    if v2 is not None:
        (folder / "2" / "model.json").write_text(json.dumps(v2))
    return folder


BAD_VALUES = [
    ("max_batch", 0, "at least 1"),
    ("max_batch", "8", "whole number"),
    ("max_batch", True, "whole number"),
    ("max_delay_ms", -1, "0 or more"),
    ("max_delay_ms", "fast", "finite number"),
    ("session_ttl_s", 0, "greater than 0"),
    ("max_sessions", 2.5, "whole number"),
    ("inference_workers", 0, "at least 1"),
    ("rewarm_steps", -1, "at least 0"),
    ("rewarm_steps", 10**6, "at most"),
    ("warmup", {"batch": 1}, "list of samples"),
    ("warmup", [{"batch": 0}], "at least 1"),
    ("warmup", [{"data": "ones"}], "'zeros' or 'random'"),
    ("warmup", [{"rows": 2}], "unknown keys"),
    ("warmup", [{"inputs": [[1, 2, 3], [1, 2]]}], "different widths"),
]


@pytest.mark.parametrize(("key", "value", "says"), BAD_VALUES)
def test_a_bad_setting_is_refused_with_the_file_and_field_named(
        tiny_repo: Path, tmp_path: Path, key: str, value: Any, says: str) -> None:
    folder = versioned_copy(tiny_repo, tmp_path, None, {key: value, "owner": "team-a"})
    sources, problems = discover_folder(folder)
    assert [s.version for s in sources] == [1]  # version 1 has no bad file: served
    (problem,) = problems
    assert problem.version == 2
    assert str(folder / "2" / "model.json") in problem.reason
    assert f"field '{key}" in problem.reason and says in problem.reason


def test_a_bad_setting_in_the_model_folder_refuses_every_version(
        tiny_repo: Path, tmp_path: Path) -> None:
    folder = versioned_copy(tiny_repo, tmp_path, {"max_sessions": 0})
    sources, problems = discover_folder(folder)
    assert sources == []
    assert str(folder / "model.json") in problems[0].reason
    assert "'max_sessions'" in problems[0].reason


def test_settings_merge_over_the_folder_and_the_flags_and_metadata_is_kept(
        tiny_repo: Path, tmp_path: Path) -> None:
    folder = versioned_copy(
        tiny_repo, tmp_path,
        {"max_batch": 4, "session_ttl_s": 30, "owner": "team-a", "labels": {"tier": "gold"}},
        {"max_batch": 8, "rewarm_steps": 16, "warmup": [{"batch": 2, "timesteps": 5}]})
    sources, problems = discover_folder(folder)
    assert problems == []
    one, two = sources
    defaults = SettingDefaults(max_batch=512, max_delay_ms=0.5, session_ttl_s=900,
                               max_sessions=100, inference_workers=2)
    first = ModelSettings.effective(one.settings, defaults)
    second = ModelSettings.effective(two.settings, defaults)
    assert (first.max_batch, first.session_ttl_s, first.rewarm_steps) == (4, 30.0, 0)
    assert (second.max_batch, second.session_ttl_s, second.rewarm_steps) == (8, 30.0, 16)
    assert (second.max_sessions, second.max_delay_ms) == (100, 0.5)  # the flags
    assert second.declared == {"max_batch", "session_ttl_s", "rewarm_steps", "warmup"}
    assert second.where("max_batch") == str(folder / "2" / "model.json")
    assert second.where("session_ttl_s") == str(folder / "model.json")
    assert second.warmup[0].batch == 2 and second.warmup[0].timesteps == 5
    assert two.metadata["owner"] == "team-a" and two.metadata["labels"] == {"tier": "gold"}
    assert second.describe()["from_model_json"] == sorted(second.declared)
