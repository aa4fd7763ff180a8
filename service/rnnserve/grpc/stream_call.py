"""One ModelStreamInfer call: every message through the v2 data plane, as ModelInfer, except
the steady steps of a sequence this stream is already stepping, which take a shorter way to the
same step.

The first message of a sequence on a stream (its start, or a continuation of a sequence begun
elsewhere), its end, a stateless request, and anything unusual go the whole way
(`V2DataPlane.infer`: every rule, every error) in a task of their own. Once a sequence's step
succeeded there, the stream remembers where the sequence lives (its session and model version:
a `SessionStepper`), and a later message of it that is a plain step (no start or end, the one
sequence input as [1, time, features] FP32 in `raw_input_contents`, known outputs) is checked
with the engine's own checks and entered with a callback: no lookup of the session, no task,
no future, and its reply encoded straight to bytes (wire.py). The step is the one
`V2DataPlane.infer` would make (`Sessions.step_checked`: same entrance, same batches, same
step ids); what it skips is only the lookup that found the session a moment ago. If the
session went meanwhile (ended or restarted elsewhere, expired, evicted, its version unloaded,
migrated to another version), the step fails before anything is written, the stream forgets
the sequence and the message goes the whole way, which answers it as before
(SequenceNotActive, or the step on the sequence's new session or new version). A message
the short way would refuse goes the whole way too, so every error a client sees comes from
the one data plane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import numpy as np

from rnnserve.auth import ApiKeys
from rnnserve.engine import (
    MAX_REQUEST_ID_CHARS,
    MAX_STEP_ID,
    Engine,
    Runner,
    SessionStepper,
    StepOutcome,
    StepResult,
    V2DataPlane,
    now_ns,
    sequence_session_id,
)
from rnnserve.errors import (
    RnnServeError,
    SessionMoved,
    SessionNotFound,
    Unauthenticated,
    Unavailable,
    not_applied,
)
from rnnserve.grpc import converters
from rnnserve.grpc.errors import status_of
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.stream import Key, StreamLanes
from rnnserve.grpc.undecodable import Undecodable
from rnnserve.grpc.wire import ReplyWriter
from rnnserve.stream_metrics import StreamSeries
from rnnserve.tracing import STREAM_SPAN_EVERY

STREAM_WINDOW = 256
"""Most messages of one ModelStreamInfer stream in flight at once."""
REVOKED = "the API key of this stream was removed; send a valid key on a new stream"
MAX_ACTIVE = 10_000
"""Sequences one stream remembers; past that it forgets them all (they go the whole way once
more), so a stream that starts ever new sequences without ending them stays bounded."""
_FLAGS = frozenset({"sequence_start", "sequence_end"})
ROUTE = "ModelStreamInfer"

Tick = tuple[StreamSeries, float]
"""A message's metric series and the time it arrived (StreamSeries.received)."""


@dataclass(slots=True, eq=False)
class _Sequence:
    """A sequence this stream stepped and did not end: where its steps go."""

    runner: Runner
    session_id: str
    owner: str
    version: str  # the runner's version, as a request's model_version names it
    states_of: dict[str, str]  # state output name -> state input name
    output_name: str  # the sequence output; the others are the states
    output_names: tuple[str, ...]  # every output, in the model's order
    known: frozenset[str]  # the same, to check requested outputs
    steppers: dict[bool, SessionStepper] = field(default_factory=dict)  # by with_states


