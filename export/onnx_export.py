"""Export recurrent models to ONNX in the rnnserve contract.

The contract (README.md, "Model repository"): inputs `input` [batch, time, features] float32 and
`h0` (and `c0` for an LSTM) [layers·directions, batch, hidden]; outputs `output`
[batch, time, out] and `hn` (and `cn`). Batch and time are dynamic; everything else is static.
The state is explicit so the server can keep it between a client's calls.

We use PyTorch's legacy TorchScript exporter (`dynamo=False`, opset 17) because it emits each
layer as ONE native ONNX RNN/LSTM/GRU op with dynamic batch and time; the dynamo exporter (torch
2.13) fixed the time axis at the example length for nn.RNN and stacked models. Every export is
checked before it is written: native ops present, no Loop/Scan, and ONNX Runtime agrees with
PyTorch on an input of a different batch size and length than the tracing example. Every export
is also run in chunks with its state carried, as a server session steps it, against one whole
run: a model that passes (and is not bidirectional, whatever the run says) is streamable; one
that does not is marked `rnnserve.streamable = false` in its ONNX metadata (and `"streamable":
false` in the model.json we write), and the server serves it for predict only.

Two entry points:
    export_recurrent(rnn, head, path)        any user's trained nn.RNN/LSTM/GRU (+ per-step head)
    export_forecaster(model, out_dir, ...)   our temperature models, normalization inside,
                                             plus the model.json the server reads
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rnnserve.export.errors import ExportInputError
from rnnserve.export.model import TemperatureForecaster
from rnnserve.export.ort_runs import (
    STREAM_TOLERANCE,
    chunked_difference,
    graph_directions,
    ort_session,
)
from torch import nn

CELL_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
METADATA_CELL_KEY = "rnnserve.cell"
METADATA_STREAMABLE_KEY = "rnnserve.streamable"
"""Written ("false") only on a model that cannot be stepped: absent means streamable, so the
bytes of every streamable export stay what they were before the key existed."""
_UNROLLED_OPS = {"Loop", "Scan"}


@dataclass(frozen=True)
class Exported:
    """Checked ONNX bytes and what the checks found: `directions` from the graph's recurrent
    nodes, `streamable` when chunks with the state carried equal one whole run (never for a
    bidirectional model), `chunk_difference` the relative difference they showed."""

    data: bytes
    directions: int
    streamable: bool
    chunk_difference: float


def cell_of(rnn: nn.Module) -> str:
    """rnn | lstm | gru for a PyTorch recurrent layer (TypeError for anything else)."""
    # LSTM and GRU are not subclasses of nn.RNN, but check the specific classes first anyway.
    for cell, cls in (("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)):
        if isinstance(rnn, cls):
            return cell
    raise TypeError(f"expected nn.RNN, nn.LSTM or nn.GRU, got {type(rnn).__name__}")


class _StatefulRecurrent(nn.Module):
    """A user's recurrent layer + optional head, with the contract's explicit-state signature."""

    def __init__(self, rnn: nn.RNNBase, head: nn.Module | None) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = head
        self.is_lstm = isinstance(rnn, nn.LSTM)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        # x [B, T, in]; the contract is batch-major even if the user's layer is not.
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)  # [T, B, in]
        if self.is_lstm:
            seq, (hn, cn) = self.rnn(x, (h0, c0))
            state: tuple[torch.Tensor, ...] = (hn, cn)
        else:
            seq, hn = self.rnn(x, h0)
            state = (hn,)
        if not self.rnn.batch_first:
            seq = seq.transpose(0, 1)  # [B, T, H·dirs]
        out = self.head(seq) if self.head is not None else seq  # [B, T, out]
        return (out, *state)


def export_recurrent(
    rnn: nn.RNN | nn.LSTM | nn.GRU,
    head: nn.Module | None,
    path: str | Path,
    *,
    opset: int = 17,
) -> Path:
    """Write a user's trained recurrent layer (+ per-step head) as a contract-conforming ONNX file.

    `rnn` is any nn.RNN/nn.LSTM/nn.GRU (batch_first or not, any number of layers, bi-directional
    allowed; LSTM projections are not, as ONNX has no such op). `head` is None or any module
    mapping [batch, time, hidden·directions] -> [batch, time, out], e.g. nn.Linear. `path` is the
    model.onnx to write (an existing directory gets a model.onnx inside). The modules are copied,
    so the caller's are left untouched (mode, device, dtype). Returns the path written.
    A bidirectional layer (or a head that mixes timesteps) makes a model that cannot be
    stepped: the file then says `rnnserve.streamable = false` in its metadata, and the server
    serves it for predict only.
    """
    cell = cell_of(rnn)
    if getattr(rnn, "proj_size", 0):
        raise ExportInputError("LSTM with proj_size > 0 has no native ONNX op; export without it")
    if head is not None and not isinstance(head, nn.Module):
        raise TypeError(f"head must be an nn.Module or None, got {type(head).__name__}")
    rnn_copy = copy.deepcopy(rnn).to("cpu", torch.float32).eval()
    head_copy = copy.deepcopy(head).to("cpu", torch.float32).eval() if head is not None else None
    dirs = 2 if rnn.bidirectional else 1
    seq_width = rnn.hidden_size * dirs

    # Probe the head once: it must keep [batch, time] and give one vector per step.
    output_size = seq_width
    if head_copy is not None:
        with torch.no_grad():
            try:
                probe = head_copy(torch.zeros(2, 3, seq_width))
            except Exception as exc:
                raise ExportInputError(
                    f"head does not accept [batch, time, {seq_width}] (the recurrent output): {exc}"
                ) from None
        if not isinstance(probe, torch.Tensor) or probe.dim() != 3 or probe.shape[:2] != (2, 3):
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ExportInputError(
                f"head must map [batch, time, {seq_width}] -> [batch, time, out]; got {shape}"
            )
        output_size = int(probe.shape[2])

    wrapper = _StatefulRecurrent(rnn_copy, head_copy).eval()
    target = Path(path)
    if target.is_dir():
        target = target / "model.onnx"
    exported = export_stateful(
        wrapper,
        cell=cell,
        input_size=rnn.input_size,
        state_layers=rnn.num_layers * dirs,
        hidden_size=rnn.hidden_size,
        output_size=output_size,
        opset=opset,
    )
    _write_bytes(target, exported.data)
    return target


def export_stateful(
    module: nn.Module,
    *,
    cell: str,
    input_size: int,
    state_layers: int,
    hidden_size: int,
    output_size: int,
    opset: int = 17,
) -> Exported:
    """Trace `module(input, h0[, c0]) -> (output, hn[, cn])` to checked ONNX bytes.

    The bytes are a pure function of the weights and library versions (no timestamps, fixed
    tracing example, seeded check inputs), which is what makes `rnnserve train` reproducible
    bit for bit. Checked: native ops, ONNX Runtime against PyTorch, and chunked against whole
    (`Exported.streamable`; a model that is not is marked so in its metadata).
    """
    lstm = cell == "lstm"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, input_size, generator=gen)  # [B=2, T=5, in] tracing example
    state = tuple(torch.randn(state_layers, 2, hidden_size, generator=gen) for _ in range(1 + lstm))
    input_names = ["input", "h0"] + (["c0"] if lstm else [])
    output_names = ["output", "hn"] + (["cn"] if lstm else [])
    dynamic_axes: dict[str, dict[int, str]] = {"input": {0: "batch", 1: "time"}}
    dynamic_axes["output"] = {0: "batch", 1: "time"}
    for name in input_names[1:] + output_names[1:]:
        dynamic_axes[name] = {1: "batch"}

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter warns that batch_first/initial states need a fixed batch size; we
        # pass the state explicitly with a dynamic batch axis and verify other sizes below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (x, *state),
            buffer,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    ops = {node.op_type for node in proto.graph.node}
    if CELL_OPS[cell] not in ops or ops & _UNROLLED_OPS:
        raise RuntimeError(f"export produced ops {sorted(ops)}, not a native {CELL_OPS[cell]}")
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_CELL_KEY, cell
    onnx.checker.check_model(proto)
    data = proto.SerializeToString(deterministic=True)

    # Check on a batch size and length the tracer never saw.
    check_against_torch(module, data, batch=3, length=7, input_size=input_size,
                        state_layers=state_layers, hidden_size=hidden_size, lstm=lstm,
                        output_size=output_size)
    # Stepped as a session steps it, does it give what one whole run gives?
    directions = graph_directions(proto)
    difference = chunked_difference(data, input_size=input_size, state_layers=state_layers,
                                    hidden_size=hidden_size, lstm=lstm)
    streamable = directions == 1 and difference <= STREAM_TOLERANCE
    if not streamable:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_STREAMABLE_KEY, "false"
        data = proto.SerializeToString(deterministic=True)
    return Exported(data, directions, streamable, difference)


def check_against_torch(
    module: nn.Module,
    model: str | Path | bytes,
    *,
    batch: int,
    length: int,
    input_size: int,
    state_layers: int,
    hidden_size: int,
    lstm: bool,
    output_size: int,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """Raise if ONNX Runtime and PyTorch disagree on a random input of the given shape."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, input_size, generator=gen)
    state = [torch.randn(state_layers, batch, hidden_size, generator=gen) for _ in range(1 + lstm)]
    with torch.no_grad():
        expected = [t.numpy() for t in module(x, *state)]
    feeds = {"input": x.numpy(), "h0": state[0].numpy()}
    if lstm:
        feeds["c0"] = state[1].numpy()
    got = ort_session(model).run(None, feeds)
    if got[0].shape != (batch, length, output_size):
        raise RuntimeError(f"exported output has shape {got[0].shape}, expected "
                           f"{(batch, length, output_size)}")
    for name, e, g in zip(["output", "hn", "cn"], expected, got, strict=False):
        if not np.allclose(e, g, rtol=rtol, atol=atol):
            raise RuntimeError(f"ONNX Runtime and PyTorch disagree on {name}: "
                               f"max abs diff {np.max(np.abs(e - g)):.3g}")


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ExportInputError(f"cannot write {str(path)!r}: {exc.strerror}") from None


