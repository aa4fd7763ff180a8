"""Event-loop CPU per batch of session steps, by rows per batch, in one process.

`python -m bench.batch_cost [--sessions 1 4 16] [--steps 2000] [--rounds 3]`

Why: a step's cost on the event loop is mostly its batch's (the gather, the hand-off to an
ONNX Runtime worker and back, the scatter, the answers), shared by the rows that batch holds.
A client that sends one step at a time and waits (unary gRPC, a quiet REST client) gets
batches of one or two rows, and pays nearly a whole batch per step. This bench steps N
sessions of the medium LSTM in lockstep (each awaits its step before the next), so every batch
holds the N steps, and prints the event loop thread's CPU (`time.thread_time`) per step and
per batch, with the mean rows per batch the server counted (`rnnserve_batch_rows`). ONNX
Runtime's own CPU is on the worker threads and not counted. The figure per N is the median
round. The process is tuned as `rnnserve serve` tunes it, on the loop it runs (uvloop when
installed)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rnnserve.engine import Engine
from rnnserve.runtime import tune_for_serving
from rnnserve.serve import _loop_factory
from rnnserve.settings import Settings

from bench.medium_model import MODEL_NAME, MediumConfig, write_model_files


def batch_rows(engine: Engine) -> tuple[float, float]:
    """(rows, batches) the server counted so far for the medium model."""
    labels = {"model": MODEL_NAME, "version": "1"}
    registry = engine.metrics.registry
    return (registry.get_sample_value("rnnserve_batch_rows_sum", labels) or 0.0,
            registry.get_sample_value("rnnserve_batch_rows_count", labels) or 0.0)


async def one_round(engine: Engine, ids: list[str], steps: int) -> tuple[float, float]:
    """(event-loop µs per step, mean rows per batch) for `steps` steps over the sessions."""
    x = np.full((1, MediumConfig().input_size), 0.5, np.float32)
    each = max(1, steps // len(ids))

    async def stepping(session_id: str) -> None:
        for _ in range(each):
            await engine.sessions.step(session_id, x)

    rows, batches = batch_rows(engine)
    started = time.thread_time()
    await asyncio.gather(*(stepping(sid) for sid in ids))
    spent = time.thread_time() - started
    rows_after, batches_after = batch_rows(engine)
    return (spent / (each * len(ids)) * 1e6,
            (rows_after - rows) / max(1.0, batches_after - batches))


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rnnserve-batchcost-") as tmp:
        files = write_model_files(Path(tmp))
        engine = Engine(Settings(models=files.repository, grpc_port=0, log_level="warning"))
        engine.start()
        await engine.open()
        tune_for_serving(engine.settings.gil_switch_interval_ms / 1000)
        try:
            print(f"{args.steps} steps a round, {args.rounds} rounds; event-loop CPU (median "
                  "round)")
            for count in args.sessions:
                ids = [(await engine.sessions.create(MODEL_NAME)).id for _ in range(count)]
                await one_round(engine, ids, min(args.steps, 200))  # warm-up
                figures = [await one_round(engine, ids, args.steps) for _ in range(args.rounds)]
                per_step = statistics.median(f[0] for f in figures)
                rows = statistics.median(f[1] for f in figures)
                print(f"sessions {count:4}  rows per batch {rows:6.2f}  per step {per_step:7.1f} µs"
                      f"  per batch {per_step * rows:7.1f} µs")
                for sid in ids:
                    await engine.sessions.delete(sid)
        finally:
            await engine.aclose()
            engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main(arguments))
