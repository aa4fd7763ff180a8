"""AsyncClient: the native API of rnnserve with numpy in and out, exactly-once steps and
retries (http_calls), sessions (AsyncSession), gateways' bulk calls and the WebSocket stream
(stream.AsyncStream)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from rnnserve_client.errors import RETRYABLE, RnnServeClientError, error_for
from rnnserve_client.http_calls import HttpCalls
from rnnserve_client.retry import RetryPolicy
from rnnserve_client.stream import AsyncStream
from rnnserve_client.wire import (
    ArrayLike,
    ModelInfo,
    State,
    StepIds,
    decode_state,
    encode_state,
    key_from_env,
    outputs,
    server_url,
    timesteps,
)


class AsyncClient:
    """A client of one rnnserve server (or a load balancer in front of replicas).

    `url`: the server's base URL (default $RNNSERVE_URL, else http://127.0.0.1:8000);
    `api_key`: sent as a bearer token (default $RNNSERVE_API_KEY); `retry`: how long and how
    often calls are retried (RetryPolicy); `window`: how many steps a stream keeps in flight
    (never more than the server replays: its greeting's replay_window)."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 window: int = 16, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = server_url(url)
        self.api_key = key_from_env(api_key)
        self.retry = retry or RetryPolicy()
        self.window = window
        self._calls = HttpCalls(self.url, self.api_key, timeout_s, self.retry, transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._calls.aclose()

    async def call(self, method: str, path: str, **options: Any) -> Any:
        """Any call of the native API, with the client's retries and typed errors."""
        return await self._calls.call(method, path, **options)

    # -- models and stateless prediction ----------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        body = await self.call("GET", "/v1/models")
        return [ModelInfo.from_json(m) for m in body["models"]]

    async def model(self, name: str, version: int | None = None) -> ModelInfo:
        params = {"version": version} if version is not None else None
        return ModelInfo.from_json(await self.call("GET", f"/v1/models/{name}", params=params))

    async def predict(self, model: str, sequences: ArrayLike | Sequence[ArrayLike],
                      version: int | None = None) -> Any:
        """Outputs of whole sequences, each from a zero state. One array [batch, time,
        features] gives one array [batch, time, out]; one [time, features] gives [time, out];
        a list of sequences (ragged: lengths may differ) gives a list of arrays."""
        params = {"version": version} if version is not None else None
        if isinstance(sequences, np.ndarray) and sequences.ndim in (2, 3):
            batch = sequences[None] if sequences.ndim == 2 else sequences
            body = await self.call("POST", f"/v1/models/{model}/predict", params=params,
                                   json={"inputs": batch.astype(np.float32).tolist()})
            out = np.asarray(body["outputs"], dtype=np.float32)
            return out[0] if sequences.ndim == 2 else out
        listed = [timesteps(s).tolist() for s in sequences]
        body = await self.call("POST", f"/v1/models/{model}/predict", params=params,
                               json={"inputs": listed})
        return [outputs(o) for o in body["outputs"]]

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, model: str, state: State | None = None,
                             version: int | None = None) -> AsyncSession:
        """A new session (zeros, or `state`), pinned to `version` if given."""
        body: dict[str, Any] = {}
        if state is not None:
            body["state"] = encode_state(state)
        if version is not None:
            body["version"] = version
        made = await self.call("POST", f"/v1/models/{model}/sessions", json=body,
                               idempotent=False)
        return AsyncSession(self, made)

    async def session(self, session_id: str) -> AsyncSession:
        """An existing session (SessionGone if it is not there for this key)."""
        return AsyncSession(self, await self.call("GET", f"/v1/sessions/{session_id}",
                                                  session=True))

    async def create_sessions(self, model: str, count: int, *, version: int | None = None,
                              states: Sequence[State | None] | None = None
                              ) -> list[AsyncSession | RnnServeClientError]:
        """Many sessions in one request (gateways): one result per item, in order, each a
        session or the typed error of that item alone."""
        items: list[dict[str, Any]] = [{} for _ in range(count)]
        for item, state in zip(items, states or [], strict=False):
            if state is not None:
                item["state"] = encode_state(state)
        params = {"version": version} if version is not None else None
        body = await self.call("POST", f"/v1/models/{model}/sessions", params=params,
                               json={"sessions": items}, idempotent=False)
        return [AsyncSession(self, r) if "session_id" in r else
                error_for(int(r.get("status", 500)), r, session=True) for r in body["results"]]

    async def step_many(self, model: str, steps: Iterable[tuple[str, ArrayLike]]
                        ) -> list[np.ndarray | RnnServeClientError]:
        """One step for each (session id, inputs) in one request (gateways): outputs or the
        item's typed error, in order. Each item carries a step id, so items refused as busy
        (429, 503) are sent again, with their ids, until the retry policy gives up."""
        listed = list(steps)
        ids = StepIds()
        items = [{"session_id": sid, "inputs": timesteps(x).tolist(), "step_id": next(ids)}
                 for sid, x in listed]
        results: list[np.ndarray | RnnServeClientError | None] = [None] * len(items)
        todo = list(range(len(items)))
        backoff = self.retry.schedule()
        while todo:
            body = await self.call("POST", f"/v1/models/{model}/steps",
                                   json={"steps": [items[i] for i in todo]})
            again = []
            for i, r in zip(todo, body["results"], strict=True):
                if "outputs" in r:
                    results[i] = outputs(r["outputs"])
                else:
                    results[i] = error_for(int(r.get("status", 500)), r, session=True)
                    if r.get("status") in RETRYABLE:
                        again.append(i)
            wait = backoff.next_wait() if again else None
            if wait is None:
                break
            await asyncio.sleep(wait)
            todo = again
        return [r for r in results if r is not None]

    # -- streams ----------------------------------------------------------------------------

    def stream(self, model: str, session_id: str | None = None, *,
               version: int | None = None, window: int | None = None) -> AsyncStream:
        """A WebSocket stream into a new session (of `version`, if given), or into
        `session_id` (resumed). Use as `async with client.stream(m) as s:`; see AsyncStream."""
        return AsyncStream(self.url, model, session_id, api_key=self.api_key,
                           window=window or self.window, retry=self.retry, version=version)


class AsyncSession:
    """A server-side session: its hidden state lives on the server between steps. Every step
    carries a step id made here, so the client's retries never apply a step twice. As an
    async context manager it deletes the session on exit."""

    def __init__(self, client: AsyncClient, body: dict[str, Any]) -> None:
        self.client = client
        self.session_id: str = body["session_id"]
        self.model: str = body["model"]
        self.version: int = int(body["version"])
        self.steps: int = int(body.get("steps", 0))
        self._ids = StepIds()

    def __repr__(self) -> str:
        return f"AsyncSession({self.session_id!r}, model={self.model!r}, steps={self.steps})"

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.delete()

    @property
    def _path(self) -> str:
        return f"/v1/sessions/{self.session_id}"

    async def step(self, x: ArrayLike, step_id: str | None = None) -> np.ndarray:
        """Outputs [time, out] for inputs [time, features] (or one reading [features])."""
        body = await self.client.call(
            "POST", f"{self._path}/step", session=True,
            json={"inputs": timesteps(x).tolist(), "step_id": step_id or next(self._ids)})
        self.steps = int(body["steps"])
        return outputs(body["outputs"])

    async def state(self) -> State:
        body = await self.client.call("GET", f"{self._path}/state", session=True)
        self.steps = int(body["steps"])
        return decode_state(body["state"])

    async def reset(self, state: State | None = None) -> None:
        body = {} if state is None else {"state": encode_state(state)}
        answer = await self.client.call("POST", f"{self._path}/reset", json=body, session=True)
        self.steps = int(answer["steps"])

    async def migrate(self, version: int) -> None:
        """Move the session to another version of its model (the server re-warms it)."""
        answer = await self.client.call("POST", f"{self._path}/migrate",
                                        json={"version": version}, session=True)
        self.version = int(answer.get("version", version))
        self.steps = int(answer.get("steps", self.steps))

    async def describe(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.call("GET", self._path, session=True)
        self.steps = int(answer["steps"])
        return answer

    async def delete(self) -> None:
        await self.client.call("DELETE", self._path, session=True, gone_ok=True)