# ----------------------------------------------------------------------------- our models


def library_versions() -> dict[str, str]:
    """The versions that determine the exported bytes (recorded in model.json)."""
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def export_forecaster(
    model: TemperatureForecaster,
    out_dir: str | Path,
    *,
    name: str,
    metrics: dict[str, Any],
    data_source: str,
    features: list[tuple[str, str]],
    outputs: list[tuple[str, str]],
    data_info: dict[str, Any] | None = None,
    opset: int = 17,
) -> Path:
    """Write out_dir/model.onnx (physical units in, °F out) and out_dir/model.json; return the
    ONNX path. `data_info` (the data file, the months of each part, the evaluation rule) is written
    as model.json's "data"."""
    cfg = model.config
    exported = export_stateful(
        model.eval(),
        cell=cfg.cell,
        input_size=cfg.input_size,
        state_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        output_size=cfg.output_size,
        opset=opset,
    )
    out = Path(out_dir)
    onnx_path = out / "model.onnx"
    data = exported.data
    _write_bytes(onnx_path, data)
    pairs = [{"input": "h0", "output": "hn"}]
    if cfg.cell == "lstm":
        pairs.append({"input": "c0", "output": "cn"})
    meta = {
        "name": name,
        "description": (
            f"{cfg.num_layers}-layer {cfg.cell.upper()} ({cfg.hidden_size} hidden) forecasting "
            "next hour's dry-bulb temperature (°F) from this hour's weather readings and "
            "calendar encodings"
        ),
        "cell": cfg.cell,
        "layers": cfg.num_layers,
        "directions": exported.directions,
        "hidden_size": cfg.hidden_size,
        "input_size": cfg.input_size,
        "output_size": cfg.output_size,
        "features": [{"name": n, "unit": u} for n, u in features],
        "outputs": [{"name": n, "unit": u} for n, u in outputs],
        "sequence_input": "input",
        "sequence_output": "output",
        "state_pairs": pairs,
        "streamable": exported.streamable,
        "opset": opset,
        "normalization": {
            "feature_mean": cfg.feature_mean,
            "feature_std": cfg.feature_std,
            "delta_std_f": cfg.delta_std,
        },
        "metrics": metrics,
        "data_source": data_source,
        **({"data": data_info} if data_info else {}),
        "library_versions": library_versions(),
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
    }
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    _write_bytes(out / "model.json", text.encode())
    return onnx_path
