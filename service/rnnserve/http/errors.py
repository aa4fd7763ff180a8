"""Every HTTP and WebSocket error body, written here and only here: the contract's
{"error": "<what is wrong and how to fix it>"} (a WebSocket reply or a gateway item adds
"status", and "retry_after_s" where the error has one).

Engine messages name the problem; an error with a `remedy` gets this transport's advice for it
appended: REST and WebSocket clients are told about /v1/... sessions, KServe v2 clients about
sequence_start and sequence_end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Send

from rnnserve.engine import V2_ADVICE
from rnnserve.errors import RequestTimedOut, RnnServeError
from rnnserve.http.responses import FastJSONResponse

log = logging.getLogger("rnnserve.http")

REST_ADVICE = {
    "create-session": ": create one with POST /v1/models/{model}/sessions",
    "free-session": "; delete some (DELETE /v1/sessions/{id})",
    "retry-step-id": ": retry with the same step_id (a repeat of one of the session's recent "
    "step_ids returns its recorded outputs and is never applied twice); without a step_id, "
    "read the session's steps (GET /v1/sessions/{id}) before retrying",
    "version-retired": ": create a new session (POST /v1/models/{model}/sessions serves the "
    "model's current version); before the grace ends, POST /v1/sessions/{id}/migrate moves a "
    "session to another version",
}
"""What a REST or WebSocket client is told to do about an error's `remedy` (/v2 routes get the
KServe v2 advice, V2_ADVICE)."""


CLIENT_CLOSED = 499
"""The status counted (metrics, access log) for a request whose client went away before its
body was complete: nginx's "client closed request". Never sent: nobody is there to read it."""

MALFORMED_BODY = "rnnserve.malformed_body"
"""Set in a request's ASGI scope by the HTTP protocol (`http/http_protocols.py`) when the body's
framing broke; the client was answered 400 (MALFORMED_BODY_MESSAGE) and the connection closed."""

MALFORMED_BODY_MESSAGE = (
    "malformed request body: its framing is broken (a chunked encoding with a bad chunk size "
    "or chunk end); send the body with a Content-Length, or as valid chunks")


def advised(exc: RnnServeError, v2: bool = False) -> str:
    """The error's message with this API's advice for its remedy, if it has one."""
    if exc.remedy is None:
        return exc.message
    return exc.message + (V2_ADVICE if v2 else REST_ADVICE).get(exc.remedy, "")


def error_fields(exc: RnnServeError) -> dict[str, Any]:
    """An error as a WebSocket reply or a gateway result item (REST advice)."""
    fields: dict[str, Any] = {"error": advised(exc), "status": exc.http_status}
    if exc.retry_after_s is not None:  # 503 overloaded or 429: when to send again
        fields["retry_after_s"] = exc.retry_after_s
    return fields


def error_json(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_response(status: int, message: str, retry_after_s: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s else None
    return FastJSONResponse({"error": message}, status_code=status, headers=headers)


def error_message(message: str, headers: Sequence[tuple[bytes, bytes]] = ()
                  ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """An error's response headers and body, as a plain layer writes them."""
    body = error_json(message)
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *headers], body


async def send_error(send: Send, status: int, message: str,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """An error answered by a plain ASGI layer (auth, size limit, time limit)."""
    head, body = error_message(message, headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RnnServeError)
    async def domain_error(request: Request, exc: RnnServeError) -> Response:
        # a time limit reached is no fault of the server's: the access log line warns of it
        if exc.http_status >= 500 and not isinstance(exc, RequestTimedOut):
            log.error("%s: %s", type(exc).__name__, exc.message)
        message = advised(exc, v2=request.url.path.startswith("/v2/"))
        return error_response(exc.http_status, message, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(400, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(exc.status_code, message)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _: ClientDisconnect) -> Response:
        """Reading the body found the connection gone: the client's doing, not a server error
        (the access log line and the metrics say 499; no traceback). A body whose framing
        broke was answered 400 by the protocol before the connection closed: counted as 400.
        Neither response is written (the connection is gone); they only carry the status."""
        if request.scope.get(MALFORMED_BODY):
            return error_response(400, MALFORMED_BODY_MESSAGE)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
