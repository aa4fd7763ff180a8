"""WebSocket streaming: one connection is one session.

The server first sends {"session_id", "model", "version", "steps", "expires_at", ...,
"last_step_id", "replay_window"} (greeting); then
each text message {"inputs": [[f, ...], ...]} gets one reply {"outputs": [...], "steps": n}
(with the message's "id" echoed if it had one), in order. A bad message gets {"error": ...}
and the connection and the state survive. `?session_id=` attaches to an existing session, so a
client reconnects after a dropped connection without losing state; the session outlives the
connection until deleted or idle past its timeout. A connect that cannot be served gets one
{"error", "status"} message, then a close: 1008 for a 4xx, 1013 ("try again later") for a
503 (the server holds its maximum of sessions, or is starting or stopping), 1011 for another
5xx. One stream holds a session at a time, and
the latest attach wins (a reconnecting device's old TCP connection may still look open): the
older socket's steps in flight are answered, nothing it sends after the new socket's greeting
is applied (the store fences its steps by attach number, across replicas too), and it is
closed with code 4409 ("replaced"), which a client must treat as final. A stream whose model
version was retired and whose grace is over gets the retired error for its step, then close
4410 ("retired"), final as well: a new session is needed (or a migrated one, before the end).
A session migrated to another version (POST .../migrate) while a stream holds it: the step
that finds it moved is answered 503 (not applied) and the stream closes with 1012 ("service
restart"), so the client reconnects with `?session_id=` and steps on its new version, with
its step count and replay window of step ids intact.

Under `rnnserve serve` the stream runs in direct mode (http/ws_protocol.py): each message
is parsed and handed to the session's stepper (the engine's step entrance) from the socket's
read callback, still as JSON lists: the entrance decodes the steps of one event-loop turn
together with this transport's decoder (json_arrays.JSON_STEPS). Each reply is written from
the batch's completion, in message order, with no task or future per step. A client may
pipeline: up to `ws_max_queue` messages are in flight per connection, then the server stops
reading from its socket until replies catch up (backpressure), so a client
that sends faster than it reads slows down instead of growing the server's memory. Under any
other ASGI server (tests' in-process client) the same messages take the plain ASGI path, one
at a time, with the same replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from rnnserve.engine import Engine, SessionRecord, SessionStepper, StepOutcome
from rnnserve.errors import (
    InvalidInput,
    RnnServeError,
    SessionMoved,
    SessionOnOtherVersion,
    StreamReplaced,
    VersionRetired,
)
from rnnserve.http.auth import chosen_subprotocol
from rnnserve.http.common import client_of, engine_of, owner_of, session_body
from rnnserve.http.errors import error_fields
from rnnserve.http.json_arrays import JSON_STEPS
from rnnserve.http.request_context import headers_of
from rnnserve.http.ws_protocol import DIRECT, DirectChannel
from rnnserve.metrics import OTHER
from rnnserve.stream_metrics import StreamSeries

router = APIRouter(prefix="/v1", tags=["sessions"])
access_log = logging.getLogger("rnnserve.access")

_FIELDS = {"inputs", "id", "step_id"}

REPLACED = 4409
"""Close code: a newer connection attached to this session (the latest attach wins). Final:
the client must not reconnect, since that would take the session back from its successor."""
RETIRED = 4410
"""Close code: the session's model version was retired and its grace is over (410). Final."""
MOVED = 1012
"""Close code ("service restart"): the session was migrated to another version; reconnect with
?session_id= to step it there. Not final."""
CLOSE_REASONS = {REPLACED: "replaced", RETIRED: "retired", MOVED: "migrated"}
POLICY_VIOLATION, INTERNAL_ERROR, TRY_AGAIN_LATER = 1008, 1011, 1013
"""Close codes of a connect that failed (after its error message): the request was wrong (a
4xx: unknown session or model, a cap, a revoked key), the server failed (a 5xx but 503), or
the server is full or busy for now (503: reconnect after the message's retry_after_s)."""


