"""The committed temperature models: loadable, contract-conforming, honest metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from rnnserve.export.model import CELLS
from rnnserve.export.verify import contract_problems, run_onnx, verify_model_dir

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("cell", CELLS)
def test_committed_model_conforms(cell: str) -> None:
    folder = MODELS / f"temperature-{cell}"
    onnx_path = folder / "model.onnx"
    assert onnx_path.stat().st_size < 512 * 1024  # kilobytes, not megabytes
    assert contract_problems(onnx_path) == []
    assert verify_model_dir(folder) == []  # includes the NumPy reference
    meta = json.loads((folder / "model.json").read_text())
    assert meta["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert meta["cell"] == cell and meta["input_size"] == 3 and meta["output_size"] == 1
    assert [f["name"] for f in meta["features"]] == ["temperature_f", "hour_sin", "hour_cos"]
    for key in ("name", "layers", "hidden_size", "opset", "metrics", "data_source",
                "library_versions", "state_pairs", "sequence_input", "sequence_output"):
        assert key in meta
    # one direction, and stepped in chunks it gives what it gives whole (verify_model_dir ran it)
    assert (meta["directions"], meta["streamable"]) == (1, True)
    for png in ("learning_curve.png", "forecast.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("batch", "length"), [(1, 1), (1, 200), (5, 3)])
def test_committed_model_runs_on_any_batch_and_length(cell: str, batch: int, length: int) -> None:
    meta = json.loads((MODELS / f"temperature-{cell}" / "model.json").read_text())
    hours = np.arange(length)
    x = np.stack([np.full((batch, length), 55.0),
                  np.broadcast_to(np.sin(2 * np.pi * hours / 24), (batch, length)),
                  np.broadcast_to(np.cos(2 * np.pi * hours / 24), (batch, length))], axis=2)
    state = [np.zeros((meta["layers"], batch, meta["hidden_size"]), np.float32)
             for _ in meta["state_pairs"]]
    out = run_onnx(MODELS / f"temperature-{cell}" / "model.onnx", x.astype(np.float32), *state)
    assert out[0].shape == (batch, length, 1)
    assert np.all(np.abs(out[0] - 55.0) < 10)  # °F in, °F out


def test_lstm_and_gru_beat_persistence() -> None:
    for cell in ("lstm", "gru"):
        m = json.loads((MODELS / f"temperature-{cell}" / "metrics.json").read_text())
        assert m["test_rmse_f"] < m["test_persistence_rmse_f"], cell
