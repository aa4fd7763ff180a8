"""The v2 sequence lane: the steady steps of a KServe v2 sequence over HTTP, on a keep-alive
connection that already stepped that sequence, take the shorter way the gRPC stream's take
(grpc/stream_call.py) to the same step.

Measured with bench.peers' v2 client (256 sequences, one medium-LSTM step a request), a
framework-free HTTP echo of the same bytes costs 0.02 ms of server CPU a request, rnnserve's v2
step about 0.23 ms: nearly all of it the layers around one request (a task, the time limit's
task machinery, the route's request and response objects, the session's lookup and the step's
future), not HTTP. What the lane skips is only what the connection already knows: the first
step of a sequence on a connection (its start, or a continuation begun elsewhere) goes the
whole way (the direct path, every rule); once it answered 200 the connection remembers where
the sequence lives (its model version: a `SessionStepper`, as the gRPC stream does). A later
request of it that is a plain step (no start or end, known outputs, no content coding) is
checked with the data plane's own checks (`V2DataPlane.later_step_input`),
entered with a callback, and answered from the batch: no task, no lookup, no future.

The layers' rules are the same calls as on the direct path: the API key check
(`AuthAndRateLimit.refusal`), the request id, the metrics and log line
(`RequestContext.finished`), the time limit (the lane's steps share one timer, in a
DeadlineQueue: at the limit a step short of its commit point is withdrawn and answered 504, as
`step_waits.answered` does; a committed step is answered with its real outcome), the response
compression (`compress`). The lane is not taken while tracing is on (a request's span needs
its task) or with a rate limit (a refused lane request must not take a token twice). A step
whose session went meanwhile (ended, restarted, expired, evicted, migrated, its version
unloaded) fails before anything is written;
the connection forgets the sequence and the request goes the whole way, which answers it as
before. Any request the lane would refuse goes the whole way too, so every error a client sees
comes from the one data plane and the application's own handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson

from rnnserve.engine import (
    Engine,
    Runner,
    SessionStepper,
    StepOutcome,
    StepResult,
    V2DataPlane,
    answer_of,
    now_ns,
    sequence_parameters,
    sequence_session_id,
    step_outputs,
)
from rnnserve.errors import RnnServeError, SessionMoved, SessionNotFound, Unavailable, not_applied
from rnnserve.http.common import first_headers
from rnnserve.http.deadline_queue import DeadlineQueue
from rnnserve.http.errors import error_message
from rnnserve.http.repeat_steps import Repeat, repeat_of
from rnnserve.http.responses import Answer, written
from rnnserve.http.v2 import infer_response
from rnnserve.http.v2_codec import InferCall, decode_request

Found = tuple[str, Any, dict[str, str]]  # a hot route's match (HotRoutes.match)


class Connection(Protocol):
    """What the lane needs of the connection's protocol (direct_path.DirectExchanges)."""

    loop: asyncio.AbstractEventLoop

    @property
    def sequences(self) -> dict[str, Remembered]: ...

    repeat: Repeat | None  # its latest lane step read whole (http/repeat_steps.py)

    def whole_way(self, cycle: Any, found: Found, miss: Miss | None = None) -> None: ...

    def write_answer(self, cycle: Any, status: int, headers: list[tuple[bytes, bytes]],
                     payload: bytes) -> None: ...

V2_INFER = "/v2/models/{model}/infer"
MAX_REMEMBERED = 4096
"""Sequences a connection remembers at most (forgotten all at once when full)."""
_PLAIN = frozenset(("sequence_id", "sequence_start", "sequence_end", "step_id",
                    "binary_data_output"))


@dataclass
class Remembered:
    """Where a sequence this connection steps lives: its session on `runner`."""

    runner: Runner
    session_id: str
    owner: str
    steppers: dict[bool, SessionStepper] = field(default_factory=dict)  # by with_states
    instruments: Any = None  # its 200s' metrics (RequestContext.instruments), from the first


@dataclass(frozen=True)
class Miss:
    """A v2 sequence request the lane did not take (the connection does not know its sequence
    yet): once the whole way answers it 200, the connection remembers the sequence."""

    session_id: str
    owner: str


