"""Run the messages of one bidirectional stream concurrently, keeping order where it matters.

Messages with the same key (a sequence) run one at a time in arrival order; messages with
different keys or no key run concurrently, so that many sequences interleaved on one stream
share the batcher's ONNX Runtime calls. Responses go out as they complete. At most `window`
messages are in flight: past that the stream is not read, and gRPC flow control pushes back
on the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Hashable
from typing import TypeVar, cast

Request = TypeVar("Request")
Response = TypeVar("Response")

_DONE = object()


async def pipeline(
    requests: AsyncIterable[Request],
    handle: Callable[[Request], Awaitable[Response]],
    key_of: Callable[[Request], Hashable | None],
    window: int,
) -> AsyncIterator[Response]:
    """Yield handle(request) for every request. `handle` must not raise: it turns failures
    into responses (in-band errors), so that one bad message never ends the stream."""
    results: asyncio.Queue[object] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()
    last: dict[Hashable, asyncio.Task[None]] = {}

    async def run(request: Request, after: asyncio.Task[None] | None) -> None:
        try:
            if after is not None:
                await asyncio.wait([after])  # its turn; its outcome is its own response
            results.put_nowait(await handle(request))
        finally:
            slots.release()

    def forget(key: Hashable) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if last.get(key) is task:  # no later message of this sequence is waiting
                del last[key]
        return done

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                key = key_of(request)
                task = asyncio.create_task(run(request, None if key is None else last.get(key)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if key is not None:
                    last[key] = task
                    task.add_done_callback(forget(key))
            if tasks:
                await asyncio.wait(set(tasks))
        finally:
            results.put_nowait(_DONE)

    reader = asyncio.create_task(read())
    try:
        while (item := await results.get()) is not _DONE:
            yield cast(Response, item)
        reader.result()  # the request stream's own error, if it broke
    finally:
        for task in (reader, *tasks):
            task.cancel()
