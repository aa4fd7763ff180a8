"""The export contract: ONNX Runtime = PyTorch = an independent NumPy implementation of the
cells, on any batch size and length, whole or in chunks; and export_recurrent on user models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rnnserve.export.errors import ExportInputError
from rnnserve.export.model import CELLS
from rnnserve.export.onnx_export import export_recurrent
from rnnserve.export.verify import (
    chunked_run,
    contract_problems,
    forecaster_reference,
    numpy_recurrent,
    recurrent_layers,
    run_onnx,
    verify_model_dir,
)
from torch import nn

from tests.export.conftest import sample_inputs

SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_inputs(rng: np.random.Generator, batch: int, length: int, n_state: int,
                  hidden: int = 8, layers: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    """Weather-like readings in physical units (the 10 default features), a non-zero state."""
    x = sample_inputs(rng, batch, length)
    state = [rng.normal(0, 0.5, (layers, batch, hidden)).astype(np.float32) for _ in range(n_state)]
    return x, state


@pytest.mark.parametrize("cell", CELLS)
def test_native_ops_contract_and_metadata(tiny_models, cell: str) -> None:
    _, path = tiny_models[cell]
    assert contract_problems(path) == []
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count({"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]) == 2  # one per layer
    assert {p.key: p.value for p in proto.metadata_props}["rnnserve.cell"] == cell
    assert verify_model_dir(path.parent) == []


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(batch=st.integers(1, 5), length=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_onnxruntime_equals_pytorch(tiny_models, cell: str, batch: int, length: int,
                                    seed: int) -> None:
    model, path = tiny_models[cell]
    x, state = random_inputs(np.random.default_rng(seed), batch, length, 1 + (cell == "lstm"))
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.from_numpy(x), *map(torch.from_numpy, state))]
    got = run_onnx(path, x, *state)
    assert got[0].shape == (batch, length, 1)
    for e, g in zip(expected, got, strict=True):
        assert np.max(np.abs(e - g)) <= 1e-5


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(length=st.integers(2, 60), data=st.data())
def test_chunked_with_carried_state_equals_whole(tiny_models, cell: str, length: int,
                                                 data: st.DataObject) -> None:
    _, path = tiny_models[cell]
    cuts = data.draw(st.lists(st.integers(1, length - 1), max_size=6))
    x, state = random_inputs(np.random.default_rng(length), 2, length, 1 + (cell == "lstm"))
    whole = run_onnx(path, x, *state)
    pieces = chunked_run(path, x, state, cuts)
    for w, p in zip(whole, pieces, strict=True):
        assert np.max(np.abs(w - p)) <= 1e-5


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("batch", "length"), [(1, 1), (1, 9), (4, 1), (3, 25)])
def test_numpy_reference_from_onnx_weights(tiny_models, cell: str, batch: int,
                                           length: int) -> None:
    """The cell equations (docs/training.md) with W/R/B from the file reproduce output, hn, cn."""
    _, path = tiny_models[cell]
    meta = json.loads((path.parent / "model.json").read_text())
    x, state = random_inputs(np.random.default_rng(7), batch, length, 1 + (cell == "lstm"))
    got = run_onnx(path, x, *state)
    ref = [r for r in forecaster_reference(path, meta, x, *state) if r is not None]
    assert len(ref) == len(got)
    for g, r in zip(got, ref, strict=True):
        assert np.max(np.abs(g - r)) <= 1e-5


# ----------------------------------------------------------------------------- user models


def test_export_recurrent_user_lstm_with_linear(tmp_path: Path) -> None:
    torch.manual_seed(3)
    rnn = nn.LSTM(5, 16, num_layers=2, batch_first=True)
    head = nn.Linear(16, 2)
    rnn.train()  # the exporter must not change the caller's modules
    path = export_recurrent(rnn, head, tmp_path / "user" / "model.onnx")
    assert path == tmp_path / "user" / "model.onnx" and rnn.training
    assert contract_problems(path) == []

    rng = np.random.default_rng(0)
    for batch, length in [(1, 1), (2, 30), (7, 3)]:
        x = rng.normal(size=(batch, length, 5)).astype(np.float32)
        h0, c0 = (rng.normal(size=(2, batch, 16)).astype(np.float32) for _ in range(2))
        with torch.no_grad():
            y, (hn, cn) = rnn.eval()(torch.from_numpy(x), (torch.from_numpy(h0),
                                                             torch.from_numpy(c0)))
            out = head(y)
        got = run_onnx(path, x, h0, c0)
        for e, g in zip([out, hn, cn], got, strict=True):
            assert np.max(np.abs(e.numpy() - g)) <= 1e-5


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
def test_export_recurrent_headless_matches_numpy(tmp_path: Path, cls: type[nn.RNNBase]) -> None:
    """No head: `output` is the top layer's sequence, which the NumPy cells reproduce."""
    torch.manual_seed(4)
    rnn = cls(3, 6, num_layers=3, batch_first=True)
    path = export_recurrent(rnn, None, tmp_path)  # a directory gets model.onnx inside
    assert path == tmp_path / "model.onnx" and contract_problems(path) == []
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 11, 3)).astype(np.float32)
    state = [rng.normal(size=(3, 2, 6)).astype(np.float32) for _ in range(1 + (cls is nn.LSTM))]
    got = run_onnx(path, x, *state)
    ref = numpy_recurrent(recurrent_layers(onnx.load(str(path))), x, *state)
    for g, r in zip(got, [r for r in ref if r is not None], strict=True):
        assert np.max(np.abs(g - r)) <= 1e-5


def test_export_recurrent_time_major_and_bidirectional(tmp_path: Path) -> None:
    torch.manual_seed(5)
    rnn = nn.GRU(4, 8, batch_first=False, bidirectional=True)
    head = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    path = export_recurrent(rnn, head, tmp_path / "m.onnx")
    assert contract_problems(path) == []
    x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype(np.float32)  # [B, T, F]
    h0 = np.zeros((2, 3, 8), np.float32)
    with torch.no_grad():
        y, hn = rnn(torch.from_numpy(x).transpose(0, 1), torch.from_numpy(h0))
        out = head(y.transpose(0, 1))
    got = run_onnx(path, x, h0)
    assert np.max(np.abs(out.numpy() - got[0])) <= 1e-5
    assert np.max(np.abs(hn.numpy() - got[1])) <= 1e-5


def test_export_recurrent_rejects_bad_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="nn.RNN, nn.LSTM or nn.GRU"):
        export_recurrent(nn.Linear(3, 3), None, tmp_path / "a.onnx")  # type: ignore[arg-type]
    with pytest.raises(ExportInputError, match="proj_size"):
        export_recurrent(nn.LSTM(3, 8, proj_size=4, batch_first=True), None, tmp_path / "b.onnx")
    with pytest.raises(ExportInputError, match=r"head .*\[batch, time, 8\]"):
        export_recurrent(nn.GRU(3, 8, batch_first=True), nn.Linear(5, 1), tmp_path / "c.onnx")
