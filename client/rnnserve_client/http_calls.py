"""One HTTP call with the client's retry rules: backoff on a connection that failed and on
408, 429, 502, 503 and 504, honouring Retry-After; the server's error bodies become typed errors.

A call is `idempotent` when sending it twice does what sending it once does: every step (it
carries a step id), reads, resets, deletes, predictions. A create is not (each makes a
session), so it is retried only when the connection was never established, or the server
answered 408 (the body had not all arrived), 429 or 503. Those made nothing, but for a create
sent to a stalled Redis whose answer did not come back in time (a 503 "may have been applied",
or "unreachable" after a time-out): the session it may have made, never stepped, expires after
its idle timeout (and counts against a per-key or per-client cap until then)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from rnnserve_client.errors import (
    RETRYABLE,
    ConnectionFailed,
    RnnServeClientError,
    error_for,
)
from rnnserve_client.retry import RetryPolicy

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Transport errors that mean the request never reached the server."""


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class HttpCalls:
    """The HTTP side of an AsyncClient: one httpx.AsyncClient and the retry policy."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float,
                 retry: RetryPolicy, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        self.retry = retry
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s,
                                      transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, *, json: Any = None,
                   params: dict[str, Any] | None = None, session: bool = False,
                   idempotent: bool = True, gone_ok: bool = False) -> Any:
        """The answer's JSON (None for an empty one). `session`: a 404 means the session is
        gone (SessionGone) rather than the model. `gone_ok`: a 404 after a retry is success
        (a delete whose first try landed but whose answer was lost)."""
        backoff = self.retry.schedule()
        retried = False
        while True:
            try:
                response = await self.http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                wait = backoff.next_wait() if idempotent or isinstance(exc, NOT_SENT) else None
                if wait is None:
                    raise ConnectionFailed(f"{method} {self.url}{path}: {exc!r}") from exc
                await asyncio.sleep(wait)
                retried = True
                continue
            if response.status_code < 300:
                return response.json() if response.content else None
            if gone_ok and retried and response.status_code == 404:
                return None
            error = error_for(response.status_code, body_of(response), session=session,
                              retry_after_s=retry_after(response))
            if self._may_retry(error, idempotent):
                wait = backoff.next_wait(error.retry_after_s)
                if wait is not None:
                    await asyncio.sleep(wait)
                    retried = True
                    continue
            raise error

    @staticmethod
    def _may_retry(error: RnnServeClientError, idempotent: bool) -> bool:
        if idempotent:
            return error.status in RETRYABLE
        return error.status in (408, 429, 503)