def refusal_close_code(http_status: int) -> int:
    """The close code for a connect refused with this HTTP status (the status is in the error
    message sent just before the close): 1013 "try again later" for what passes with time (a
    cap, 429, or a full or busy server, 503), 1008 for another 4xx, 1011 for another 5xx."""
    if http_status in (429, 503):
        return TRY_AGAIN_LATER
    if http_status == 410:
        return RETIRED
    return POLICY_VIOLATION if http_status < 500 else INTERNAL_ERROR
DRAIN_S = 0.5  # once replaced, how long the steps in flight may take before the close
LET_GO = "a newer connection attached to this session; this step was not applied"


def parse_message(text: str | None) -> tuple[Any, Any, Any]:
    """A text message → (inputs as sent, id to echo, step id); InvalidInput says what is
    wrong. The inputs are converted and checked by the engine."""
    if text is None:
        raise InvalidInput('binary frames are not supported: send JSON text {"inputs": [[...]]}')
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if type(body) is dict and len(body) == 1 and "inputs" in body:  # the usual message
        return body["inputs"], None, None
    if not isinstance(body, dict):
        raise InvalidInput('each message must be a JSON object {"inputs": [[f, ...], ...]}')
    unknown = body.keys() - _FIELDS
    if unknown:
        raise InvalidInput(f"unknown field(s) {sorted(unknown)}; a message takes "
                           f"{sorted(_FIELDS)}")
    if "inputs" not in body:
        raise InvalidInput('"inputs" is missing: {"inputs": [[f, ...], ...]}')
    return body["inputs"], body.get("id"), body.get("step_id")


def encode_reply(outcome: StepOutcome, message_id: Any) -> bytes:
    """{"outputs", "steps"} or {"error", "status"}, with the message's "id" when it had one."""
    reply: dict[str, Any]
    if isinstance(outcome, RnnServeError):
        reply = error_fields(outcome)
    else:
        reply = {"outputs": outcome.outputs, "steps": outcome.steps}
    if message_id is not None:
        reply["id"] = message_id
    return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


