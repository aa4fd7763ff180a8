"""The synchronous client: Client, Session and Stream, the same methods as AsyncClient,
AsyncSession and AsyncStream. Each Client runs its AsyncClient on an event loop of its own in
a background thread, so the behaviour (retries, exactly-once, the stream's window and resume)
is the async client's, one implementation for both."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from rnnserve_client.aio import AsyncClient, AsyncSession
from rnnserve_client.errors import RnnServeClientError
from rnnserve_client.retry import RetryPolicy
from rnnserve_client.stream import AsyncStream
from rnnserve_client.wire import ArrayLike, ModelInfo, State

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread; `run` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="rnnserve-client")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()


class Client:
    """Synchronous twin of AsyncClient (same arguments, same methods)."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 window: int = 16) -> None:
        self._loop = _Loop()
        self.aio = AsyncClient(url, api_key=api_key, timeout_s=timeout_s, retry=retry,
                               window=window)
        self.url = self.aio.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self.aio.aclose())
        self._loop.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def models(self) -> list[ModelInfo]:
        return self._run(self.aio.models())

    def model(self, name: str, version: int | None = None) -> ModelInfo:
        return self._run(self.aio.model(name, version))

    def predict(self, model: str, sequences: ArrayLike | Sequence[ArrayLike],
                version: int | None = None) -> Any:
        return self._run(self.aio.predict(model, sequences, version))

    def create_session(self, model: str, state: State | None = None,
                       version: int | None = None) -> Session:
        return Session(self, self._run(self.aio.create_session(model, state, version)))

    def session(self, session_id: str) -> Session:
        return Session(self, self._run(self.aio.session(session_id)))

    def create_sessions(self, model: str, count: int, *, version: int | None = None,
                        states: Sequence[State | None] | None = None
                        ) -> list[Session | RnnServeClientError]:
        made = self._run(self.aio.create_sessions(model, count, version=version, states=states))
        return [Session(self, s) if isinstance(s, AsyncSession) else s for s in made]

    def step_many(self, model: str, steps: Iterable[tuple[str, ArrayLike]]
                  ) -> list[np.ndarray | RnnServeClientError]:
        return self._run(self.aio.step_many(model, list(steps)))

    def stream(self, model: str, session_id: str | None = None, *,
               version: int | None = None, window: int | None = None) -> Stream:
        return Stream(self, self.aio.stream(model, session_id, version=version, window=window))


class Session:
    """Synchronous twin of AsyncSession; a context manager that deletes the session."""

    def __init__(self, client: Client, inner: AsyncSession) -> None:
        self._client = client
        self.aio = inner

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, model={self.model!r}, steps={self.steps})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.delete()

    @property
    def session_id(self) -> str:
        return self.aio.session_id

    @property
    def model(self) -> str:
        return self.aio.model

    @property
    def version(self) -> int:
        return self.aio.version

    @property
    def steps(self) -> int:
        return self.aio.steps

    def step(self, x: ArrayLike, step_id: str | None = None) -> np.ndarray:
        return self._client._run(self.aio.step(x, step_id))

    def state(self) -> State:
        return self._client._run(self.aio.state())

    def reset(self, state: State | None = None) -> None:
        self._client._run(self.aio.reset(state))

    def migrate(self, version: int) -> None:
        self._client._run(self.aio.migrate(version))

    def describe(self) -> dict[str, Any]:
        return self._client._run(self.aio.describe())

    def delete(self) -> None:
        self._client._run(self.aio.delete())


class Stream:
    """Synchronous twin of AsyncStream: `with client.stream(m) as s:` then
    `for y in s.feed(readings): ...`, or `s.send(x)` and `s.recv()`."""

    def __init__(self, client: Client, inner: AsyncStream) -> None:
        self._client = client
        self.aio = inner

    def __enter__(self) -> Stream:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def session_id(self) -> str | None:
        return self.aio.session_id

    @property
    def last_step_id(self) -> str | None:
        return self.aio.last_step_id

    @property
    def reconnects(self) -> int:
        return self.aio.reconnects

    def open(self) -> None:
        self._client._run(self.aio.open())

    def close(self) -> None:
        self._client._run(self.aio.close())

    def drop_connection(self) -> None:
        """See AsyncStream.drop_connection."""
        self._client._loop.loop.call_soon_threadsafe(self.aio.drop_connection)

    def send(self, x: ArrayLike) -> str:
        return self._client._run(self.aio.send(x))

    def recv(self) -> np.ndarray:
        return self._client._run(self.aio.recv())

    def step(self, x: ArrayLike) -> np.ndarray:
        return self._client._run(self.aio.step(x))

    def feed(self, readings: Iterable[ArrayLike]) -> Iterator[np.ndarray]:
        """Each reading's outputs in order, with up to the window of steps in flight."""
        outputs = self.aio.feed(readings)

        async def following() -> np.ndarray:
            return await outputs.__anext__()

        while True:
            try:
                yield self._client._run(following())
            except StopAsyncIteration:
                return