class StreamCall:
    """The messages of one stream of one caller (`owner`, `client` as ModelInfer has them)."""

    def __init__(self, engine: Engine, v2: V2DataPlane, keys: ApiKeys, writer: ReplyWriter,
                 owner: str, client: str, model_label: Callable[[str], str]) -> None:
        self._engine = engine
        self._streams = engine.metrics.streams
        self._model_label = model_label
        self._tracing = engine.tracing
        self._messages = 0
        self._v2 = v2
        self._keys = keys
        self._writer = writer
        self._owner = owner
        self._client = client
        self._lanes: StreamLanes[pb.ModelInferRequest | Undecodable, bytes] = StreamLanes(
            self._start, _key, STREAM_WINDOW)
        self._active: dict[Hashable, _Sequence] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, requests: AsyncIterable[pb.ModelInferRequest], context: Any) -> None:
        """Serve the stream; a key removed meanwhile ends it (UNAUTHENTICATED) at its next
        reply."""
        async def write(reply: bytes) -> None:
            if not self._keys.holds(self._owner):
                await context.abort(*status_of(Unauthenticated(REVOKED)))
            await context.write(reply)

        series = self._streams.series("grpc", ROUTE, "")
        series.opened()
        code = "CANCELLED"
        try:
            await self._lanes.run(requests, write)
            code = "OK"
        except grpc.aio.AbortError:
            code = "UNAUTHENTICATED"
            raise
        finally:
            series.closed(code)
            for task in self._tasks:
                task.cancel()

    # -- each message ----------------------------------------------------------------------

    def _start(self, request: pb.ModelInferRequest | Undecodable, key: Key) -> None:
        if isinstance(request, Undecodable):  # answered in band; the stream goes on
            series = self._streams.series("grpc", ROUTE, "")
            self._error(None, pb.ModelInferRequest(), request.error, (series, series.received()))
            return
        series = self._streams.series("grpc", ROUTE, self._model_label(request.model_name))
        tick = series, series.received()
        self._messages += 1
        traced = self._tracing.enabled and self._messages % STREAM_SPAN_EVERY == 1
        if not self._keys.holds(self._owner):  # no message starts after the key's removal
            self._error(key, request, Unauthenticated(REVOKED), tick)
        elif key is None or traced or not self._short_way(request, key, tick):
            self._spawn_whole_way(request, key, tick, traced)

    def _finish(self, key: Key, reply: bytes, tick: Tick, code: str = "OK") -> None:
        """Answer a message, and count its reply."""
        tick[0].replied(code, tick[1])
        self._lanes.finish(key, reply)

    def _spawn_whole_way(self, request: pb.ModelInferRequest, key: Key, tick: Tick,
                         traced: bool = False) -> None:
        """The message the whole way, in a task of its own (cancelled with the stream); a
        traced one in a span of its own (tracing.STREAM_SPAN_EVERY)."""
        task = asyncio.create_task(self._whole_way(request, key, tick, traced))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _short_way(self, request: pb.ModelInferRequest, key: Hashable, tick: Tick) -> bool:
        try:
            return self._step(request, key, tick)
        except RnnServeError:  # the whole way meets it too, and answers it
            self._active.pop(key, None)
            return False

    async def _whole_way(self, request: pb.ModelInferRequest, key: Key, tick: Tick,
                         traced: bool) -> None:
        if not traced:
            await self._infer(request, key, tick)
            return
        with self._tracing.span(f"grpc {ROUTE} message") as span:
            span.set_attribute("rnnserve.model", request.model_name)
            await self._infer(request, key, tick)

    async def _infer(self, request: pb.ModelInferRequest, key: Key, tick: Tick) -> None:
        try:
            call = converters.decode_infer_request(request)
            answer = await self._v2.infer(call.request, self._owner, self._client)
            reply = self._writer.stream_reply(answer.model, str(answer.version), call.id,
                                              answer.outputs.items())
        except Exception as exc:
            self._error(key, request, exc, tick)
            return
        if key is not None and call.sequence is not None:
            self._remember(key, call.model, call.sequence[0], call.sequence[2], answer.model,
                           answer.version)
        self._finish(key, reply, tick)

    def _error(self, key: Key, request: pb.ModelInferRequest, exc: Exception,
               tick: Tick) -> None:
        """Answer a message with its error, in band."""
        code, message = status_of(exc)
        reply: bytes = converters.stream_error(request, message).SerializeToString()
        self._finish(key, reply, tick, code.name)

    def _remember(self, key: Hashable, model: str, sequence_id: int | str, ended: bool,
                  served_as: str, version: int) -> None:
        """After a step that went the whole way: where the sequence's next steps go."""
        if ended:
            self._active.pop(key, None)
            return
        runner = self._engine.served_version(served_as, version)
        if runner is None or self._engine.registry.has_superseded(served_as, version):
            return  # (an older instance may hold the session: each step looks it up)
        if len(self._active) >= MAX_ACTIVE:
            self._active.clear()
        sig = runner.signature
        names = sig.output_names
        self._active[key] = _Sequence(runner, sequence_session_id(model, sequence_id, self._owner),
                                      self._owner, str(version),
                                      {s.output: s.input for s in sig.states},
                                      sig.output_name, names, frozenset(names))

    def _step(self, request: pb.ModelInferRequest, key: Hashable, tick: Tick) -> bool:
        """Enter a plain step of a sequence this stream is stepping; False: go the whole way."""
        sequence = self._active.get(key)
        if sequence is None:
            return False
        runner = sequence.runner
        if request.model_version and request.model_version != sequence.version:
            return False
        if self._engine.served_version(runner.name, runner.version) is not runner:
            del self._active[key]  # unloaded or reloaded: the whole way says what to do
            return False
        plain, step_id = _plain_step(request.parameters)
        if not plain or len(request.id) > MAX_REQUEST_ID_CHARS:
            return False
        sig = runner.signature
        names = sequence.output_names
        outputs = request.outputs
        if outputs:
            names = tuple([o.name for o in outputs])
            if len(names) != 1 and len(set(names)) != len(names) or not (
                    sequence.known.issuperset(names)):
                return False
        x = _sequence_input(request, sig.input_name, sig.input_size)
        if x is None:
            return False
        limits = self._engine.limits
        try:
            limits.check_tensor_input(sig, x)
            limits.check_step_length(int(x.shape[1]), sig.input_name)
        except RnnServeError:
            return False
        with_states = len(names) != 1 or names[0] != sequence.output_name
        stepper = sequence.steppers.get(with_states)
        if stepper is None:
            stepper = sequence.steppers[with_states] = self._engine.sessions.sequence_stepper(
                runner, sequence.session_id, sequence.owner, with_states=with_states)
        stepper.step(x, step_id, partial(self._stepped, request, key, sequence, names, tick,
                                         now_ns()))
        return True

    def _stepped(self, request: pb.ModelInferRequest, key: Hashable, sequence: _Sequence,
                 names: tuple[str, ...], tick: Tick, started: int,
                 outcomes: list[StepOutcome]) -> None:
        """Answer a short-way step and count it (one request) in its version's statistics;
        one that goes the whole way again is counted there."""
        outcome = outcomes[0]
        if isinstance(outcome, StepResult):
            sequence.runner.stats.succeeded(started)
            output_name = sequence.output_name
            states_of = sequence.states_of
            reply = self._writer.stream_reply(
                sequence.runner.name, sequence.version, request.id,
                [(name, outcome.outputs[None] if name == output_name
                  else outcome.states[states_of[name]]) for name in names])
            self._finish(key, reply, tick)
        elif isinstance(outcome, SessionNotFound | SessionMoved):  # gone or migrated
            # meanwhile: nothing was written, and the whole way finds where it is now
            if self._active.get(key) is sequence:
                del self._active[key]
            self._spawn_whole_way(request, key, tick)
        else:
            sequence.runner.stats.failed(started)
            error = not_applied(outcome) if isinstance(outcome, Unavailable) else outcome
            self._error(key, request, error, tick)


