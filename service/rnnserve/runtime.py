"""Process-wide tuning for a long-running server, applied once the models are loaded.

Each knob answers a cost measured under load (python -m bench.sessions), not a guess:

* the garbage collector: everything loaded at startup (FastAPI, pydantic, ONNX Runtime
  bindings, the models) lives as long as the process; frozen, a full collection no longer
  walks it. Those collections took tens of milliseconds and were the stream's p99. And the
  youngest generation is collected after 10,000 net allocations instead of CPython's 700:
  with hundreds of requests in flight, their live objects kept crossing 700, so a young
  collection (walking every in-flight object) ran every ten or so requests, and every tenth
  of those promoted them into older collections. `python -m bench.http_path` prints the
  collector's share of a request: on KServe v2 steps, 12-14 µs of event-loop CPU on the
  direct path (18-21 on the ASGI path) with 700, under 0.5 (3-4) with 10,000. A young
  collection then takes about 2 ms, well inside a step's p99.
* the GIL switch interval: a worker thread whose ONNX Runtime run has finished needs the GIL
  to hand its result back, and waits up to this long while the event loop runs Python.
* glibc malloc: a batch's temporaries (gathered states, outputs: hundreds of KB each) were
  mmap'ed and unmapped on every batch, page faults included; kept in the heap instead, they
  are reused."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger("rnnserve")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # larger blocks (state slabs) still get their own mapping
TRIM_THRESHOLD_BYTES = 128 << 20  # free heap kept for the next batch, not returned
GC_THRESHOLDS = (10_000, 10, 10)  # young, middle, old: see the module's docstring


def tune_for_serving(gil_switch_interval_s: float) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(gil_switch_interval_s)
    if not keep_batch_buffers_in_heap():
        log.debug("malloc tuning skipped: not glibc")


def keep_batch_buffers_in_heap() -> bool:
    """glibc's mallopt; False (and nothing changed) on another C library."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
