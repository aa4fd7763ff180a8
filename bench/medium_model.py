"""The "medium LSTM" every predict benchmark runs: 8 input features, hidden 128, 2 layers, a
per-step Linear head to 1 output, random weights from a fixed seed.

Random weights are enough: the cost of an LSTM does not depend on what its weights learned,
and a seed makes every run (and every system in a run) compute the same numbers. The bench
writes both forms of one model: the ONNX file rnnserve and the ceiling load (made by the
project's exporter, so the benchmark serves what users serve) and the torch state the naive
server loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_NAME = "medium-lstm"
TOLERANCE = 1e-4  # max abs difference from PyTorch accepted in the correctness checks


@dataclass(frozen=True)
class MediumConfig:
    input_size: int = 8  # features per timestep
    hidden_size: int = 128
    num_layers: int = 2
    output_size: int = 1  # one prediction per timestep
    seq_len: int = 168  # a week of hourly steps: the length of every benchmark sequence
    seed: int = 0


class MediumLSTM(nn.Module):
    """batch_first LSTM + per-step Linear head: [batch, time, features] -> [batch, time, 1]."""

    def __init__(self, config: MediumConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = nn.LSTM(
            config.input_size, config.hidden_size, config.num_layers, batch_first=True
        )
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.rnn(x)  # [batch, time, hidden]
        out: torch.Tensor = self.head(hidden)  # [batch, time, out]
        return out


def build(config: MediumConfig | None = None) -> MediumLSTM:
    """The model with the config's seeded random weights, in eval mode."""
    config = config or MediumConfig()
    torch.manual_seed(config.seed)
    return MediumLSTM(config).eval()


def save_state(model: MediumLSTM, path: Path) -> None:
    """A checkpoint as a dict of config and state (never a pickled module), loadable with
    `torch.load(weights_only=True)`."""
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict()}, path)


def load_state(path: Path) -> MediumLSTM:
    """The model saved by `save_state`, in eval mode."""
    checkpoint = torch.load(path, weights_only=True)
    model = MediumLSTM(MediumConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


@dataclass(frozen=True)
class ModelFiles:
    repository: Path  # pass as `--models` to rnnserve
    onnx: Path  # <repository>/medium-lstm/model.onnx
    state: Path  # torch checkpoint for the naive server (outside the repository)


def write_model_files(root: Path, config: MediumConfig | None = None) -> ModelFiles:
    """Export the seeded model to `<root>/models/medium-lstm/model.onnx` with the project
    exporter and save its torch state to `<root>/medium-lstm.pt`.

    The checkpoint stays outside the model repository so that rnnserve's discovery sees
    nothing but the model directory."""
    from rnnserve.export.onnx_export import (
        export_recurrent,  # the project's exporter: what users run
    )

    model = build(config)
    repository = root / "models"
    onnx_path = repository / MODEL_NAME / "model.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    export_recurrent(model.rnn, model.head, onnx_path, opset=17)
    state_path = root / f"{MODEL_NAME}.pt"
    save_state(model, state_path)
    return ModelFiles(repository=repository, onnx=onnx_path, state=state_path)


def sample_sequences(count: int, config: MediumConfig | None = None) -> np.ndarray:
    """`count` seeded random sequences, float32 [count, seq_len, input_size]."""
    config = config or MediumConfig()
    rng = np.random.default_rng(config.seed + 1)
    shape = (count, config.seq_len, config.input_size)
    return rng.standard_normal(shape).astype(np.float32)


def reference_outputs(model: MediumLSTM, sequences: np.ndarray) -> np.ndarray:
    """PyTorch's outputs [count, seq_len, out] for checking every system computes the same."""
    with torch.no_grad():
        out: np.ndarray = model(torch.from_numpy(sequences)).numpy()
    return out


def agreement(got: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """A system's outputs against `reference_outputs`: the largest difference, and whether it
    is within TOLERANCE (float32 kernels differ in their last bits, not more)."""
    diff = float(np.max(np.abs(got - expected)))
    return {"max_abs_diff": diff, "ok": diff <= TOLERANCE}
