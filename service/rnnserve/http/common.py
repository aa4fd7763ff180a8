"""Small pieces every HTTP route module shares: the engine, the caller's identity, time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, WebSocket
from starlette.types import Scope

from rnnserve.engine import Engine, SessionRecord, V2DataPlane


def engine_of(request: Request | WebSocket) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def v2_of(request: Request) -> V2DataPlane:
    plane: V2DataPlane = request.app.state.v2
    return plane


def owner_of(request: Request | WebSocket) -> str:
    """The API key identity set by the auth layer; empty when keys are off."""
    return str(getattr(request.state, "owner", ""))


def client_of(request: Request | WebSocket,
              headers: Mapping[bytes, bytes] | None = None) -> str:
    """The caller's address as the per-client session cap counts it; "" for a trusted
    proxy's own request. uvicorn has put the forwarded address in scope["client"] already
    where the peer is a trusted proxy (--forwarded-allow-ips), and only there. `headers`:
    the request's `first_headers`, where the caller made them already."""
    host = (request.scope.get("client") or ("",))[0] or ""
    if headers is None:
        forwarded = any(name == b"x-forwarded-for" for name, _ in request.scope["headers"])
    else:
        forwarded = b"x-forwarded-for" in headers
    return engine_of(request).proxies.counted(host, forwarded)


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """A request's headers by (lower-case) name, the first of a repeated one as Starlette's
    `request.headers.get` gives it, made in one pass: a hot route that reads several
    headers would otherwise scan the list once for each."""
    return dict(reversed(scope["headers"]))


def iso(timestamp: float) -> str:
    """Epoch seconds → ISO 8601 UTC with milliseconds, e.g. 2026-11-28T19:30:00.123Z."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def session_body(record: SessionRecord,
                 times: Callable[[float], str] = iso) -> dict[str, Any]:
    """How a session is described over HTTP and WebSocket; `times` formats its instants (a
    bulk answer passes one that formats each distinct instant once)."""
    return {
        "session_id": record.id,
        "model": record.model,
        "version": record.version,
        "steps": record.steps,
        "created": times(record.created),
        "last_used": times(record.last_used),
        "expires_at": times(record.expires_at),
    }
