"""What a model's ONNX graph says about its recurrence: the cell of its native RNN, GRU and
LSTM nodes and whether any runs in both directions.

ONNX Runtime's session does not show nodes or their attributes, so the graph is read with the
`onnx` package, once at load, without external weight files (only the nodes are needed).
Subgraphs (Loop, Scan, If bodies) and model-local functions are searched too. model.json may
describe a model, but the graph is what runs: a bidirectional node is found here even when no
metadata mentions it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

log = logging.getLogger("rnnserve.models")

RECURRENT_OPS = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}
"""The ONNX operators of a native recurrence, and the cell each one is."""


@dataclass(frozen=True)
class GraphFacts:
    """The recurrent nodes of one graph. No node (a recurrence unrolled into MatMuls, a Scan
    or a Loop, or a graph that could not be read) leaves `cells` empty and `directions` 1;
    the load check of streamability (streaming.py) still runs on such a model."""

    cells: tuple[str, ...] = ()  # each recurrent node's cell, in graph order
    directions: int = 1  # 2 when any recurrent node is "bidirectional"
    reverse: bool = False  # a node runs "reverse" only: it, too, reads the future

    @property
    def cell(self) -> str | None:
        """rnn, gru or lstm when every recurrent node is of that one kind; a "+"-joined list
        for a mix (e.g. "gru+lstm"); None without recurrent nodes."""
        kinds = list(dict.fromkeys(self.cells))
        return "+".join(kinds) if kinds else None


def _nodes(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    """Every node, including those of subgraphs held in attributes."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for graph in attr.graphs:
                    yield from _nodes(graph.node)


def _direction(node: onnx.NodeProto) -> str:
    for attr in node.attribute:
        if attr.name == "direction":
            value: bytes = attr.s
            return value.decode("utf-8", "replace")
    return "forward"  # the ONNX default


def facts_of(model: onnx.ModelProto) -> GraphFacts:
    """The recurrent nodes of a loaded model (main graph, subgraphs, local functions)."""
    functions = (node for function in model.functions for node in function.node)
    cells: list[str] = []
    directions, reverse = 1, False
    for node in _nodes([*model.graph.node, *functions]):
        cell = RECURRENT_OPS.get(node.op_type)
        if cell is None or node.domain not in ("", "ai.onnx"):
            continue
        cells.append(cell)
        direction = _direction(node)
        if direction == "bidirectional":
            directions = 2
        elif direction == "reverse":
            reverse = True
    return GraphFacts(tuple(cells), directions, reverse)


def read_graph(path: Path) -> GraphFacts:
    """The facts of the ONNX file at `path`. A file ONNX Runtime loaded but the `onnx` package
    cannot parse (a protobuf past 2 GiB, say) gives empty facts, logged: the model is still
    served, described from its tensors and checked by running it."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # any parse failure: describe the model from its tensors instead
        log.warning("could not read the graph of %s (%s); its cell and directions are taken "
                    "from model.json or its tensors", path, exc)
        return GraphFacts()
    return facts_of(model)
