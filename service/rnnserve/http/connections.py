"""Open connections per client address, and what the server writes on a connection it refuses
or gives up on before any request reached the app.

Why: uvicorn keeps a connection open for as long as its client trickles bytes of a request head
(only the open-file limit stops a few thousand such connections), and it does not limit how many
connections one address holds. `ConnectionGuard` is the server-wide bookkeeping the HTTP
protocols of `http/http_protocols.py` consult: one count per client address, taken when a
connection is made and given back when it is lost, and the head time limit they enforce.

A connection is keyed by its transport, not by its protocol object: a WebSocket upgrade replaces
uvicorn's HTTP protocol with the WebSocket protocol on the same transport (the HTTP protocol's
`connection_lost` is then never called), so whichever protocol sees the end releases the count,
and releasing twice is harmless.

Trusted proxies (--forwarded-allow-ips) are not counted: every connection through a proxy comes
from the proxy's address, so the per-client limit belongs on the proxy (the committed nginx
configuration has its own)."""

from __future__ import annotations

import asyncio
import http
import logging
import time
from typing import Any, ClassVar

from prometheus_client import Counter

from rnnserve.http.errors import error_json
from rnnserve.http.ws_protocol import DirectWebSocketProtocol
from rnnserve.proxies import TrustedProxies

log = logging.getLogger("rnnserve.http")

WARN_INTERVAL_S = 60.0
"""A refused address is logged at most once per this many seconds: a client that keeps opening
connections must not flood the log."""

REFUSED_LINGER_S = 1.0
"""How long a refused connection stays open after its 429 is written (the server's side already
shut for writing) to read and drop what the client sends. Closing a socket with unread data
makes the kernel reset the connection, and a reset can discard the 429 before the client reads
it; the limit bounds what a refused client can hold."""

RETRY_AFTER_S = 1
"""What a refused client is told to wait: connections end all the time, so a slot frees soon."""


def raw_response(status: int, message: str, *headers: tuple[str, str]) -> bytes:
    """A whole HTTP/1.1 error response with the contract's {"error": ...} body, for the moments
    no ASGI app can answer (no request yet, or its framing broke); the connection closes after."""
    body = error_json(message)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             "content-type: application/json", f"content-length: {len(body)}",
             *(f"{name}: {value}" for name, value in headers), "connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def peer_host(transport: asyncio.Transport) -> str | None:
    """The peer's address of a TCP connection; None for a unix socket (no address to count)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


class ConnectionGuard:
    """One per server: the open connections of each client address, the head time limit, and
    the refusals (counted in `rnnserve_http_connections_refused`, logged once per address per
    WARN_INTERVAL_S at warning)."""

    def __init__(self, header_timeout_s: float, max_per_client: int, proxies: TrustedProxies,
                 refused: Counter) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_per_client = max_per_client
        self.proxies = proxies
        self._open: dict[str, int] = {}  # address → open connections (absent when none)
        self._owner: dict[asyncio.Transport, str] = {}  # counted transport → its address
        self._warned: dict[str, float] = {}  # address → when it was last logged
        self._refused_over_cap = refused.labels("client_cap")
        self._refused_slow_head = refused.labels("header_timeout")

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection against its address; False (nothing counted) when the
        address already holds its limit. Unix sockets and trusted proxies are not counted."""
        if not self.max_per_client:
            return True
        host = peer_host(transport)
        if host is None or self.proxies.trusts(host):
            return True
        held = self._open.get(host, 0)
        if held >= self.max_per_client:
            self._refuse(transport, host, held)
            return False
        self._open[host] = held + 1
        self._owner[transport] = host
        return True

    def release(self, transport: asyncio.Transport) -> None:
        """Give back a connection's count; idempotent (the HTTP and the WebSocket protocol of
        one connection may both call it)."""
        host = self._owner.pop(transport, None)
        if host is None:
            return
        left = self._open[host] - 1
        if left:
            self._open[host] = left
        else:
            del self._open[host]

    def _refuse(self, transport: asyncio.Transport, host: str, held: int) -> None:
        self._refused_over_cap.inc()
        now = time.monotonic()
        if now - self._warned.get(host, -WARN_INTERVAL_S) >= WARN_INTERVAL_S:
            if len(self._warned) > 10_000:  # many addresses: forget the ones not seen lately
                self._warned = {h: t for h, t in self._warned.items()
                                if now - t < WARN_INTERVAL_S}
            self._warned[host] = now
            log.warning("refusing connections from %s: it holds %d open connections "
                        "(--max-connections-per-client %d); logged once per %.0f s per address",
                        host, held, self.max_per_client, WARN_INTERVAL_S)
        message = (f"too many open connections from {host}: at most {self.max_per_client} "
                   "(--max-connections-per-client); reuse a keep-alive connection or close "
                   f"some, then retry after {RETRY_AFTER_S} s")
        RefusedConnection(transport, raw_response(429, message,
                                                  ("retry-after", str(RETRY_AFTER_S))))

    def head_timed_out(self, transport: asyncio.Transport, head_begun: bool) -> None:
        """Close a connection whose request head did not arrive in time: with a 408 when the
        client began one (it may be waiting for an answer), silently when it sent nothing since
        its last response (a 408 there could cross a request the client is just sending on a
        keep-alive connection, and be taken for its answer)."""
        self._refused_slow_head.inc()
        if head_begun:
            transport.write(raw_response(408, (
                f"the request head (request line and headers) was not complete within "
                f"{self.header_timeout_s:g} s (--header-timeout-s); send it whole, at once")))
        log.debug("closing a connection from %s: no complete request head within %g s",
                  peer_host(transport), self.header_timeout_s)
        transport.close()


class RefusedConnection(asyncio.Protocol):
    """What a connection over the per-client limit becomes: its 429 is written at once (before
    any request: the limit is on connections, not requests), the server's side is shut for
    writing, and whatever the client sends is read and dropped until it closes or
    REFUSED_LINGER_S pass."""

    def __init__(self, transport: asyncio.Transport, response: bytes) -> None:
        self.transport = transport
        transport.set_protocol(self)
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # read and dropped, see REFUSED_LINGER_S

    def eof_received(self) -> bool:
        return False  # the client is done too: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class GuardedWebSocketProtocol(DirectWebSocketProtocol):
    """The WebSocket protocol that releases its connection's count when the connection ends
    (after an upgrade uvicorn's HTTP protocol never hears of it). `guard` is set on a subclass
    per server (`ConnectionGuard` users call `bound_to`)."""

    guard: ClassVar[ConnectionGuard]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.guard.release(self.transport)


def bound_to(cls: type[Any], guard: ConnectionGuard, **more: Any) -> type[asyncio.Protocol]:
    """A subclass of the protocol class `cls` with `guard` (and `more`) set: uvicorn builds
    each connection's protocol from a class and its own arguments (config, server_state,
    app_state), so the server's guard travels as a class attribute."""
    bound: type[asyncio.Protocol] = type(cls.__name__, (cls,), {"guard": guard, **more})
    return bound