def _text(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


class DirectStream:
    """One connection's steps in direct mode. Replies wait in `_replies` in message order
    (a slot is None until its step finishes) and leave from the front as soon as they are
    ready, so a fast step never overtakes a slow one.

    Once a newer connection attached to the session (`replaced` is set), the socket is no
    longer read; a message already read is answered StreamReplaced, not applied; the steps in
    flight are answered (applied, or refused by the store's fence), and `run` returns True so
    the handler closes with 4409."""

    def __init__(self, channel: DirectChannel, stepper: SessionStepper, max_in_flight: int,
                 replaced: asyncio.Future[int], series: StreamSeries) -> None:
        self._channel = channel
        self._series = series
        self._step = stepper.step
        self._max_in_flight = max_in_flight
        self._replies: deque[list[bytes | None]] = deque()
        self._paused = False
        self._replaced = replaced
        self._drained: asyncio.Event | None = None  # set once replaced: no reply pending

    async def run(self) -> int | None:
        """Serve until the connection closes (None) or must be closed with a final code (once
        the replies in flight are out, or after DRAIN_S): REPLACED when a newer connection
        took the session, RETIRED when its model version was retired, MOVED when the session
        was migrated to another version."""
        self._channel.attach(self._on_text, self._on_close)
        closed = self._channel.closed
        await asyncio.wait((closed, self._replaced), return_when=asyncio.FIRST_COMPLETED)
        if closed.done():
            return None
        self._channel.pause_reading()  # what the old client sends from now on is never read
        self._paused = True
        self._drained = asyncio.Event()
        if not self._replies:
            self._drained.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                await self._drained.wait()
        return self._replaced.result()

    def _on_text(self, text: str | None) -> None:
        started = self._series.received()
        slot: list[bytes | None] = [None]
        self._replies.append(slot)
        message_id = None
        try:
            inputs, message_id, step_id = parse_message(text)
            if self._drained is not None:  # read in the same chunk as the let-go
                raise _final(self._replaced.result())
            self._step(inputs, step_id, partial(self._answer, slot, message_id=message_id,
                                                started=started))
        except RnnServeError as exc:
            self._answer(slot, [exc], message_id, started)
            return
        if len(self._replies) >= self._max_in_flight and not self._paused:
            self._paused = True
            self._channel.pause_reading()

    def _answer(self, slot: list[bytes | None], outcomes: Sequence[StepOutcome],
                message_id: Any, started: float) -> None:
        outcome = was_moved(outcomes[0])
        self._series.replied(reply_code(outcome), started)
        if type(outcome) is SessionMoved and not self._replaced.done():
            self._replaced.set_result(MOVED)
        elif type(outcome) is StreamReplaced and not self._replaced.done():
            self._replaced.set_result(REPLACED)  # the store's fence saw a newer attach first
        elif type(outcome) is VersionRetired and not self._replaced.done():
            self._replaced.set_result(RETIRED)
        slot[0] = encode_reply(outcome, message_id)
        replies = self._replies
        while replies and (ready := replies[0][0]) is not None:
            replies.popleft()
            if not self._channel.send_text(ready):
                replies.clear()  # the connection is gone; its steps still applied
                break
        if not replies and self._drained is not None:
            self._drained.set()
        elif self._paused and self._drained is None and len(replies) < self._max_in_flight:
            self._paused = False
            self._channel.resume_reading()

    def _on_close(self) -> None:
        self._replies.clear()


async def _asgi_loop(websocket: WebSocket, stepper: SessionStepper,
                     replaced: asyncio.Future[int], series: StreamSeries) -> int | None:
    """The plain ASGI path: one message at a time. The final close code (REPLACED, RETIRED)
    once the step in flight, if any, was answered; None when the client went away."""
    while True:
        receiving = asyncio.ensure_future(websocket.receive())
        await asyncio.wait((receiving, replaced), return_when=asyncio.FIRST_COMPLETED)
        if not receiving.done():
            receiving.cancel()
            return replaced.result()
        message = receiving.result()
        if message["type"] == "websocket.disconnect":
            return None
        outcome: StepOutcome
        message_id = None
        started = series.received()
        try:
            inputs, message_id, step_id = parse_message(message.get("text"))
            if replaced.done():
                raise _final(replaced.result())
            outcome = was_moved(await stepper.step_async(inputs, step_id))
        except RnnServeError as exc:
            outcome = was_moved(exc)
        series.replied(reply_code(outcome), started)
        try:
            await websocket.send_text(encode_reply(outcome, message_id).decode())
        except (WebSocketDisconnect, RuntimeError):
            return None
        if isinstance(outcome, StreamReplaced):
            return REPLACED
        if isinstance(outcome, VersionRetired):
            return RETIRED
        if isinstance(outcome, SessionMoved):
            return MOVED


ROUTE = "/v1/models/{model}/stream"


@router.websocket(ROUTE.removeprefix("/v1"))
async def stream(websocket: WebSocket, model: str, session_id: str | None = None,
                 version: str | None = None) -> None:
    engine = engine_of(websocket)
    label = model if model in engine.models.versions else OTHER  # bounded metric labels
    series = engine.metrics.streams.series("websocket", ROUTE, label)
    series.opened()
    closed = CLIENT_CLOSE
    carrier = headers_of(websocket.scope) if engine.tracing.enabled else None
    started = time.perf_counter()
    log_line(logging.DEBUG, websocket, "open", 0.0, label)
    try:
        with engine.tracing.span(f"WS {ROUTE}", server=True, carrier=carrier) as span:
            if span is not None:
                span.set_attribute("rnnserve.model", label)
            closed = await _serve(websocket, engine, model, session_id, version, series)
    finally:
        series.closed(closed)
        log_line(logging.DEBUG if closed in (CLIENT_CLOSE, str(REPLACED), str(MOVED))
                 else logging.WARNING,
                 websocket, f"closed {closed}", time.perf_counter() - started, label)


def log_line(level: int, websocket: WebSocket, status: str, seconds: float,
             model: str) -> None:
    """A stream's open or close in the access log, with an HTTP request's fields."""
    if access_log.isEnabledFor(level):
        duration = round(seconds * 1000, 2)
        client = websocket.scope.get("client") or ("", 0)
        access_log.log(level, "WS %s %s %.1f ms", ROUTE, status, duration,
                       extra={"method": "WS", "path": ROUTE, "status": status,
                              "duration_ms": duration, "model": model, "client": client[0]})


async def _serve(websocket: WebSocket, engine: Engine, model: str, session_id: str | None,
                 version: str | None, series: StreamSeries) -> str:
    """One connection; returns how it closed (the close code the server sent, or
    CLIENT_CLOSE when the client closed or went away)."""
    owner = owner_of(websocket)
    await websocket.accept(subprotocol=chosen_subprotocol(websocket.scope))  # never the key
    sessions = engine.sessions
    try:
        if session_id:
            record = await sessions.describe(session_id, owner=owner)
            if record.model != model:
                raise InvalidInput(f"session {session_id!r} belongs to model {record.model!r}")
            record = await sessions.attach(session_id, owner)  # the latest attach wins
        else:
            record = await sessions.create(model, version=version, owner=owner,
                                           client=client_of(websocket))
        stepper = sessions.stepper(record, JSON_STEPS)  # resolved once: no lookup per step
    except RnnServeError as exc:
        await websocket.send_text(_text(error_fields(exc)))
        code = refusal_close_code(exc.http_status)
        await websocket.close(code=code)
        return str(code)
    replaced: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    release = sessions.hold(record, partial(_set, replaced))
    try:
        await websocket.send_text(_text(greeting(record, engine)))
        channel = websocket.scope.get("extensions", {}).get(DIRECT)
        if isinstance(channel, DirectChannel):
            final = await DirectStream(channel, stepper, engine.settings.ws_max_queue,
                                        replaced, series).run()
        else:
            final = await _asgi_loop(websocket, stepper, replaced, series)
        if final is not None:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # gone meanwhile
                await websocket.close(code=final, reason=CLOSE_REASONS[final])
            return str(final)
        return CLIENT_CLOSE
    finally:
        release()


def greeting(record: SessionRecord, engine: Engine) -> dict[str, Any]:
    """The first message: the session as REST describes it, the id of its latest applied
    step that carried one (`last_step_id`, null if none: a resuming client knows its steps up
    to that one landed) and `replay_window`, how many recent step ids the session replays
    rather than applies again (a client keeps fewer than that in flight)."""
    return {**session_body(record), "last_step_id": record.last_step_id,
            "replay_window": engine.settings.replay_window()}


def reply_code(outcome: StepOutcome) -> str:
    """A reply's status as the metrics count it: 200, or its error's HTTP status."""
    return str(outcome.http_status) if isinstance(outcome, RnnServeError) else "200"


CLIENT_CLOSE = "client"
"""How a stream closed when the client closed it or went away (its own close code is the
client's business)."""


def _set(future: asyncio.Future[int]) -> None:
    if not future.done():
        future.set_result(REPLACED)


def was_moved(outcome: StepOutcome) -> StepOutcome:
    """A step that found its session on another version than the stream's (migrated since
    the connect, or during the step) as SessionMoved: not applied, and the stream reconnects
    (MOVED) rather than step a version the session left."""
    if isinstance(outcome, SessionOnOtherVersion):
        return _final(MOVED)
    return outcome


def _final(code: int) -> RnnServeError:
    """The error of a message read once the stream is closing with `code`."""
    if code == MOVED:
        return SessionMoved("the session was migrated to another version of its model; this "
                            "step was not applied: reconnect with ?session_id= and send it "
                            "again")
    if code == RETIRED:
        return VersionRetired("the session's model version was retired; this step was not "
                              "applied")
    return StreamReplaced(LET_GO)