def _key(request: pb.ModelInferRequest | Undecodable) -> Key:
    """The message's lane (converters.sequence_key); an undecodable message has none."""
    return None if isinstance(request, Undecodable) else converters.sequence_key(request)


def _plain_step(parameters: Any) -> tuple[bool, str | None]:
    """Whether a message's parameters are a plain step's (sequence_id, sequence_start and
    sequence_end false, a valid step_id, nothing else), and its step_id (None: none)."""
    if len(parameters) == 1:  # sequence_id alone: the usual message
        return True, None
    step_id: str | None = None
    for name, value in parameters.items():
        if name == "sequence_id":
            continue
        which = value.WhichOneof("parameter_choice")
        if name in _FLAGS:
            if which != "bool_param" or value.bool_param:
                return False, None
        elif name == "step_id" and which == "string_param":
            step_id = value.string_param
            if not 0 < len(step_id) <= MAX_STEP_ID:
                return False, None
        else:
            return False, None
    return True, step_id


def _sequence_input(request: pb.ModelInferRequest, name: str, size: int) -> np.ndarray | None:
    """The one sequence input as [1, time, size] float32 from raw_input_contents; None when
    the request holds anything else (the whole way then checks it and says what is wrong)."""
    inputs, raw = request.inputs, request.raw_input_contents
    if len(inputs) != 1 or len(raw) != 1:
        return None
    tensor = inputs[0]
    if tensor.name != name or tensor.datatype != "FP32" or tensor.HasField("contents"):
        return None
    shape = tensor.shape
    if len(shape) != 3 or shape[0] != 1 or shape[2] != size or shape[1] <= 0:
        return None
    data = raw[0]
    if len(data) != 4 * shape[1] * size:
        return None
    return np.frombuffer(data, dtype="<f4").reshape(1, shape[1], size)