class SequenceLane:
    """Takes the plain later steps of known sequences; see the module's docstring."""

    def __init__(self, engine: Engine, plane: V2DataPlane, layers: Any) -> None:
        self.engine = engine
        self.plane = plane
        self.layers = layers  # the direct path's (direct_path._Layers): the rules it calls
        self.deadlines: DeadlineQueue | None = None  # the steps' time limits, from the first

    def _closed(self) -> bool:
        """Whether the lane is not taken at all (see the module's docstring)."""
        return self.layers.context.tracing.enabled or self.layers.auth.buckets is not None

    def take(self, protocol: Connection, cycle: Any, found: Found) -> Miss | bool:
        """True: the request is entered and will be answered by its step's callback. A Miss:
        go the whole way, then `remember`. False: go the whole way."""
        layers = self.layers
        if self._closed():
            return False
        if b'"sequence_id"' not in cycle.body:  # stateless: decoded once, the whole way
            return False
        scope = cycle.scope
        headers = first_headers(scope)
        if b"content-encoding" in headers:
            return False
        model = found[2]["model"]
        length = headers.get(b"inference-header-content-length")
        try:
            call = decode_request(bytes(cycle.body), None if length is None else
                                  length.decode("latin-1"), model, None)
            plain = _plain_step(call.request.parameters)
            sequence = sequence_parameters(call.request.parameters)
        except RnnServeError:
            return False
        if sequence is None or not plain or layers.auth.refusal(scope) is not None:
            return False  # (no rate limit here: the check takes nothing; the whole way asks again)
        owner = scope["state"]["owner"]
        session_id = sequence_session_id(model, sequence[0], owner)
        known = protocol.sequences
        if sequence[2]:  # an end: the whole way, and nothing to remember after it
            known.pop(session_id, None)
            return False
        remembered = known.get(session_id)
        if sequence[1] or remembered is None:  # a start, or a sequence new to the connection
            return Miss(session_id, owner)
        runner = self._served(remembered)
        if runner is None:
            del known[session_id]  # unloaded or reloaded: the whole way says what to do
            return Miss(session_id, owner)
        step_id = call.request.parameters.get("step_id")
        if not self._enter(protocol, cycle, found, call, remembered, runner, step_id, headers):
            return False  # (a bad step id too: check_step_id's refusal comes from the whole way)
        protocol.repeat = repeat_of(cycle, found, call, remembered, headers,
                                    cast("str | None", step_id))
        return True

    def take_repeat(self, protocol: Connection, repeat: Repeat, cycle: Any) -> bool:
        """A request that is the connection's repeat with new input values
        (http/repeat_steps.py): True when entered as `take` enters a step; False when a rule
        that depends on the server's state or on the values says otherwise (then `take` it)."""
        if self._closed():
            return False
        scope = cycle.scope
        remembered: Remembered = repeat.remembered
        if (self.layers.auth.refusal(scope) is not None
                or scope["state"]["owner"] != remembered.owner
                or protocol.sequences.get(remembered.session_id) is not remembered):
            return False
        runner = self._served(remembered)
        return runner is not None and self._enter(protocol, cycle, repeat.found,
                                                  repeat.call(cycle.raw), remembered, runner,
                                                  repeat.step_id, repeat.headers, repeat)

    def _served(self, remembered: Remembered) -> Runner | None:
        """The runner a remembered sequence lives on, while that very instance is served."""
        runner = self.engine.served_version(remembered.runner.name, remembered.runner.version)
        return runner if runner is remembered.runner else None

    def _enter(self, protocol: Connection, cycle: Any, found: Found, call: InferCall,
               remembered: Remembered, runner: Runner, step_id: object,
               headers: dict[bytes, bytes], repeat: Repeat | None = None) -> bool:
        """Check a later step with the data plane's checks and enter it (False: refused)."""
        try:
            x, with_states = self.plane.later_step_input(call.request, runner, step_id)
        except RnnServeError:
            return False
        stepper = remembered.steppers.get(with_states)
        if stepper is None:
            stepper = remembered.steppers[with_states] = self.engine.sessions.sequence_stepper(
                runner, remembered.session_id, remembered.owner, with_states=with_states)
        _Step(self, protocol, cycle, found, call, remembered, with_states, headers,
              repeat).enter(stepper, x, cast("str | None", step_id))
        return True

    def remember(self, protocol: Connection, miss: Miss, answer: Answer) -> None:
        """After the whole way answered a sequence request 200: the model version that
        answered it (its reply's model_name and model_version) holds the session."""
        status, headers, payload = answer
        if status != 200:
            return
        lines = dict(headers)
        if b"content-encoding" in lines:
            return
        split = lines.get(b"inference-header-content-length")
        try:
            head = orjson.loads(payload if split is None else payload[:int(split)])
            name, version = str(head["model_name"]), int(head["model_version"])
        except (ValueError, KeyError, TypeError):
            return
        runner = self.engine.served_version(name, version)
        if runner is None or self.engine.registry.has_superseded(name, version):
            return  # (an older instance may hold the session: each step looks it up)
        known = protocol.sequences
        if len(known) >= MAX_REMEMBERED:
            known.clear()
        known[miss.session_id] = Remembered(runner, miss.session_id, miss.owner)


