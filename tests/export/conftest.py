"""Tiny random temperature models (hidden 8, 2 layers) exported once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rnnserve.export.data import FEATURES, OUTPUTS
from rnnserve.export.model import CELLS, ModelConfig, TemperatureForecaster
from rnnserve.export.onnx_export import export_forecaster


def tiny_forecaster(cell: str, seed: int = 0) -> TemperatureForecaster:
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, hidden_size=8, num_layers=2, temp_mean=55.0, temp_std=8.0,
                      delta_std=1.25)
    return TemperatureForecaster(cfg).eval()


@pytest.fixture(scope="module")
def tiny_models(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[TemperatureForecaster, Path]]:
    """cell -> (PyTorch module, its exported model.onnx)."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for cell in CELLS:
        model = tiny_forecaster(cell)
        path = export_forecaster(model, root / cell, name=f"tiny-{cell}", metrics={},
                                 data_source="random", features=FEATURES, outputs=OUTPUTS)
        out[cell] = (model, path)
    return out
