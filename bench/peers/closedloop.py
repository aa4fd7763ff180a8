"""The closed loop every KServe v2 row runs, over HTTP or gRPC alike: N sequences, each on a
connection (or gRPC stream) of its own, ONE timestep per request, each sending its next step
as soon as the previous reply is read, with the state the reply carried when the system
makes the client carry it (Triton) or none (rnnserve keeps it under `sequence_id`).

A system is a `Codec` (how a step is written and its reply read) and a `Link` opener (how
bytes travel). Measurement rules as every other load point here (`bench.stats.Window`): the
links open and every sequence's first step (sequence_start) is answered before the clock
starts; warm-up, then a window bounded in time and requests; afterwards each sequence's last
step (sequence_end, untimed) frees it on the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from bench.stats import CpuMarks, CpuProbe, LoadResult, Window

State = dict[str, bytes] | None
"""What the client carries between steps: the state tensors' raw bytes by name, or None."""


class Codec(Protocol):
    def request(self, index: int, number: int, state: State, start: bool, end: bool) -> Any:
        """Step `number` of sequence `index` (the message to send)."""
        ...

    def reply(self, raw: Any) -> tuple[str | None, State]:
        """(None or what is wrong with the reply, the state to send with the next step)."""
        ...


class Link(Protocol):
    async def call(self, message: Any) -> Any: ...

    async def aclose(self) -> None: ...


LinkOpener = Callable[[], Awaitable[Link]]


async def _bounded(makers: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(make: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await make()

    return list(await asyncio.gather(*(one(m) for m in makers)))


async def run_sequences(
    open_link: LinkOpener,
    codec: Codec,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    cpu_probes: Mapping[str, CpuProbe] | None = None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """One load point: open, start, measure, end. Raises when sequences fail to start."""
    links: list[Link] = []
    try:
        links = await asyncio.wait_for(_bounded([open_link] * concurrency, 64), timeout_s)
        states: list[State] = [None] * concurrency

        async def bookend(index: int, start: bool) -> str | None:
            try:
                raw = await links[index].call(
                    codec.request(index, 0, states[index], start=start, end=not start)
                )
                error, states[index] = codec.reply(raw)
                return error
            except Exception as exc:  # reported below
                return f"{type(exc).__name__}: {exc}"

        started = await asyncio.wait_for(
            asyncio.gather(*(bookend(i, True) for i in range(concurrency))), timeout_s
        )
        errors = [e for e in started if e is not None]
        if errors:
            raise RuntimeError(
                f"{len(errors)} of {concurrency} sequences failed to start: {errors[:3]}"
            )
        result = LoadResult(concurrency=concurrency, window_s=0.0)
        window = Window(time.perf_counter(), warmup_s, duration_s, max_requests)
        cpu = CpuMarks(cpu_probes)

        async def one_sequence(index: int) -> None:
            link = links[index]
            number = 1
            while window.open_for_new(time.perf_counter()):
                message = codec.request(index, number, states[index], False, False)
                number += 1
                began = time.perf_counter()
                try:
                    error, state = codec.reply(await link.call(message))
                    if error is None:
                        states[index] = state
                except Exception as exc:  # a failed step is a data point, not a crash
                    error = f"{type(exc).__name__}: {exc}"
                if not window.record(result, began, time.perf_counter(), error):
                    return
                if error is not None:
                    return  # the carried state is lost; this sequence stops

        timer = asyncio.create_task(cpu.mark_window_edges(window))
        try:
            await asyncio.wait_for(
                asyncio.gather(*(one_sequence(i) for i in range(concurrency))),
                warmup_s + duration_s + timeout_s,
            )
        finally:
            timer.cancel()
        result.window_s = window.length()
        cpu.into(result)
        await asyncio.wait_for(
            asyncio.gather(*(bookend(i, False) for i in range(concurrency))), timeout_s
        )
        return result
    finally:
        await asyncio.gather(*(link.aclose() for link in links), return_exceptions=True)