def _plain_step(parameters: Mapping[str, object]) -> bool:
    """Whether a request's parameters are only those of a step the lane takes (a sequence
    id, the flags, binary_data_output, a step id; their values are sequence_parameters' and
    later_step_input's to check)."""
    return all(name in _PLAIN for name in parameters)


class _Step:
    """One request in the lane, from its step's entry to its answer."""

    __slots__ = ("lane", "protocol", "cycle", "found", "layers", "call", "remembered",
                 "with_states", "headers", "repeat", "rid", "started", "started_ns", "step",
                 "stepper", "answered")

    def __init__(self, lane: SequenceLane, protocol: Connection, cycle: Any, found: Found,
                 call: InferCall, remembered: Remembered, with_states: bool,
                 headers: dict[bytes, bytes], repeat: Repeat | None) -> None:
        self.lane, self.protocol, self.cycle, self.found = lane, protocol, cycle, found
        self.layers, self.call, self.remembered = lane.layers, call, remembered
        self.with_states, self.headers, self.repeat = with_states, headers, repeat
        self.answered = False
        self.step: Any = None  # the entered step (a PendingStep), until it is answered

    def enter(self, stepper: SessionStepper, x: Any, step_id: str | None) -> None:
        layers, scope = self.layers, self.cycle.scope
        layers.hot.mark(scope, self.found)
        self.rid = layers.context.request_id(scope)
        self.started, self.started_ns = time.perf_counter(), now_ns()
        self.stepper = stepper
        self.step = stepper.step(x, step_id, self._done, watched=True)
        deadlines = self.lane.deadlines
        if deadlines is None:
            deadlines = self.lane.deadlines = DeadlineQueue(self.protocol.loop,
                                                            layers.context.timeout_s)
        deadlines.add(self)

    def _done(self, outcomes: Sequence[StepOutcome]) -> None:
        if self.answered:  # withdrawn at the time limit and answered 504 already
            return
        self.answered = True
        self.step = None  # (it refers back to this object: no cycle to collect)
        outcome, runner = outcomes[0], self.remembered.runner
        if isinstance(outcome, StepResult):
            runner.stats.succeeded(self.started_ns)
            self._answer_result(runner, outcome)
        elif isinstance(outcome, SessionNotFound | SessionMoved):  # gone or migrated
            # meanwhile: nothing was written, and the whole way finds where it is now
            known = self.protocol.sequences
            if known.get(self.remembered.session_id) is self.remembered:
                del known[self.remembered.session_id]
            self.protocol.whole_way(self.cycle, self.found, Miss(self.remembered.session_id,
                                                                 self.remembered.owner))
        else:
            runner.stats.failed(self.started_ns)
            error = not_applied(outcome) if isinstance(outcome, Unavailable) else outcome
            self.protocol.loop.create_task(self._answer_error(error))

    def _answer_result(self, runner: Runner, outcome: StepResult) -> None:
        """The 200 the v2 route writes (http/v2.py's infer_response)."""
        call = self.call
        answer = answer_of(call.request, runner, step_outputs(runner, outcome, self.with_states))
        if self.repeat is not None:  # (its header lines and JSON header made once)
            self._write(200, *self.repeat.response(call, answer))
            return
        response = infer_response(call, answer, self.headers)
        self._write(200, response.raw_headers, cast(bytes, response.body))  # (ReadyResponse's)

    async def _answer_error(self, exc: Exception) -> None:
        """A step that failed in its batch (the store unreachable, a may-be-applied write):
        answered by the application's handler for its error, as the route's would be."""
        scope = self.cycle.scope

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        response = await self.layers.hot.error_response(scope, receive, exc)
        status, lines, payload = await written(response, scope, receive)
        self._write(status, lines, payload)

    def at_limit(self) -> None:
        """The time limit: a step short of its commit point is withdrawn and answered 504 (not
        applied); a committed one is awaited to its real outcome, however late."""
        if self.answered or self.step is None or not self.stepper.withdraw(self.step):
            return
        self.answered = True
        self.step = None
        self.remembered.runner.stats.failed(self.started_ns)
        lines, payload = error_message(self.layers.context.timed_out_message(), [])
        self._write(504, lines, payload)

    def _write(self, status: int, lines: list[tuple[bytes, bytes]], payload: bytes) -> None:
        """The lane's answer (counted as the lane's only here: a step that goes the whole way
        after all is counted there)."""
        layers, scope = self.layers, self.cycle.scope
        layers.counted.inc()
        layers.lane_counted.inc()
        lines.append((b"x-request-id", self.rid.encode()))
        self.protocol.write_answer(self.cycle, status, lines, payload)
        instruments = None
        if status == 200:
            instruments = self.remembered.instruments
            if instruments is None:
                instruments = self.remembered.instruments = layers.context.instruments(scope, 200)
        layers.context.finished(scope, self.rid, status, time.perf_counter() - self.started,
                                instruments)

