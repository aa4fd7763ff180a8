"""The exporter's streaming check: every export runs in chunks with its state carried against
one whole run; a bidirectional model (or a head that mixes timesteps) is never called
streamable, in the file's metadata or in model.json, and `verify` catches a file that lies."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from rnnserve.export.onnx_export import METADATA_STREAMABLE_KEY, export_recurrent, export_stateful
from rnnserve.export.onnx_export import _StatefulRecurrent as Stateful
from rnnserve.export.verify import streaming_problems, verify_model_dir
from torch import nn


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


class CumulativeHead(nn.Module):
    """A head whose output at t sums the whole sequence so far: it reads only the past, but
    its state lives outside the carried hn, so chunks restart the sum."""

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(seq, dim=1)[..., :1]


@pytest.mark.parametrize(("cls", "layers"), [(nn.GRU, 2), (nn.LSTM, 1), (nn.RNN, 1)])
def test_a_bidirectional_export_is_marked_not_streamable(tmp_path: Path, cls: type[nn.RNNBase],
                                                         layers: int) -> None:
    torch.manual_seed(11)
    rnn = cls(3, 6, num_layers=layers, batch_first=True, bidirectional=True)
    path = export_recurrent(rnn, nn.Linear(12, 2), tmp_path / "model.onnx")
    assert metadata(path)[METADATA_STREAMABLE_KEY] == "false"
    assert verify_model_dir(tmp_path) == []  # the mark tells the truth


def test_the_verdict_comes_from_running_it(tmp_path: Path) -> None:
    torch.manual_seed(12)
    gru = nn.GRU(3, 6, num_layers=2, batch_first=True)
    uni = export_stateful(Stateful(gru, nn.Linear(6, 1)), cell="gru", input_size=3,
                          state_layers=2, hidden_size=6, output_size=1)
    assert (uni.directions, uni.streamable) == (1, True) and uni.chunk_difference < 1e-5
    assert METADATA_STREAMABLE_KEY not in {
        p.key for p in onnx.load_from_string(uni.data).metadata_props}  # bytes as before

    mixed = export_stateful(Stateful(gru, CumulativeHead()), cell="gru", input_size=3,
                            state_layers=2, hidden_size=6, output_size=1)
    assert (mixed.directions, mixed.streamable) == (1, False)  # one direction, yet it cannot step
    assert mixed.chunk_difference > 1e-2

    bi = export_stateful(Stateful(nn.GRU(3, 6, batch_first=True, bidirectional=True), None),
                         cell="gru", input_size=3, state_layers=2, hidden_size=6,
                         output_size=12)
    assert (bi.directions, bi.streamable) == (2, False) and bi.chunk_difference > 1e-2


def test_verify_catches_a_model_called_streamable_that_is_not(tmp_path: Path) -> None:
    torch.manual_seed(13)
    lying = {
        "bi": export_recurrent(nn.LSTM(3, 6, batch_first=True, bidirectional=True), None,
                               tmp_path / "bi" / "model.onnx"),
        "mixed": export_recurrent(nn.GRU(3, 6, batch_first=True), CumulativeHead(),
                                  tmp_path / "mixed" / "model.onnx"),
    }
    for name, path in lying.items():
        model = onnx.load(str(path))
        del model.metadata_props[1:]  # keep rnnserve.cell, drop the "false"
        onnx.save(model, str(path))
        assert streaming_problems(path, {}) != [], name  # silence calls it streamable
        assert streaming_problems(path, {"streamable": False}) == []  # saying no is safe
    assert streaming_problems(lying["bi"], {"streamable": True}) == [
        "a bidirectional model is called streamable"]
    assert "differs from one whole run" in streaming_problems(lying["mixed"], {})[0]
    assert streaming_problems(lying["bi"], {"directions": 1, "streamable": False}) == [
        "model.json says directions 1; the graph has 2"]


def test_our_model_json_records_directions_and_streamable(tiny_models) -> None:
    for _, path in tiny_models.values():
        meta = json.loads((path.parent / "model.json").read_text())
        assert (meta["directions"], meta["streamable"]) == (1, True)
