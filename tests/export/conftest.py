"""Tiny random temperature models (hidden 8, 2 layers, the default 10 weather features)
exported once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rnnserve.export.data import DEFAULT_FEATURES, OUTPUTS, features_with_units
from rnnserve.export.model import CELLS, ModelConfig, TemperatureForecaster
from rnnserve.export.onnx_export import export_forecaster

FEATURES = features_with_units(DEFAULT_FEATURES)
# Roughly Greensboro's training statistics, in the order of DEFAULT_FEATURES.
TINY_MEAN = [59.0, 47.6, 69.0, 987.0, 3.1, 177.0, 0.0, 0.0, 0.0, 0.0]
TINY_STD = [16.0, 17.0, 20.0, 6.0, 1.8, 256.0, 0.7, 0.7, 0.7, 0.7]


def sample_inputs(rng, batch: int, length: int):
    """Plausible readings in physical units: [batch, length, 10] float32."""
    import numpy as np

    return rng.normal(TINY_MEAN, TINY_STD, (batch, length, len(TINY_MEAN))).astype(np.float32)


def tiny_forecaster(cell: str, seed: int = 0) -> TemperatureForecaster:
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, input_size=len(DEFAULT_FEATURES), hidden_size=8, num_layers=2,
                      feature_mean=TINY_MEAN, feature_std=TINY_STD, delta_std=2.3)
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
