"""Whether a model can be stepped: the load check behind sessions and KServe v2 sequences.

A session feeds a sequence a few timesteps at a time and carries the state outputs into the
next call's state inputs. That equals running the whole sequence at once only if the output at
time t depends on no later input and the state outputs continue the sequence. A bidirectional
(or reverse) recurrence reads the future: stepped, it answers silently wrong numbers (0.017 off
for a bi-LSTM, 0.025 for a 2-layer bi-GRU, against predict on the same inputs). So does a head
that mixes timesteps, and a recurrence exported as Scan or Loop may not hand back the state it
ended in. The graph shows native bidirectional nodes (graph.py); the rest shows only by running
the model. So every model version, at load, runs one short random sequence whole and in chunks
(batch 1, CHECK_CHUNKS timesteps: a handful of ONNX Runtime calls, once) and the outputs and
final states must agree. A model that fails still loads and serves predict; `Sessions` refuses
sessions and sequences on it (NotStreamable), with the reason found here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnserve.engine.graph import GraphFacts
from rnnserve.engine.signature import Signature
from rnnserve.errors import InferenceFailed

CHECK_CHUNKS = (1, 2, 2)
"""Timesteps of each call of the chunked run; the whole run takes their sum at once."""

RELATIVE_TOLERANCE = 1e-4
"""Largest difference allowed between chunked and whole, relative to the largest value of
the tensor compared: far above float32 rounding, far below what reading the future does."""

Run = Callable[[dict[str, np.ndarray], tuple[str, ...]], dict[str, np.ndarray]]
"""A blocking model call: feeds and output names in, outputs by name out (Runner.run_sync)."""


@dataclass(frozen=True)
class Streaming:
    """The verdict: `reason` (None when streamable) says, of "the model", why it cannot be
    stepped; the refusal and GET /v1/models/{m} quote it."""

    streamable: bool
    reason: str | None = None


STREAMABLE = Streaming(True)


def _declared_not_streamable(metadata: Mapping[str, Any], onnx_metadata: Mapping[str, str]
                             ) -> str | None:
    """Its author's word: model.json "streamable": false, or the exporter's ONNX metadata."""
    if metadata.get("streamable") is False:
        return 'its model.json says "streamable": false'
    if onnx_metadata.get("rnnserve.streamable", "").lower() == "false":
        return "its ONNX metadata says rnnserve.streamable = false"
    return None


def _relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return float(np.max(np.abs(got - want), initial=0.0)) / max(scale, 1e-6)


def _chunked_against_whole(run: Run, sig: Signature) -> tuple[str, float]:
    """The largest relative difference between the chunked and the whole run, and the tensor
    that showed it."""
    steps = sum(CHECK_CHUNKS)
    x = np.random.default_rng(0).standard_normal((1, steps, sig.input_size)).astype(np.float32)
    zeros = {s.input: np.zeros(s.shape(1), np.float32) for s in sig.states}
    whole = run({sig.input_name: x, **zeros}, sig.output_names)
    carried, pieces, start = zeros, [], 0
    for length in CHECK_CHUNKS:
        out = run({sig.input_name: x[:, start:start + length], **carried}, sig.output_names)
        pieces.append(out[sig.output_name])
        carried = {s.input: out[s.output] for s in sig.states}
        start += length
    chunked = {sig.output_name: np.concatenate(pieces, axis=1),
               **{s.output: carried[s.input] for s in sig.states}}
    worst = max(chunked, key=lambda name: _relative_difference(chunked[name], whole[name]))
    return worst, _relative_difference(chunked[worst], whole[worst])


def check_streaming(run: Run, sig: Signature, graph: GraphFacts, *,
                    metadata: Mapping[str, Any], onnx_metadata: Mapping[str, str],
                    fixed_time: bool = False) -> Streaming:
    """Can `sig`'s model be stepped? The graph and its author answer first (a bidirectional
    node: no); otherwise the chunked and the whole run must agree. A model whose time axis
    is fixed cannot run both, and is taken at its word (stepping it one timestep at a time is
    all it can do anyway)."""
    if sig.directions == 2:
        return Streaming(False, "the model is bidirectional: its outputs at time t depend on "
                                "later inputs")
    if graph.reverse:
        return Streaming(False, "the model runs a recurrence in reverse: its outputs at time t "
                                "depend on later inputs")
    declared = _declared_not_streamable(metadata, onnx_metadata)
    if declared is not None:
        return Streaming(False, declared)
    if fixed_time:
        return STREAMABLE
    try:
        tensor, difference = _chunked_against_whole(run, sig)
    except InferenceFailed as exc:
        return Streaming(False, f"it failed to run a {sum(CHECK_CHUNKS)}-step sequence at "
                                f"load: {exc.message}")
    if difference > RELATIVE_TOLERANCE:
        return Streaming(False, f"run in chunks with its state carried, it gives other results "
                                f"than run whole ({tensor!r} differs by {difference:.2g}, "
                                f"relative): its outputs depend on later inputs, or its state "
                                f"outputs do not continue the sequence")
    return STREAMABLE
