"""The load shape of `loadgen` without HTTP: N threads, each calling a function in a loop for
the same warm-up and window. Used for the in-process ONNX Runtime ceiling: what the same
per-request work costs when nothing but the runtime is involved.

Threads are enough because ONNX Runtime releases the GIL inside `InferenceSession.run` and
allows concurrent runs on one session."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

Work = Callable[[int, int], None]
"""(worker index, call number of that worker) -> None; raises on failure."""


def run_threads(
    work: Work,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    max_requests: int = 100_000,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
) -> LoadResult:
    """Run `work` from `concurrency` threads, closed loop, and return what completed inside
    the measured window (same rules as the HTTP load generator: `bench.stats.Window`)."""
    result = LoadResult(concurrency=concurrency, window_s=0.0)
    window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
    lock = threading.Lock()  # Window and LoadResult are shared by all workers
    cpu = CpuMarks(cpu_probes)  # "client" here is the whole cost: the runtime runs in-process

    def worker(index: int) -> None:
        # A call's latency runs from the moment its worker was free to make it (the previous
        # call's completion), not from when the thread next got the GIL and the CPU: with N
        # threads on 2 cores that wait is the in-process equivalent of a server's queue, and
        # leaving it out would report only the fast, never-preempted calls.
        number = 0
        ready = time.perf_counter()
        while window.open_for_new(ready):
            try:
                work(index, number)
                error = None
            except Exception as exc:  # a failed call is a data point, not a crash
                error = f"{type(exc).__name__}: {exc}"
            number += 1
            done = time.perf_counter()
            with lock:
                if not window.record(result, ready, done, error):
                    return
            ready = done

    timer = threading.Thread(target=cpu.mark_window_edges_blocking, args=(window,),
                             daemon=True)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    timer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.window_s = window.length()
    timer.join(timeout=0)  # still sleeping only if the request bound ended the window early
    cpu.into(result)
    return result
