"""Map every exception to a gRPC status, once, for all RPCs: domain errors carry their code
(rnnserve/errors.py) and message, with the KServe v2 advice for their remedy; anything else is
INTERNAL and logged, as over HTTP. Unary RPCs abort with the status; ModelStreamInfer sends the
message in-band (`error_message`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from rnnserve.engine import V2_ADVICE
from rnnserve.errors import RequestTimedOut, RnnServeError

log = logging.getLogger("rnnserve.grpc")

Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Unary = Callable[[Servicer, Request, Any], Awaitable[Response]]


MAX_MESSAGE_BYTES = 2000
"""The longest status message sent, in UTF-8 bytes. A status message travels in the trailing
metadata (`grpc-message`, percent-encoded: up to 3 characters a byte), and a client drops a
reply whose metadata passes its limit (16 KiB in grpc's C core) with RESOURCE_EXHAUSTED of its
own, so a message quoting a 20,000-character model name would never be read."""


def shortened(message: str) -> str:
    """The message, cut to MAX_MESSAGE_BYTES with a note of its length when longer."""
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    kept = raw[:MAX_MESSAGE_BYTES - 60].decode(errors="ignore")
    return f"{kept} ... (message cut: {len(raw)} bytes in all)"


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, RnnServeError):
        if exc.http_status >= 500 and not isinstance(exc, RequestTimedOut):  # a limit, no fault
            log.error("%s: %s", type(exc).__name__, shortened(exc.message))
        message = shortened(exc.message + V2_ADVICE.get(exc.remedy or "", ""))
        return grpc.StatusCode[exc.grpc_code], message
    log.error("unexpected error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"


def aborts_on_error(
    method: Unary[Servicer, Request, Response],
) -> Unary[Servicer, Request, Response]:
    """Decorate a unary servicer method: an exception ends the call with its status."""

    @functools.wraps(method)
    async def call(self: Servicer, request: Request, context: Any) -> Response:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_of(exc)
            await context.abort(code, message)  # raises AbortError
            raise AssertionError("unreachable") from exc

    return call
