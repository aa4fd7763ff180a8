"""The temperature forecaster: a 2-layer RNN/LSTM/GRU with a per-step linear head.

Normalization lives INSIDE the module, so the exported ONNX graph takes physical units (°F, %,
mbar, m/s, W/m², unit circle) and returns °F, and the server never needs the training statistics:

    input  [B, T, F]  the features model.json lists, temperature_f first
      -> z = (input - feature_mean) / feature_std, per feature (training months only) [B, T, F]
      -> nn.RNN / nn.LSTM / nn.GRU (batch_first)                                    [B, T, H]
      -> Linear head: the next-hour change, in units of delta_std                   [B, T, 1]
      -> output = temperature_f + change · delta_std                                [B, T, 1]

Predicting a residual over the current temperature makes "persistence" the zero of the head,
so the network only has to learn the correction (the diurnal swing, fronts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rnnserve.export.errors import ExportInputError
from torch import nn

CELLS = ("rnn", "lstm", "gru")
RECURRENT: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn | lstm | gru: the recurrent layer
    input_size: int = 10  # features per timestep (data.DEFAULT_FEATURES), temperature_f first
    hidden_size: int = 64  # the same for all three cells, so they compare fairly
    num_layers: int = 2  # stacked recurrent layers
    output_size: int = 1  # next hour's temperature, °F
    # Normalization statistics, from the training months only; baked into the graph.
    feature_mean: list[float] = field(default_factory=list)  # per feature; [] = all 0
    feature_std: list[float] = field(default_factory=list)  # per feature; [] = all 1
    delta_std: float = 1.0  # °F, scale of the predicted hour-to-hour change

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ExportInputError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        for name in ("input_size", "hidden_size", "num_layers", "output_size"):
            if getattr(self, name) < 1:
                raise ExportInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.feature_mean = list(self.feature_mean) or [0.0] * self.input_size
        self.feature_std = list(self.feature_std) or [1.0] * self.input_size
        if len(self.feature_mean) != self.input_size or len(self.feature_std) != self.input_size:
            raise ExportInputError(f"feature_mean and feature_std need {self.input_size} values")
        if min(self.feature_std) <= 0 or self.delta_std <= 0:
            raise ExportInputError("feature_std and delta_std must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TemperatureForecaster(nn.Module):
    """°F in, °F out; the recurrent state is explicit so the export can carry it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = RECURRENT[config.cell](
            input_size=config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden_size, config.output_size)
        # Buffers, not parameters: saved in the state_dict, exported as constants, never trained.
        self.register_buffer("feature_mean",
                             torch.tensor(config.feature_mean, dtype=torch.float32))
        self.register_buffer("feature_std", torch.tensor(config.feature_std, dtype=torch.float32))
        self.register_buffer("delta_std", torch.tensor(config.delta_std, dtype=torch.float32))

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    def zero_state(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zeros for h0 (and c0): [layers, batch, hidden] each, as the server starts sessions."""
        shape = (self.config.num_layers, batch, self.config.hidden_size)
        n = 2 if self.is_lstm else 1
        return tuple(torch.zeros(shape) for _ in range(n))

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """x [B, T, F] physical units; h0 (c0) [L, B, H] -> (output [B, T, 1] °F, hn (, cn))."""
        temp = x[:, :, 0:1]  # [B, T, 1] °F
        feats = (x - self.feature_mean) / self.feature_std  # [B, T, F] normalized
        if self.is_lstm:
            if c0 is None:
                raise ValueError("an LSTM needs c0 as well as h0")
            seq, (hn, cn) = self.rnn(feats, (h0, c0))  # seq [B, T, H]
            state: tuple[torch.Tensor, ...] = (hn, cn)
        else:
            seq, hn = self.rnn(feats, h0)
            state = (hn,)
        delta = self.head(seq)  # [B, T, 1] change in units of delta_std
        out = temp + delta * self.delta_std  # [B, T, 1] °F
        return (out, *state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: TemperatureForecaster, path: str, extra: dict[str, Any]) -> None:
    """A dict of plain state: weights, config and training facts; never a pickled module."""
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path: str) -> tuple[TemperatureForecaster, dict[str, Any]]:
    """Rebuild the module from a checkpoint written by save_checkpoint (weights_only: safe)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportInputError(f"checkpoint {path!r} does not exist") from None
    except IsADirectoryError:
        raise ExportInputError(f"checkpoint {path!r} is a directory, not a .pt file") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ExportInputError(f"{path!r} is not a readable checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ExportInputError(f"{path!r} is not an rnnserve checkpoint (no config/state_dict)")
    model = TemperatureForecaster(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
