"""Optional API keys and per-key rate limits, for HTTP and WebSocket alike.

With keys configured, every route but health, metrics, the API docs and the console's static
files needs `Authorization: Bearer <key>` (a WebSocket may pass `?api_key=<key>` instead,
since browsers cannot set headers on one). The key's identity becomes the request's `owner`:
sessions belong to the key that created them, and any other key is told they are unknown.

The rate limit is a token bucket per owner (per client address when keys are off)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from rnnserve.auth import ApiKeys
from rnnserve.http.errors import send_error

OPEN_PATHS = ("/v2/health/", "/metrics", "/docs", "/openapi.json", "/redoc")
"""Prefixes reachable without a key; also "/" and /console/<file>, the console's page and
assets (its model reports under /console/models/... need a key)."""


def is_open(path: str) -> bool:
    if path == "/" or path.startswith(OPEN_PATHS):
        return True
    return path.startswith("/console/") and path.count("/") == 2


class TokenBuckets:
    """`rate` tokens per second up to `burst`, one bucket per owner; idle buckets are
    dropped once full again, so memory follows the number of active owners."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, at)

    def take(self, owner: str, now: float | None = None) -> float:
        """0 if the request may go; else the seconds until a token is free."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(owner, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[owner] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[owner] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget owners whose buckets have refilled
            self._buckets = {o: (t, a) for o, (t, a) in self._buckets.items()
                             if t + (now - a) * self.rate < self.burst}
        return 0.0


class AuthAndRateLimit:
    """Pure ASGI middleware: authenticate, set scope["state"]["owner"], rate-limit."""

    def __init__(self, app: ASGIApp, keys: frozenset[str], rate: float, burst: int) -> None:
        self.app = app
        self.keys = ApiKeys(keys)
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    def _owner(self, scope: Scope) -> str | None:
        """The caller's owner id, "" without keys, None when the key is missing or wrong."""
        if not self.keys.enabled:
            return ""
        given = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = ApiKeys.bearer(value.decode("latin-1"))
        if not given and scope["type"] == "websocket":
            given = parse_qs(scope.get("query_string", b"").decode()).get("api_key", [""])[0]
        return self.keys.owner(given)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      message: str, headers: list[tuple[bytes, bytes]]) -> None:
        if scope["type"] == "websocket":
            await receive()  # the connect event
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send_error(send, status, message, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if is_open(path):
            await self.app(scope, receive, send)
            return
        owner = self._owner(scope)
        if owner is None:
            await self._refuse(scope, receive, send, 401,
                               "missing or invalid API key: send 'Authorization: Bearer <key>'"
                               " (WebSocket: ?api_key=<key>)",
                               [(b"www-authenticate", b'Bearer realm="rnnserve"')])
            return
        if self.buckets is not None:
            client = scope.get("client") or ("", 0)
            wait = self.buckets.take(owner or f"addr-{client[0]}")
            if wait > 0:
                await self._refuse(scope, receive, send, 429,
                                   f"rate limit of {self.buckets.rate:g} requests/s exceeded; "
                                   f"retry in {wait:.2f} s",
                                   [(b"retry-after", str(max(1, round(wait + 0.5))).encode())])
                return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
