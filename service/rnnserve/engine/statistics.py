"""Inference statistics per model version, in the shape of Triton's statistics extension
(`GET /v2/models/{m}/stats`, gRPC ModelStatistics), kept by the engine for every transport.

Two kinds of event feed them, both on the event loop (no locks):

- a request's end (`ModelStats.succeeded`, `failed`): one per request, whatever its transport
  and however many rows it carries: a REST predict or step, a gateway call, a WebSocket step
  message, a KServe v2 infer over HTTP, gRPC ModelInfer or one ModelStreamInfer message.
  `success` and `inference_count` rise by one per answered request, `fail` by one per refused
  one; their `ns` is the time from the engine taking the request to its answer.
- an ONNX Runtime run (`ModelStats.ran`, from batch.py): `execution_count` rises by one per run
  (fewer than requests when steps are batched together); `batch_stats` are keyed by the rows
  of that run (sequences or session steps, from every request in it); the phases of the
  run (queue, compute_input: reading states and building feeds, compute_infer: ONNX Runtime,
  compute_output: writing states and answering) are added to `inference_stats` once per row.

How this differs from Triton is in docs/config_and_statistics.md. A Runner owns its ModelStats,
so a version loaded again (a changed file) starts from zero, as Triton's does."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypedDict, TypeVar

T = TypeVar("T")


class DurationDict(TypedDict):
    count: int
    ns: int


class Duration:
    """A cumulative count and time (Triton's StatisticDuration)."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> DurationDict:
        return {"count": self.count, "ns": self.ns}


class _RunPhases:
    """The phases of runs of one size: count runs, time per run."""

    __slots__ = ("compute_input", "compute_infer", "compute_output")

    def __init__(self) -> None:
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()


class InferStatsDict(TypedDict):
    success: DurationDict
    fail: DurationDict
    queue: DurationDict
    compute_input: DurationDict
    compute_infer: DurationDict
    compute_output: DurationDict
    cache_hit: DurationDict
    cache_miss: DurationDict


class BatchStatsDict(TypedDict):
    batch_size: int
    compute_input: DurationDict
    compute_infer: DurationDict
    compute_output: DurationDict


class ModelStatsDict(TypedDict):
    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: InferStatsDict
    batch_stats: list[BatchStatsDict]


def now_ns() -> int:
    """The clock request times are measured on (monotonic)."""
    return time.perf_counter_ns()


class ModelStats:
    """The statistics of one model version since it was loaded."""

    __slots__ = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
                 "execution_count", "last_inference_ms", "_runs")

    def __init__(self) -> None:
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.execution_count = 0
        self.last_inference_ms = 0  # milliseconds since the epoch; 0: never
        self._runs: dict[int, _RunPhases] = {}

    def succeeded(self, started_ns: int) -> None:
        """A request answered; `started_ns` from `now_ns()` when the engine took it."""
        self.success.add(now_ns() - started_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, started_ns: int) -> None:
        """A request refused or failed after it named this version."""
        self.fail.add(now_ns() - started_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def ran(self, rows: int, queue_ns: int, input_ns: int, infer_ns: int,
            output_ns: int) -> None:
        """One ONNX Runtime run of `rows` rows: `queue_ns` is the rows' waiting summed (each
        row's job from its enqueue to the run's start), the others the run's phases."""
        self.execution_count += 1
        phases = self._runs.get(rows)
        if phases is None:
            phases = self._runs[rows] = _RunPhases()
        phases.compute_input.add(input_ns)
        phases.compute_infer.add(infer_ns)
        phases.compute_output.add(output_ns)
        self.queue.add(queue_ns, rows)
        self.compute_input.add(input_ns * rows, rows)
        self.compute_infer.add(infer_ns * rows, rows)
        self.compute_output.add(output_ns * rows, rows)

    def as_dict(self, name: str, version: int) -> ModelStatsDict:
        """Triton's JSON shape (its HTTP answer; gRPC builds its message from it)."""
        never = Duration().as_dict()
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.success.count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": never,  # no response cache
                "cache_miss": never,
            },
            "batch_stats": [
                {"batch_size": rows,
                 "compute_input": phases.compute_input.as_dict(),
                 "compute_infer": phases.compute_infer.as_dict(),
                 "compute_output": phases.compute_output.as_dict()}
                for rows, phases in sorted(self._runs.items())
            ],
        }


async def counted(stats: ModelStats, started_ns: int, work: Awaitable[T]) -> T:
    """Await one request's work, counting it in `stats` as answered or failed (a cancelled
    call is not counted: its caller is gone, or it was stopped before it changed anything)."""
    try:
        result = await work
    except Exception:
        stats.failed(started_ns)
        raise
    stats.succeeded(started_ns)
    return result
