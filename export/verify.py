"""Independent checks of exported models: contract, PyTorch parity, chunking (a model called
streamable must step as it runs whole), a NumPy reference.

The NumPy reference re-implements the cell equations of docs/training.md ("The cells") from
scratch and takes its weights from the ONNX file itself (W, R, B initializers of each
RNN/LSTM/GRU node, in ONNX gate order: LSTM i,o,f,c; GRU z,r,h), so it checks the exporter's
gate reordering and bias split as well as ONNX Runtime's kernels.
`python -m rnnserve.export.verify models/` checks a repository.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from rnnserve.export.onnx_export import CELL_OPS, METADATA_CELL_KEY, METADATA_STREAMABLE_KEY
from rnnserve.export.ort_runs import (
    STREAM_TOLERANCE,
    chunked_difference,
    chunked_run,
    graph_directions,
    run_onnx,
)

__all__ = ["chunked_run", "contract_problems", "forecaster_reference", "numpy_recurrent",
           "recurrent_layers", "run_onnx", "streaming_problems", "verify_model_dir"]

RECURRENT_OPS = set(CELL_OPS.values())

# ----------------------------------------------------------------------------- NumPy reference


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by name (the exporter may use either)."""
    values = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t).astype(np.float64)
    return values


Layer = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (op, W, R, B) of one recurrent node


def recurrent_layers(proto: onnx.ModelProto) -> list[Layer]:
    """(op, W [G·H, in], R [G·H, H], B [2·G·H]) per recurrent node, in graph (= layer) order."""
    values = _constants(proto)
    layers = []
    for node in proto.graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("direction", b"forward") not in (b"forward", "forward"):
            raise NotImplementedError("the NumPy reference covers forward (uni-directional) layers")
        if node.op_type == "GRU" and attrs.get("linear_before_reset", 0) != 1:
            raise ValueError("GRU exported without linear_before_reset=1: not PyTorch's GRU")
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if node.op_type == "RNN" and acts not in ([], ["Tanh"]):
            raise NotImplementedError(f"RNN activations {acts}: the reference implements tanh")
        w, r, b = (values[name][0] for name in node.input[1:4])  # [dirs=1, ...] -> drop dirs
        layers.append((node.op_type, w, r, b))
    if not layers:
        raise ValueError("no native RNN/LSTM/GRU node in the graph")
    return layers


