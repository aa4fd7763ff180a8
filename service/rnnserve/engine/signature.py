"""Read what a recurrent ONNX model takes and gives: the sequence input and output, and the
pairs of state tensors the server must carry between calls (h0→hn, c0→cn by default).

The contract (README.md, "Model repository"): `input` [batch, time, features] plus `h0` (and
`c0`) [layers·directions, batch, hidden]; `output` [batch, time, out] plus `hn` (and `cn`).
Batch and time are dynamic, everything else static. model.json may name other tensors and pairs.
The cell and the number of directions come from the graph's recurrent nodes (graph.py) where it
has them: a bidirectional model's state holds both directions of every layer on axis 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rnnserve.engine.graph import GraphFacts

DEFAULT_STATE_PAIRS = (("h0", "hn"), ("c0", "cn"))
STATE_BATCH_AXIS = 1


class TensorInfo(Protocol):
    """What ONNX Runtime's NodeArg offers (kept abstract so tests can build signatures)."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None]: ...
    @property
    def type(self) -> str: ...


class InvalidModel(ValueError):
    """The ONNX file does not follow the contract; the message says which tensor and why."""


@dataclass(frozen=True)
class StateTensor:
    """One carried state: fed as `input`, read back from `output`, batch on axis 1."""

    input: str
    output: str
    layers: int  # layers × directions (axis 0)
    hidden: int  # axis 2

    def shape(self, batch: int) -> tuple[int, int, int]:
        return (self.layers, batch, self.hidden)


@dataclass(frozen=True)
class Signature:
    """The tensors of one recurrent model, as the engine uses them."""

    cell: str
    input_name: str
    output_name: str
    input_size: int
    output_size: int
    states: tuple[StateTensor, ...]
    directions: int = 1  # 2: bidirectional (the graph's nodes say so, else model.json)

    @property
    def layers(self) -> int | None:
        """Stacked layers: the state's axis 0 is layers × directions (None without state)."""
        if not self.states:
            return None
        both = self.states[0].layers
        return both // self.directions if both % self.directions == 0 else both

    @property
    def input_names(self) -> tuple[str, ...]:
        return (self.input_name, *(s.input for s in self.states))

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.output_name, *(s.output for s in self.states))

    def state(self, name: str) -> StateTensor | None:
        """The state whose input (h0) or output (hn) is called `name`."""
        for s in self.states:
            if name in (s.input, s.output):
                return s
        return None


def _static(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _require(
    tensors: Mapping[str, TensorInfo], name: str, kind: str, static_axes: tuple[int, ...]
) -> list[int | None]:
    info = tensors.get(name)
    if info is None:
        raise InvalidModel(f"the model has no {kind} tensor named {name!r}")
    if info.type != "tensor(float)":
        raise InvalidModel(f"{kind} {name!r} is {info.type}; rnnserve serves float32 tensors")
    if len(info.shape) != 3:
        raise InvalidModel(f"{kind} {name!r} has rank {len(info.shape)}; expected rank 3")
    dims = [_static(d) for d in info.shape]
    for axis in static_axes:
        if dims[axis] is None:
            raise InvalidModel(f"{kind} {name!r} needs a static size on axis {axis}")
    return dims


def _directions(graph: GraphFacts, metadata: Mapping[str, Any]) -> int:
    """The graph's answer when it has recurrent nodes, else model.json's "directions"."""
    if graph.cells:
        return graph.directions
    declared = metadata.get("directions", 1)
    if declared not in (1, 2) or isinstance(declared, bool):
        raise InvalidModel(f'model.json "directions" is {declared!r}; use 1 or 2')
    return int(declared)


def read_signature(
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    metadata: Mapping[str, Any],
    onnx_metadata: Mapping[str, str],
    graph: GraphFacts | None = None,
) -> Signature:
    """Build the signature from the ONNX tensors, model.json, the ONNX metadata_props and the
    graph's recurrent nodes. The cell is model.json's, else the graph's, else the
    metadata's, else guessed from the number of states."""
    graph = graph or GraphFacts()
    ins = {t.name: t for t in inputs}
    outs = {t.name: t for t in outputs}
    input_name = str(metadata.get("sequence_input", "input"))
    output_name = str(metadata.get("sequence_output", "output"))
    x_dims = _require(ins, input_name, "input", (2,))
    y_dims = _require(outs, output_name, "output", ())

    declared = metadata.get("state_pairs")
    if declared is not None:
        if not isinstance(declared, list) or not all(
            isinstance(p, dict) and "input" in p and "output" in p for p in declared
        ):
            raise InvalidModel('model.json "state_pairs" must be [{"input": .., "output": ..}]')
        pairs = [(str(p["input"]), str(p["output"])) for p in declared]
    else:
        pairs = [(i, o) for i, o in DEFAULT_STATE_PAIRS if i in ins]

    states: list[StateTensor] = []
    for state_in, state_out in pairs:
        in_dims = _require(ins, state_in, "state input", (0, 2))
        out_dims = _require(outs, state_out, "state output", (0, 2))
        if (in_dims[0], in_dims[2]) != (out_dims[0], out_dims[2]):
            raise InvalidModel(
                f"state {state_in!r} {in_dims} and {state_out!r} {out_dims} differ in shape"
            )
        assert in_dims[0] is not None and in_dims[2] is not None
        states.append(StateTensor(state_in, state_out, in_dims[0], in_dims[2]))

    known = {input_name, *(s.input for s in states)}
    unknown = sorted(set(ins) - known)
    if unknown:
        raise InvalidModel(
            f"inputs {unknown} are neither the sequence input nor a state input; "
            'name the pairs in model.json "state_pairs"'
        )

    cell = str(
        metadata.get("cell")
        or graph.cell
        or onnx_metadata.get("rnnserve.cell")
        or ("lstm" if len(states) == 2 else "recurrent")
    )
    assert x_dims[2] is not None
    return Signature(
        cell=cell,
        input_name=input_name,
        output_name=output_name,
        input_size=x_dims[2],
        output_size=y_dims[2] or 0,  # 0 = learned from the warm-up run
        states=tuple(states),
        directions=_directions(graph, metadata),
    )
