"""The in-process ceiling: ONNX Runtime running the exported model directly, one sequence per
call, no HTTP, no JSON. What any server of this model on this machine could at best approach
when it runs each request alone (a server that batches requests can pass it).

Threads default to ONE intra-op thread per session (`intra_op_threads=1`): with N concurrent
callers on 2 cores the parallelism comes from the callers, and a second intra-op thread per
run only adds contention (measured: see docs/bench_predict.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.inprocess import Work


def ort_session(model: Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """A CPU session; `intra_op_threads=0` lets ONNX Runtime choose (one per physical core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def zero_state_feeds(session: ort.InferenceSession, sequence: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds for one [time, features] sequence: `input` [1, time, features] and every other
    input (h0, c0: [layers, batch, hidden]) as zeros, the contract's initial state."""
    feeds = {"input": sequence[np.newaxis]}
    for arg in session.get_inputs():
        if arg.name != "input":
            layers, _, hidden = arg.shape
            feeds[arg.name] = np.zeros((layers, 1, hidden), dtype=np.float32)
    return feeds


def predict_work(session: ort.InferenceSession, sequences: np.ndarray) -> Work:
    """One call = one `session.run` on one sequence (cycling through `sequences`), feeds built
    beforehand as a server would have them after parsing."""
    all_feeds = [zero_state_feeds(session, sequence) for sequence in sequences]

    def run_one(worker: int, number: int) -> None:
        session.run(["output"], all_feeds[(worker + number) % len(all_feeds)])

    return run_one


def predict_outputs(session: ort.InferenceSession, sequence: np.ndarray) -> np.ndarray:
    """`output` [time, out] for one sequence (for the correctness check)."""
    return np.asarray(session.run(["output"], zero_state_feeds(session, sequence))[0][0])
