"""The event loop every closed-loop load generator here runs on: uvloop when installed (the
cheapest client, since it shares the cores with the server under test), with the client's
own garbage collector kept quiet while it runs.

Why the collector: hundreds of clients in flight allocate response objects fast, so with
CPython's defaults (a young collection every 700 net allocations, a full one every hundred
of those) the collector ran every few requests and, now and then, walked everything the
benchmark process holds, figures of earlier phases included. Each pause stops every client
at once, and the requests then in flight look slow: latency the server under test never
caused, growing with the process. Measured with `bench.peers --only rest --no-peer
--rounds 2`, two runs each way, alternated (the quiet settings applied once, at the start of
the process, for that comparison): p99 ÷ p50 of rnnserve's REST steps 1.53, 2.87, 1.54, 2.86
and of the FastAPI echo 3.29, 3.59, 2.73, 3.50 with the defaults; 1.43, 1.65, 1.46, 1.59 and
1.87, 2.28, 2.42, 2.03 with the collector kept quiet (the second round of each run was the
worse with the defaults: more objects to walk). Every system measured gets the
same client, so this changes no comparison; it takes the client's pauses out of all of
them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

QUIET_THRESHOLDS = (10_000, 50, 1_000)
"""Young collections after 10,000 net allocations; older ones far more rarely. What the
window allocates and keeps (latency samples) is small next to that."""


@contextmanager
def quiet_collector() -> Iterator[None]:
    """Inside: everything the process held before is frozen (never walked again) and the
    collector runs rarely; after: the thresholds as they were and the frozen objects back in
    the collector's care."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*QUIET_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def run_client(coro: Coroutine[Any, Any, T], use_uvloop: bool = True) -> T:
    """Run a load generator's coroutine to the end with the collector quiet: on uvloop when
    installed (unless `use_uvloop` is False: the standard library's loop, for comparison)."""
    with quiet_collector():
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
        if not use_uvloop:
            return asyncio.run(coro)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
