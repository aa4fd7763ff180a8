"""What one load point measured, and its summary (throughput, latency percentiles).

Shared by the HTTP load generator and the in-process runner so that the systems being
compared are summarised by exactly the same code."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CpuProbe = Callable[[], float]
"""Returns CPU seconds used so far by something (this process, a server process)."""


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads). The load generator shares the
    cores with the server under test, so its own cost is part of the picture."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class LoadResult:
    """Requests completed inside the measured window (after warm-up, before the deadline or
    the request bound), with their latencies in seconds."""

    concurrency: int
    window_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # probe name -> CPU s in the window
    hit_request_bound: bool = False

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    def summary(self, items_per_request: int = 1) -> dict[str, Any]:
        """Plain numbers for tables and JSON. `items_per_request` turns requests/s into
        sequences/s when a request carries several sequences."""
        lat_ms = np.asarray(self.latencies_s, dtype=np.float64) * 1e3
        have = lat_ms.size > 0
        rate = self.completed / self.window_s if self.window_s > 0 else 0.0
        return {
            "concurrency": self.concurrency,
            "requests": self.completed,
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "window_s": round(self.window_s, 3),
            "requests_per_s": round(rate, 2),
            "sequences_per_s": round(rate * items_per_request, 2),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 3) if have else None,
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 3) if have else None,
            "mean_ms": round(float(lat_ms.mean()), 3) if have else None,
            "cpu_ms_per_request": {
                name: round(seconds * 1e3 / self.completed, 4) if self.completed else None
                for name, seconds in self.cpu_s.items()
            },
            "hit_request_bound": self.hit_request_bound,
        }


class Window:
    """The measured window of one load point: warm-up first, then `duration_s`, cut short
    when `max_requests` have completed. Completions during warm-up are not recorded and the
    requests still in flight at the deadline are dropped, so every recorded request started
    and finished under the same steady load."""

    def __init__(self, start: float, warmup_s: float, duration_s: float, max_requests: int):
        self.measure_from = start + warmup_s
        self.deadline = self.measure_from + duration_s
        self.max_requests = max_requests
        self.last_done = self.measure_from
        self.full = False

    def open_for_new(self, now: float) -> bool:
        return now < self.deadline and not self.full

    def record(self, result: LoadResult, started: float, done: float, error: str | None) -> bool:
        """Record one completion; returns False once the window is over for this client."""
        if done > self.deadline or self.full:
            return False
        if done < self.measure_from:
            return True
        if error is not None:
            result.errors += 1
            if len(result.error_samples) < 10:
                result.error_samples.append(error)
            return True
        result.latencies_s.append(done - started)
        self.last_done = done
        if result.completed >= self.max_requests:
            self.full = True
            result.hit_request_bound = True
            return False
        return True

    def window_edges(self) -> tuple[float, float]:
        return self.measure_from, self.deadline

    def length(self) -> float:
        end = self.last_done if self.full else self.deadline
        return max(end - self.measure_from, 1e-9)


class CpuMarks:
    """CPU readings of several probes at the window's two edges. The load generator's own
    process is always probed as "client"; in-flight requests draining after the deadline are
    not charged to the window."""

    def __init__(self, probes: Mapping[str, CpuProbe] | None) -> None:
        self.probes: dict[str, CpuProbe] = {"client": process_cpu_seconds, **(probes or {})}
        self.marks: list[dict[str, float]] = []

    def mark(self) -> None:
        self.marks.append({name: probe() for name, probe in self.probes.items()})

    async def mark_window_edges(self, window: Window) -> None:
        """Mark at the window's start and at its deadline (run as a task beside the load)."""
        for edge in window.window_edges():
            await asyncio.sleep(max(edge - time.perf_counter(), 0.0))
            self.mark()

    def mark_window_edges_blocking(self, window: Window) -> None:
        """The same from a thread of its own (thread-based load)."""
        for edge in window.window_edges():
            time.sleep(max(edge - time.perf_counter(), 0.0))
            self.mark()

    def into(self, result: LoadResult) -> None:
        """Store the CPU used between the marks (the end mark is taken now if the window was
        cut short by the request bound before its deadline)."""
        if not self.marks:
            return
        if len(self.marks) < 2:
            self.mark()
        start, end = self.marks[0], self.marks[1]
        result.cpu_s = {name: end[name] - start[name] for name in start}
