"""WebSocket streaming: one connection is one session.

The server first sends {"session_id", "model", "version", "steps", "expires_at", ...}; then
each text message {"inputs": [[f, ...], ...]} gets one reply {"outputs": [...], "steps": n}
(with the message's "id" echoed if it had one), in order. A bad message gets {"error": ...}
and the connection and the state survive. `?session_id=` attaches to an existing session, so a
client reconnects after a dropped connection without losing state; the session outlives the
connection until deleted or idle past its timeout.

Backpressure: a connection's messages are handled one at a time, and uvicorn stops reading
from the socket when `ws_max_queue` messages wait, so a client that sends faster than it reads
slows down instead of growing the server's memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from service.engine.tensors import to_float32
from service.errors import InvalidInput, RnnServeError
from service.http.common import engine_of, owner_of, session_body

router = APIRouter(prefix="/v1", tags=["sessions"])

_FIELDS = {"inputs", "id", "step_id"}


def _parse(message: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """A text frame → (inputs array, id to echo, step id)."""
    text = message.get("text")
    if text is None:
        raise InvalidInput('binary frames are not supported: send JSON text {"inputs": [[...]]}')
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput('each message must be a JSON object {"inputs": [[f, ...], ...]}')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; a message takes {sorted(_FIELDS)}")
    if "inputs" not in body:
        raise InvalidInput('"inputs" is missing: {"inputs": [[f, ...], ...]}')
    return to_float32(body["inputs"], "inputs"), body.get("id"), body.get("step_id")


def _dumps(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode()


@router.websocket("/models/{model}/stream")
async def stream(websocket: WebSocket, model: str, session_id: str | None = None,
                 version: str | None = None) -> None:
    engine = engine_of(websocket)
    owner = owner_of(websocket)
    await websocket.accept()
    try:
        sessions = engine.sessions
        if session_id:
            record = await sessions.describe(session_id, owner=owner)
            if record.model != model:
                raise InvalidInput(f"session {session_id!r} belongs to model {record.model!r}")
        else:
            record = await sessions.create(model, version=version, owner=owner)
    except RnnServeError as exc:
        await websocket.send_text(_dumps({"error": exc.message, "status": exc.http_status}))
        await websocket.close(code=1008 if exc.http_status < 500 else 1011)
        return
    await websocket.send_text(_dumps(session_body(record)))
    sid = record.id
    try:
        runner = sessions.runner_of(record)  # resolved once: steps need no lookup first
    except RnnServeError as exc:
        await websocket.send_text(_dumps({"error": exc.message, "status": exc.http_status}))
        await websocket.close(code=1011)
        return
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        reply: dict[str, Any]
        message_id = None
        try:
            inputs, message_id, step_id = _parse(message)
            result = await sessions.step_on(runner, sid, inputs, owner=owner, step_id=step_id)
            reply = {"outputs": result.outputs, "steps": result.steps}
        except RnnServeError as exc:
            reply = {"error": exc.message, "status": exc.http_status}
        if message_id is not None:
            reply["id"] = message_id
        try:
            await websocket.send_text(_dumps(reply))
        except (WebSocketDisconnect, RuntimeError):
            return
