"""Optional API keys and per-key rate limits, for HTTP and WebSocket alike.

With keys configured, every route but health, metrics, the API docs and the console's static
files needs `Authorization: Bearer <key>`. Browsers cannot set headers on a WebSocket, so a
WebSocket may instead offer the subprotocols `rnnserve` and `rnnserve.key.<key>`
(`new WebSocket(url, ["rnnserve", "rnnserve.key." + key])`): the server selects `rnnserve` and
never echoes the key. `?api_key=<key>` still works, but a URL ends up in logs and histories
(the server redacts it from its own logs: logs.py). The key's identity becomes the request's
`owner`: sessions belong to the key that created them, and any other key is told they are
unknown.

The keys are the engine's key ring (auth.ApiKeys), which can change while serving: each
request is checked against the keys of that moment, and an open WebSocket whose key is
removed is closed with 1008 ("API key revoked").

The rate limit is a token bucket per owner (per client address when keys are off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnserve.auth import ApiKeys
from rnnserve.errors import InvalidInput
from rnnserve.http.errors import send_error

OPEN_PATHS = ("/v2/health/", "/metrics", "/docs", "/openapi.json", "/redoc")
"""Prefixes reachable without a key (the API docs pages with their assets under /docs/assets/,
http/api_docs.py); also "/" and /console/<file>, the console's page and assets (its model
reports under /console/models/... need a key)."""

SUBPROTOCOL = "rnnserve"
"""The one WebSocket subprotocol the server selects (when the client offers it)."""
KEY_SUBPROTOCOL = "rnnserve.key."
"""A client offering `rnnserve.key.<key>` authenticates with <key> (never selected)."""

MISSING_KEY = ("missing or invalid API key: send 'Authorization: Bearer <key>' (a WebSocket may "
               "offer the subprotocols 'rnnserve' and 'rnnserve.key.<key>')")


Refusal = tuple[int, str, list[tuple[bytes, bytes]]]
"""A refused request: status, message, extra response headers."""


def is_open(path: str) -> bool:
    if path == "/" or path.startswith(OPEN_PATHS):
        return True
    return path.startswith("/console/") and path.count("/") == 2


def chosen_subprotocol(scope: Scope) -> str | None:
    """What a WebSocket handler passes to `accept(subprotocol=...)`: `rnnserve` when the
    client offered it, else none. Never a `rnnserve.key.` one: that would echo the key."""
    return SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", ()) else None


def subprotocol_key(scope: Scope) -> str:
    """The key a WebSocket client offered as `rnnserve.key.<key>` ("" if none)."""
    for offered in scope.get("subprotocols", ()):
        if offered.startswith(KEY_SUBPROTOCOL):
            return str(offered[len(KEY_SUBPROTOCOL):])
    return ""


def header_text(value: bytes) -> str:
    """A header value as the client meant it: UTF-8, as clients send a key "kë" today (the
    keys are UTF-8 text), else Latin-1, HTTP's old reading of a byte (every byte is one)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def query_key(scope: Scope) -> str:
    """The value of the first `api_key=` in the query string ("" if none). Only that exact
    spelling counts (no other case, no percent-encoded name); the log redaction (redact.py)
    hides the value after every spelling anyway."""
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if name == "api_key":
            return unquote_plus(value)
    return ""


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


class OpenSockets:
    """The accepted WebSockets of each owner, so that removing a key closes its streams."""

    def __init__(self, keys: ApiKeys) -> None:
        self._closers: dict[str, set[Callable[[], None]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        keys.on_removed(self._revoke)

    def _revoke(self, owners: frozenset[str]) -> None:
        for owner in owners & self._closers.keys():
            for close in list(self._closers.get(owner, ())):
                close()

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                    owner: str) -> None:
        """Run the app for one WebSocket; if its owner's key is removed while it is open,
        close it with 1008 (in-flight replies are dropped; their steps still apply)."""
        state = {"accepted": False, "closed": False}

        async def tracked_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.close":
                if state["closed"]:
                    return  # already closed when the key was revoked
                state["closed"] = True
            await send(message)
            if kind == "websocket.accept":
                state["accepted"] = True

        def close() -> None:
            if state["accepted"] and not state["closed"]:
                state["closed"] = True
                task = asyncio.ensure_future(_send_quietly(send, {
                    "type": "websocket.close", "code": 1008, "reason": "API key revoked"}))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

        closers = self._closers.setdefault(owner, set())
        closers.add(close)
        try:
            await app(scope, receive, tracked_send)
        finally:
            closers.discard(close)
            if not closers:
                self._closers.pop(owner, None)


async def _send_quietly(send: Send, message: dict[str, Any]) -> None:
    try:
        await send(message)
    except Exception:  # the connection went away meanwhile: nothing left to close
        pass


class AuthAndRateLimit:
    """Pure ASGI middleware: authenticate, set scope["state"]["owner"], rate-limit."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, rate: float, burst: int) -> None:
        self.app = app
        self.keys = keys
        self.sockets = OpenSockets(keys)
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    def _owner(self, scope: Scope) -> str | None:
        """The caller's owner id, "" without keys, None when the key is missing or wrong."""
        if not self.keys.enabled:
            return ""
        given = ApiKeys.presented([header_text(value) for name, value in scope["headers"]
                                   if name == b"authorization"], "Authorization headers")
        if not given and scope["type"] == "websocket":
            given = subprotocol_key(scope) or query_key(scope)
        return self.keys.owner(given)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      message: str, headers: list[tuple[bytes, bytes]]) -> None:
        if scope["type"] == "websocket":
            await receive()  # the connect event
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send_error(send, status, message, headers)

    def refusal(self, scope: Scope) -> Refusal | None:
        """Why this HTTP request or WebSocket is refused (status, message, headers), else None
        with scope["state"]["owner"] set. The ASGI layer and the protocol's direct path
        (http/direct_path.py) both ask here, so the rules exist once."""
        if is_open(scope["path"]):
            return None
        if (scope["type"] == "websocket" and subprotocol_key(scope)
                and chosen_subprotocol(scope) is None):
            return 400, ("offer the subprotocol 'rnnserve' together with "
                         "'rnnserve.key.<key>'"), []
        try:
            owner = self._owner(scope)
        except InvalidInput as exc:
            return 400, exc.message, []
        if owner is None:
            return 401, MISSING_KEY, [(b"www-authenticate", b'Bearer realm="rnnserve"')]
        if self.buckets is not None:
            client = scope.get("client") or ("", 0)
            wait = self.buckets.take(owner or f"addr-{client[0]}")
            if wait > 0:
                return (429, f"rate limit of {self.buckets.rate:g} requests/s exceeded; "
                        f"retry in {wait:.2f} s",
                        [(b"retry-after", str(max(1, round(wait + 0.5))).encode())])
        scope.setdefault("state", {})["owner"] = owner
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            await self._refuse(scope, receive, send, *refused)
            return
        owner = scope.get("state", {}).get("owner", "")
        if scope["type"] == "websocket" and owner:
            await self.sockets.serve(self.app, scope, receive, send, owner)
            return
        await self.app(scope, receive, send)
