"""AsyncStream: a session over the WebSocket, with steps pipelined in a bounded window and
every output delivered exactly once, in order, across dropped connections and dead replicas.

How: every step gets a step id made here and stays in `unanswered` until its reply arrives.
When the connection drops (or a replica dies, or the server restarts, or answers a step with
503), the stream reconnects with backoff to the same session (`?session_id=`) and re-sends
every unanswered step, in order, with its original id. The server replays a step it had
applied already (its recorded outputs: it keeps the last `replay_window` step ids of each
session, which the greeting announces) and applies the others, so each reading is applied
once and answered once. The window is never larger than `replay_window`, so every step that
might have landed is still replayable. Each reply's `steps` must follow the one before it (the
session's timesteps after the step): if they do not (a step was refused while a later one was
applied, or someone else stepped the session), the stream fails with StreamBroken rather than
hand out outputs of a state that skipped a reading.

Final, never retried: SessionGone (the session expired or was deleted: its state is lost),
SessionReplaced (close 4409: another connection attached to the session), SessionRetired
(close 4410), Unauthorized, BadInput for the connect itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from rnnserve_client.errors import (
    RETRYABLE,
    ConnectionFailed,
    RnnServeClientError,
    SessionReplaced,
    SessionRetired,
    StreamBroken,
    error_for,
)
from rnnserve_client.retry import Backoff, RetryPolicy
from rnnserve_client.wire import ArrayLike, StepIds, outputs, timesteps

REPLACED, RETIRED = 4409, 4410


@dataclass
class _Step:
    step_id: str
    message: str
    timesteps: int


class _Reconnect(Exception):
    """The connection must be made again (after `wait_s`, at least)."""

    def __init__(self, why: str, retry_after_s: float | None = None) -> None:
        super().__init__(why)
        self.retry_after_s = retry_after_s


class AsyncStream:
    """`async with client.stream(model) as s:` then `await s.send(x)` and `await s.recv()`
    (outputs [time, out] per step, in order), or `async for y in s.feed(readings)`.
    `session_id` is known once connected; the session outlives the stream (delete it with
    the REST API, or let it expire)."""

    def __init__(self, url: str, model: str, session_id: str | None = None, *,
                 api_key: str | None = None, window: int = 16,
                 retry: RetryPolicy | None = None, version: int | None = None) -> None:
        base = "wss" + url[5:] if url.startswith("https") else "ws" + url[4:]
        self._endpoint = f"{base}/v1/models/{model}/stream"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.version = version
        self.session_id = session_id
        self.window = max(1, window)
        self.replay_window: int | None = None
        self.last_step_id: str | None = None
        self.reconnects = 0
        self._retry = retry or RetryPolicy()
        self._ids = StepIds()
        self._unanswered: deque[_Step] = deque()
        self._answers: deque[np.ndarray | RnnServeClientError] = deque()
        self._changed = asyncio.Event()
        self._write = asyncio.Lock()
        self._ws: ClientConnection | None = None
        self._steps: int | None = None  # the session's timesteps after the last answer
        self._failure: RnnServeClientError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def __aenter__(self) -> AsyncStream:
        await self.open()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect (creating the session, or resuming `session_id`) and wait for the greeting."""
        self._runner = asyncio.create_task(self._run(), name="rnnserve-stream")
        waiter = asyncio.ensure_future(self._connected.wait())
        await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        self._raise_failure()

    async def close(self) -> None:
        """Close the connection; the session stays on the server."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None

    def drop_connection(self) -> None:
        """Abort the connection as a network failure would (no close handshake): the stream
        reconnects and re-sends what is unanswered. For drills and tests."""
        if self._ws is not None:
            self._ws.transport.abort()

    # -- the caller's side ------------------------------------------------------------------

    async def send(self, x: ArrayLike) -> str:
        """Queue one step (inputs [time, features] or one reading [features]) and send it
        when the window has room; returns its step id. Waits while `window` steps are
        unanswered (backpressure)."""
        arr = timesteps(x)
        while len(self._unanswered) >= self._limit():
            self._raise_failure()
            await self._wait_change()
        self._raise_failure()
        step_id = next(self._ids)
        step = _Step(step_id, json.dumps({"inputs": arr.tolist(), "step_id": step_id,
                                          "id": step_id}), arr.shape[0])
        async with self._write:
            self._unanswered.append(step)
            if self._ws is not None:
                with contextlib.suppress(ConnectionClosed):  # the reader reconnects, re-sends
                    await self._ws.send(step.message)
        return step_id

    async def recv(self) -> np.ndarray:
        """The next step's outputs [time, out], in the order the steps were sent; a step the
        server refused raises its typed error here, in its place."""
        while not self._answers:
            self._raise_failure()
            await self._wait_change()
        answer = self._answers.popleft()
        if isinstance(answer, RnnServeClientError):
            raise answer
        return answer

    async def step(self, x: ArrayLike) -> np.ndarray:
        """Send one step and wait for its outputs (no pipelining: see feed)."""
        await self.send(x)
        return await self.recv()

    async def feed(self, readings: Iterable[ArrayLike]) -> AsyncIterator[np.ndarray]:
        """Send every reading (each one step) with up to `window` in flight, yielding each
        one's outputs [time, out] in order as they come."""
        sent = 0
        received = 0
        source = iter(readings)
        exhausted = False
        while True:
            while not exhausted and sent - received < self._limit():
                try:
                    x = next(source)
                except StopIteration:
                    exhausted = True
                    break
                await self.send(x)
                sent += 1
            if received == sent and exhausted:
                return
            yield await self.recv()
            received += 1

    def _limit(self) -> int:
        return min(self.window, self.replay_window or self.window)

    async def _wait_change(self) -> None:
        self._changed.clear()
        runner = self._runner
        if runner is None or runner.done():
            self._raise_failure()
            raise ConnectionFailed("the stream is closed")
        waiter = asyncio.ensure_future(self._changed.wait())
        await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _notify(self) -> None:
        self._changed.set()

    # -- the connection's side --------------------------------------------------------------

    async def _run(self) -> None:
        backoff: Backoff | None = None
        try:
            while True:
                self._greeted = False
                try:
                    await self._connect_and_read()
                    raise _Reconnect("the server closed the connection")
                except _Reconnect as why:
                    if self._greeted:  # that connection worked: a new outage starts
                        backoff = None
                    backoff = backoff or self._retry.schedule()
                    wait = backoff.next_wait(why.retry_after_s)
                    if wait is None:
                        raise ConnectionFailed(f"{self._endpoint}: gave up reconnecting "
                                               f"({why})") from why
                    self.reconnects += 1
                    await asyncio.sleep(wait)
        except RnnServeClientError as exc:
            self._failure = exc
        except Exception as exc:  # never leave a caller waiting on a dead reader
            self._failure = ConnectionFailed(f"{self._endpoint}: {exc!r}")
        finally:
            self._notify()

    _greeted = False

    async def _connect_and_read(self) -> None:
        if self.session_id:
            url = f"{self._endpoint}?session_id={self.session_id}"
        else:
            url = self._endpoint + (f"?version={self.version}" if self.version else "")
        try:
            ws = await connect(url, additional_headers=self._headers, open_timeout=10,
                               max_size=2 ** 24)
        except InvalidStatus as exc:
            status = exc.response.status_code
            error = error_for(status, _json(exc.response.body), session=bool(self.session_id))
            if status in RETRYABLE:
                raise _Reconnect(str(error), error.retry_after_s) from exc
            raise error from exc
        except (TimeoutError, OSError, WebSocketException) as exc:
            raise _Reconnect(repr(exc)) from exc
        try:
            await self._greet(ws)
            await self._read(ws)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == REPLACED:
                raise SessionReplaced(f"session {self.session_id!r} was attached by a newer "
                                      "connection (close 4409): this stream let go of it",
                                      409) from exc
            if code == RETIRED:
                raise SessionRetired(f"session {self.session_id!r}: its model version was "
                                     f"retired (close 4410: {exc.rcvd.reason if exc.rcvd else ''})",
                                     410) from exc
            raise _Reconnect(f"connection closed ({code})") from exc
        finally:
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    async def _greet(self, ws: ClientConnection) -> None:
        """Read the greeting (or the refusal), then re-send every unanswered step."""
        hello = json.loads(await ws.recv())
        if "error" in hello:
            error = error_for(int(hello.get("status", 500)), hello,
                              session=bool(self.session_id))
            if error.status in RETRYABLE:
                raise _Reconnect(str(error), error.retry_after_s)
            raise error
        self.session_id = hello["session_id"]
        self.version = hello.get("version", self.version)
        self.last_step_id = hello.get("last_step_id")
        self.replay_window = hello.get("replay_window") or 1
        if self._steps is None:
            self._steps = int(hello["steps"])
        async with self._write:
            for step in self._unanswered:
                await ws.send(step.message)
            self._ws = ws
        self._greeted = True
        self._connected.set()
        self._notify()

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            reply = json.loads(raw)
            if not self._unanswered:
                raise StreamBroken(f"a reply for no step: {str(reply)[:200]}")
            head = self._unanswered[0]
            if "error" in reply:
                error = error_for(int(reply.get("status", 500)), reply, session=True)
                if error.status in RETRYABLE:  # not applied: re-sent after a reconnect
                    raise _Reconnect(str(error), error.retry_after_s)
                if error.status in (404, 409, 410):
                    raise error
                self._unanswered.popleft()
                self._answers.append(error)
            else:
                expected = (self._steps or 0) + head.timesteps
                if int(reply["steps"]) != expected:
                    raise StreamBroken(
                        f"session {self.session_id!r}: step {head.step_id!r} left the session "
                        f"at {reply['steps']} timesteps, not {expected}: a step was refused "
                        "while a later one was applied, or another client stepped the "
                        "session; its outputs can no longer be given exactly once in order")
                self._steps = expected
                self._unanswered.popleft()
                self._answers.append(outputs(reply["outputs"]))
            self._notify()


def _json(body: bytes | bytearray | None) -> Any:
    try:
        return json.loads(body or b"")
    except ValueError:
        return (body or b"").decode("utf-8", "replace")