def numpy_recurrent(
    layers: list[Layer],
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run a stack of cells step by step in float64.

    x [B, T, in] (what the first layer sees), h0/c0 [L, B, H] -> (top sequence [B, T, H], hn, cn).
    """
    seq = x.astype(np.float64)
    hn, cn = [], []
    for layer, (op, w, r, b) in enumerate(layers):
        hidden = r.shape[1]
        wb, rb = b[: w.shape[0]], b[w.shape[0] :]
        h = h0[layer].astype(np.float64)  # [B, H]
        c = c0[layer].astype(np.float64) if c0 is not None else None
        outs = []
        for t in range(seq.shape[1]):
            xw = seq[:, t] @ w.T + wb  # [B, G·H] input part of every gate
            hr = h @ r.T + rb  # [B, G·H] recurrent part
            if op == "RNN":  # h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h)
                h = np.tanh(xw + hr)
            elif op == "LSTM":  # ONNX order i, o, f, c
                g = xw + hr
                i_t = _sigmoid(g[:, 0 * hidden : 1 * hidden])
                o_t = _sigmoid(g[:, 1 * hidden : 2 * hidden])
                f_t = _sigmoid(g[:, 2 * hidden : 3 * hidden])
                c_tilde = np.tanh(g[:, 3 * hidden : 4 * hidden])
                assert c is not None, "an LSTM needs c0"
                c = f_t * c + i_t * c_tilde
                h = o_t * np.tanh(c)
            else:  # GRU, ONNX order z, r, h; linear_before_reset=1
                z_t = _sigmoid(xw[:, :hidden] + hr[:, :hidden])
                r_t = _sigmoid(xw[:, hidden : 2 * hidden] + hr[:, hidden : 2 * hidden])
                h_tilde = np.tanh(xw[:, 2 * hidden :] + r_t * hr[:, 2 * hidden :])
                h = z_t * h + (1.0 - z_t) * h_tilde
            outs.append(h)
        seq = np.stack(outs, axis=1)  # [B, T, H] feeds the next layer
        hn.append(h)
        if c is not None:
            cn.append(c)
    return seq, np.stack(hn), (np.stack(cn) if cn else None)


def forecaster_reference(
    onnx_path: str | Path,
    meta: dict,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Our temperature model end to end in NumPy: normalization (from model.json), the cells
    (weights from the ONNX file), the linear head (its MatMul/Add constants), °F out."""
    proto = onnx.load(str(onnx_path))
    norm = meta["normalization"]
    feats = (x.astype(np.float64) - np.asarray(norm["feature_mean"])) / np.asarray(
        norm["feature_std"])  # [B, T, F]
    seq, hn, cn = numpy_recurrent(recurrent_layers(proto), feats, h0, c0)
    values = _constants(proto)
    (matmul,) = [n for n in proto.graph.node if n.op_type == "MatMul"]
    weight = next(values[i] for i in matmul.input if i in values)  # [H, 1]
    (add,) = [n for n in proto.graph.node if n.op_type == "Add" and matmul.output[0] in n.input]
    bias = next(values[i] for i in add.input if i in values)  # [1]
    delta = seq @ weight + bias  # [B, T, 1] normalized change
    return x[:, :, 0:1] + delta * norm["delta_std_f"], hn, cn


# ----------------------------------------------------------------------------- runtime checks


def contract_problems(path: str | Path) -> list[str]:
    """What, if anything, keeps this file from being served with no model.json."""
    proto = onnx.load(str(path))
    problems = []
    meta = {p.key: p.value for p in proto.metadata_props}
    cell = meta.get(METADATA_CELL_KEY)
    if cell not in CELL_OPS:
        return [f"metadata {METADATA_CELL_KEY} is {cell!r}"]
    ops = {n.op_type for n in proto.graph.node}
    if CELL_OPS[cell] not in ops or ops & {"Loop", "Scan"}:
        problems.append(f"ops {sorted(ops)} are not a native {CELL_OPS[cell]}")

    def dims(vi: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    ins = {i.name: i for i in proto.graph.input}
    outs = {o.name: o for o in proto.graph.output}
    lstm = cell == "lstm"
    want_in = ["input", "h0"] + (["c0"] if lstm else [])
    want_out = ["output", "hn"] + (["cn"] if lstm else [])
    if list(ins) != want_in or list(outs) != want_out:
        problems.append(f"names {list(ins)} -> {list(outs)}, expected {want_in} -> {want_out}")
        return problems
    for vi in [*ins.values(), *outs.values()]:
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{vi.name} is not float32")
        d = dims(vi)
        if len(d) != 3:
            problems.append(f"{vi.name} has rank {len(d)}, expected 3")
            continue
        dynamic = [isinstance(v, str) for v in d]
        expected = [True, True, False] if vi.name in ("input", "output") else [False, True, False]
        if dynamic != expected:
            problems.append(f"{vi.name} dims {d}: batch/time must be dynamic, the rest static")
    return problems


def streaming_problems(path: str | Path, meta: dict) -> list[str]:
    """Whether the file (metadata `rnnserve.streamable`) and its model.json ("streamable",
    "directions") tell the truth about stepping it: a model called streamable must not be
    bidirectional, and run in chunks with its state carried it must give what one whole run
    gives. (A model called not streamable is believed: saying so is always safe.)"""
    proto = onnx.load(str(path))
    directions = graph_directions(proto)
    problems = []
    if meta.get("directions", directions) != directions:
        problems.append(f"model.json says directions {meta['directions']}; the graph has "
                        f"{directions}")
    marked = {p.key: p.value for p in proto.metadata_props}.get(METADATA_STREAMABLE_KEY)
    if not meta.get("streamable", marked != "false"):
        return problems
    if directions == 2:
        return [*problems, "a bidirectional model is called streamable"]
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    difference = chunked_difference(path, input_size=ins["input"][2],
                                    state_layers=ins["h0"][0], hidden_size=ins["h0"][2],
                                    lstm="c0" in ins)
    if difference > STREAM_TOLERANCE:
        problems.append(f"called streamable, but run in chunks it differs from one whole run by "
                        f"{difference:.2g} (relative)")
    return problems


def verify_model_dir(model_dir: str | Path) -> list[str]:
    """Contract, streamability, model.json hash, and ONNX Runtime vs the NumPy reference on odd
    shapes."""
    model_dir = Path(model_dir)
    onnx_path = model_dir / "model.onnx"
    problems = contract_problems(onnx_path)
    meta_path = model_dir / "model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not problems:  # the streaming check runs the contract's tensor names
        problems = streaming_problems(onnx_path, meta)
    if not meta_path.is_file():
        return problems
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    if meta.get("onnx_sha256") != digest:
        problems.append("model.json onnx_sha256 does not match model.onnx")
    if "normalization" in meta:
        rng = np.random.default_rng(0)
        layers, hidden = meta["layers"], meta["hidden_size"]
        for batch, length in ((1, 1), (3, 17)):
            norm = meta["normalization"]  # inputs around the training months' readings
            x = rng.normal(norm["feature_mean"], norm["feature_std"],
                           (batch, length, meta["input_size"])).astype(np.float32)
            state = [rng.normal(0, 0.5, (layers, batch, hidden)).astype(np.float32)
                     for _ in range(1 + (meta["cell"] == "lstm"))]
            got = run_onnx(onnx_path, x, *state)
            ref = forecaster_reference(onnx_path, meta, x, *state)
            for name, g, r in zip(["output", "hn", "cn"], got, ref, strict=False):
                diff = float(np.max(np.abs(g - r)))
                if diff > 1e-4:
                    problems.append(f"{name} differs from the NumPy reference by {diff:.2g}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnserve.export.verify DIR...`: check every model directory below them."""
    roots = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or [Path("models")]
    failed = 0
    for root in roots:
        for onnx_path in sorted(root.rglob("model.onnx")):
            problems = verify_model_dir(onnx_path.parent)
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {onnx_path.parent}: {'; '.join(problems)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
