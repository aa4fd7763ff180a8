"""ONNX Runtime runs of exported models, shared by the exporter's own checks (onnx_export.py)
and the independent ones (verify.py): whole, in chunks with the state carried as a streaming
session carries it, and the comparison of the two that decides whether a model is streamable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

STREAM_TOLERANCE = 1e-4
"""Largest chunked-against-whole difference of a streamable model, relative to the largest
value of the tensor (the server's load check uses the same bound: engine/streaming.py)."""


def ort_session(model: str | Path | bytes) -> ort.InferenceSession:
    """A CPU session with one intra-op thread (deterministic and kind to a shared machine)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(path: str | Path | bytes, x: np.ndarray, *state: np.ndarray) -> list[np.ndarray]:
    """One ONNX Runtime call with the contract's names: [output, hn(, cn)]."""
    feeds = {"input": x.astype(np.float32), "h0": state[0].astype(np.float32)}
    if len(state) > 1:
        feeds["c0"] = state[1].astype(np.float32)
    return ort_session(path).run(None, feeds)


def chunked_run(
    path: str | Path | bytes, x: np.ndarray, state: list[np.ndarray], cuts: list[int]
) -> list[np.ndarray]:
    """Feed x [B, T, F] in pieces split at `cuts`, carrying hn/cn, as a streaming session does."""
    session = ort_session(path)
    names = ["h0", "c0"][: len(state)]
    outs = []
    bounds = [0, *sorted(set(cuts)), x.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a == b:
            continue
        feeds = {"input": x[:, a:b], **dict(zip(names, state, strict=True))}
        result = session.run(None, feeds)
        outs.append(result[0])
        state = list(result[1:])
    return [np.concatenate(outs, axis=1), *state]


def chunked_difference(
    model: str | Path | bytes, *, input_size: int, state_layers: int, hidden_size: int,
    lstm: bool, batch: int = 2, length: int = 9, cuts: tuple[int, ...] = (1, 4),
) -> float:
    """The largest difference between `chunked_run` and one whole run on a random input and
    state, relative to the largest value of each tensor (output, hn, cn). A recurrence that
    reads only the past gives float32 rounding (~1e-7); one that reads the future (a
    bidirectional layer, a head that mixes timesteps) gives a difference of order 1."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, length, input_size)).astype(np.float32)
    state = [rng.normal(0, 0.5, (state_layers, batch, hidden_size)).astype(np.float32)
             for _ in range(1 + lstm)]
    whole = run_onnx(model, x, *state)
    pieces = chunked_run(model, x, state, list(cuts))
    worst = 0.0
    for w, p in zip(whole, pieces, strict=True):
        scale = max(float(np.max(np.abs(w))), 1e-6)
        worst = max(worst, float(np.max(np.abs(w - p))) / scale)
    return worst


def graph_directions(proto: onnx.ModelProto) -> int:
    """2 when any RNN/LSTM/GRU node of the graph runs in both directions, else 1."""
    for node in proto.graph.node:
        if node.op_type in ("RNN", "LSTM", "GRU"):
            for attr in node.attribute:
                if attr.name == "direction" and attr.s == b"bidirectional":
                    return 2
    return 1
