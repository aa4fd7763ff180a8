"""The committed temperature models: loadable, contract-conforming, honest metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from rnnserve.export.model import CELLS
from rnnserve.export.verify import contract_problems, run_onnx, verify_model_dir
from rnnserve.export.weather import FEATURE_UNITS

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
    assert meta["cell"] == cell and meta["output_size"] == 1
    names = [f["name"] for f in meta["features"]]
    assert meta["input_size"] == len(names) and names[0] == "temperature_f"
    assert set(names) <= set(FEATURE_UNITS)  # the documented vocabulary, with its units
    assert all(f["unit"] == FEATURE_UNITS[f["name"]] for f in meta["features"])
    assert len(meta["normalization"]["feature_mean"]) == len(names)
    for key in ("name", "layers", "hidden_size", "opset", "metrics", "data_source", "data",
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
    # every feature at its training mean (55 °F for the temperature), held constant
    x = np.broadcast_to(np.asarray(meta["normalization"]["feature_mean"]),
                        (batch, length, meta["input_size"])).copy()
    x[:, :, 0] = 55.0
    state = [np.zeros((meta["layers"], batch, meta["hidden_size"]), np.float32)
             for _ in meta["state_pairs"]]
    out = run_onnx(MODELS / f"temperature-{cell}" / "model.onnx", x.astype(np.float32), *state)
    assert out[0].shape == (batch, length, 1)
    assert np.all(np.abs(out[0] - 55.0) < 10)  # °F in, °F out


def test_lstm_and_gru_beat_persistence_by_30_percent_and_the_linear_baseline() -> None:
    for cell in ("lstm", "gru"):
        m = json.loads((MODELS / f"temperature-{cell}" / "metrics.json").read_text())
        assert m["test_rmse_f"] <= 0.7 * m["test_persistence_rmse_f"], cell
        assert m["test_rmse_f"] < m["test_linear_ar_rmse_f"], cell
