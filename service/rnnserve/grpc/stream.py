"""The lanes of one bidirectional stream: messages run concurrently, in order where it matters,
and their replies are written as they complete, with no task or future per message.

Messages with the same key (a sequence) run one at a time in arrival order: a key's later
messages wait in its lane until the one running is answered. Messages with different keys or
no key run concurrently, so that many sequences interleaved on one stream share the batcher's
ONNX Runtime calls. Each message is handed to `start`, which must call `finish(key, reply)`
once for it, now or later (a step's completion callback, a task): nothing is awaited per
message here. One coroutine (`run`) writes the replies in the order they finish; it sleeps
only when there is nothing to write. At most `window` messages are in flight, counted from
read to written: past that the stream is not read, and gRPC flow control pushes back on the
client, so a client that does not read its replies cannot grow the server's memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")
Key = Hashable | None


class StreamLanes(Generic[Request, Reply]):
    """`start(request, key)` runs a message; `finish(key, reply)` answers it."""

    def __init__(self, start: Callable[[Request, Key], None],
                 key_of: Callable[[Request], Key], window: int) -> None:
        self._start = start
        self._key_of = key_of
        self._window = window
        self._busy: dict[Hashable, deque[Request]] = {}  # key -> its messages waiting
        self._ready: deque[Reply] = deque()  # replies to write, in the order they finished
        self._in_flight = 0  # read and not yet written
        self._reading = True
        self._read_error: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None  # the writer sleeps on it
        self._room: asyncio.Future[None] | None = None  # the reader waits on it (window full)
        self._closed = False  # run returned: nothing more starts

    async def run(self, requests: AsyncIterable[Request],
                  write: Callable[[Reply], Awaitable[None]]) -> None:
        """Read `requests` and write each reply with `write` until the requests end and every
        reply is written. A broken request stream raises its error here."""
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(requests))
        try:
            ready = self._ready
            while True:
                while ready:
                    await write(ready.popleft())
                    self._in_flight -= 1
                    room = self._room
                    if room is not None and self._in_flight < self._window:
                        self._room = None
                        room.set_result(None)
                if self._read_error is not None:
                    raise self._read_error
                if not self._reading and not self._in_flight:
                    return
                self._wake = loop.create_future()
                await self._wake
        finally:
            self._closed = True
            reader.cancel()

    def finish(self, key: Key, reply: Reply) -> None:
        """Answer the message of `key` that is running (from the event loop's thread). The
        key's next message, if one waits, starts in the loop's next turn (so that a start
        that answers at once never recurses)."""
        self._ready.append(reply)
        self._wake_writer()
        if key is None:
            return
        waiting = self._busy.get(key)
        if waiting:
            asyncio.get_running_loop().call_soon(self._start_next, waiting.popleft(), key)
        else:
            self._busy.pop(key, None)

    def _start_next(self, request: Request, key: Key) -> None:
        if not self._closed:
            self._start(request, key)

    def _wake_writer(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set_result(None)

    async def _read(self, requests: AsyncIterable[Request]) -> None:
        loop = asyncio.get_running_loop()
        busy = self._busy
        try:
            async for request in requests:
                self._in_flight += 1
                key = self._key_of(request)
                if key is None:
                    self._start(request, None)
                elif key in busy:
                    busy[key].append(request)  # behind the key's running message
                else:
                    busy[key] = deque()
                    self._start(request, key)
                if self._in_flight >= self._window:
                    self._room = loop.create_future()
                    await self._room
        except Exception as exc:  # the request stream broke (a client gone, a bad message)
            self._read_error = exc
        finally:
            self._reading = False
            self._wake_writer()
